"""The deployment and server configs parse and agree with the code and with each other.

Nothing here starts a server or a container (tests/e2e/test_servers.py starts the local servers;
docker is not run at all): each test reads a config the way its tool would and checks a
name, port or path it shares with another file.
"""

from __future__ import annotations

import configparser
import inspect
import json
import os
import re
import subprocess
from importlib.metadata import version
from urllib.parse import urlparse

import pytest
import yaml

from tests.conftest import ROOT

INFRA = ROOT / "infra"
SCRIPTS = sorted(INFRA.glob("*.sh"))


def local_defaults() -> dict[str, str]:
    """The `: "${NAME:=value}"` defaults of infra/local.env."""
    text = (INFRA / "local.env").read_text()
    return dict(re.findall(r'^: "\$\{(\w+):=([^}"]*)\}"', text, flags=re.MULTILINE))


@pytest.fixture(scope="module")
def prefect_yaml() -> dict:
    return yaml.safe_load((ROOT / "prefect.yaml").read_text())


@pytest.fixture(scope="module")
def deployments(prefect_yaml) -> dict[str, dict]:
    return {d["name"]: d for d in prefect_yaml["deployments"]}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((INFRA / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def k8s_pool() -> dict:
    return json.loads((INFRA / "k8s-work-pool.json").read_text())


def test_prefect_yaml_is_what_prefect_deploy_reads(prefect_yaml):
    from prefect.cli.deploy._models import PrefectYamlModel

    model = PrefectYamlModel.model_validate(prefect_yaml)
    assert {d.name for d in model.deployments} == {"nightly", "nightly-k8s"}
    assert prefect_yaml["prefect-version"] == version("prefect")


def test_every_deployment_runs_the_training_flow_with_its_parameters(deployments):
    from prefect.flows import load_flow_from_entrypoint

    for name, deployment in deployments.items():
        path, function = deployment["entrypoint"].split(":")
        assert (ROOT / path).is_file(), name
        flow = load_flow_from_entrypoint(str(ROOT / deployment["entrypoint"]))
        assert flow.name == "emoflow-training"
        assert set(deployment["parameters"]) <= set(inspect.signature(flow.fn).parameters), name
        assert (ROOT / deployment["parameters"]["params_path"]).is_file()


def test_the_schedules_are_valid_crons(deployments):
    from prefect.client.schemas.schedules import CronSchedule

    for deployment in deployments.values():
        [schedule] = deployment["schedules"]
        assert (
            CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"]).cron == "0 3 * * *"
        )


def test_the_local_deployment_uses_the_pool_the_scripts_and_compose_worker_use(
    deployments, compose
):
    pool = deployments["nightly"]["work_pool"]["name"]
    assert local_defaults()["EMOFLOW_WORK_POOL"] == pool
    assert compose["services"]["prefect-worker"]["environment"]["EMOFLOW_WORK_POOL"] == pool
    assert "--type process" in (INFRA / "prefect-deploy.sh").read_text()


def test_the_k8s_pool_template_is_valid_and_matches_its_deployment(deployments, k8s_pool):
    from prefect.server.schemas.actions import validate_base_job_template

    validate_base_job_template(k8s_pool)  # every {{ placeholder }} is a declared variable
    deployment = deployments["nightly-k8s"]
    variables = k8s_pool["variables"]["properties"]
    assert set(deployment["work_pool"]["job_variables"]) <= set(variables)
    assert "emoflow-k8s --type kubernetes" in (INFRA / "prefect-deploy.sh").read_text()
    assert deployment["work_pool"]["name"] == "emoflow-k8s"
    [pull] = deployment["pull"]
    workdir = re.search(r"^WORKDIR (\S+)", (INFRA / "Dockerfile").read_text(), re.MULTILINE).group(
        1
    )
    assert pull["prefect.deployments.steps.set_working_directory"]["directory"] == workdir
    container = k8s_pool["job_configuration"]["job_manifest"]["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert {m["mountPath"] for m in container["volumeMounts"]} == {
        f"{workdir}/{d}" for d in ("data", "models", "reports")
    }
    env = variables["env"]["default"]
    assert urlparse(env["MLFLOW_TRACKING_URI"]).port == int(local_defaults()["MLFLOW_PORT"])
    assert env["PREFECT_RESULTS_LOCAL_STORAGE_PATH"].startswith(f"{workdir}/data/")


def _published(service: dict) -> set[int]:
    """The host ports of ``[ADDRESS:]HOST:CONTAINER`` entries."""
    return {int(str(p).rsplit(":", 2)[-2]) for p in service.get("ports", [])}


def test_compose_mlflow_uses_postgres_and_serves_s3_artifacts(compose):
    services = compose["services"]
    mlflow = services["mlflow"]
    command = " ".join(mlflow["command"].split())
    backend = re.search(r"--backend-store-uri (\S+)", command).group(1)
    assert backend.startswith("postgresql://") and backend.endswith(
        "@postgres:5432/" + services["postgres"]["environment"]["POSTGRES_DB"]
    )
    assert "--serve-artifacts" in command
    bucket = urlparse(re.search(r"--artifacts-destination (\S+)", command).group(1))
    assert bucket.scheme == "s3" and bucket.netloc in services["buckets"]["entrypoint"]
    endpoint = urlparse(mlflow["environment"]["MLFLOW_S3_ENDPOINT_URL"])
    assert endpoint.hostname == "minio" and endpoint.port in _published(services["minio"])
    port = int(re.search(r"--port (\d+)", command).group(1))
    assert _published(mlflow) == {port} == {int(local_defaults()["MLFLOW_PORT"])}, (
        "the README's URL holds for both setups"
    )
    pinned = re.search(
        r'"mlflow\[auth\]==([^"]+)"', (INFRA / "mlflow.Dockerfile").read_text()
    ).group(1)
    assert pinned == version("mlflow"), "server and clients run the same MLflow"


def test_compose_prefect_server_and_worker_agree(compose):
    services = compose["services"]
    server = services["prefect-server"]
    port = int(re.search(r"--port (\d+)", server["command"]).group(1))
    assert _published(server) == {port} == {int(local_defaults()["PREFECT_SERVER_API_PORT"])}
    assert server["image"].startswith(f"prefecthq/prefect:{version('prefect')}-python3.11")
    database = urlparse(server["environment"]["PREFECT_SERVER_DATABASE_CONNECTION_URL"])
    assert database.hostname == "postgres" and database.path == "/prefect"
    assert "CREATE DATABASE prefect" in (INFRA / "postgres-init.sql").read_text()
    worker = services["prefect-worker"]["environment"]
    assert worker["PREFECT_API_URL"] == f"http://prefect-server:{port}/api"
    mlflow_port = int(re.search(r"--port (\d+)", services["mlflow"]["command"]).group(1))
    assert worker["MLFLOW_TRACKING_URI"] == f"http://mlflow:{mlflow_port}"
    assert (ROOT / services["prefect-worker"]["command"]).is_file()
    assert (
        INFRA / services["prefect-worker"]["build"]["dockerfile"].removeprefix("infra/")
    ).is_file()


def test_compose_publishes_on_loopback_only_and_keeps_postgres_inside(compose):
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("${EMOFLOW_BIND_ADDRESS:-127.0.0.1}:"), (name, port)
    assert "ports" not in compose["services"]["postgres"]
    example = env_example()
    assert example["EMOFLOW_BIND_ADDRESS"] == "127.0.0.1"


def env_example() -> dict[str, str]:
    lines = (INFRA / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_compose_secrets_have_no_defaults_and_come_from_an_uncommitted_env_file():
    text = (INFRA / "docker-compose.yml").read_text()
    variables = set(re.findall(r"\$\{(\w+)", text))
    secrets = {v for v in variables if re.search(r"PASSWORD|SECRET|AUTH|USER", v)}
    assert secrets >= {"POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "MLFLOW_ADMIN_PASSWORD"}
    for secret in secrets:
        assert not re.search(rf"\$\{{{secret}:-", text), f"{secret} has a default"
        assert re.search(rf"\$\{{{secret}:\?", text), (
            f"compose must refuse to start without {secret}"
        )
    example = env_example()
    assert variables <= set(example), "every variable is explained in infra/.env.example"
    assert not [v for v in secrets if re.search(r"PASSWORD|SECRET|AUTH_STRING", v) and example[v]]
    ignored = subprocess.run(["git", "check-ignore", "-q", "infra/.env"], cwd=ROOT)
    assert ignored.returncode == 0, "infra/.env must never be committed"


def test_mlflow_and_prefect_servers_require_logins_and_the_worker_has_them(compose):
    services = compose["services"]
    assert "--app-name basic-auth" in " ".join(services["mlflow"]["command"].split())
    auth = configparser.ConfigParser()
    auth.read(INFRA / "mlflow-auth.ini")
    assert "admin_password" not in auth["mlflow"], "the admin password comes from infra/.env"
    assert auth["mlflow"]["admin_username"] == env_example()["MLFLOW_ADMIN_USER"]
    mounted = [v.split(":")[1] for v in services["mlflow"]["volumes"] if "mlflow-auth.ini" in v]
    assert mounted == [services["mlflow"]["environment"]["MLFLOW_AUTH_CONFIG_PATH"]]
    assert "PREFECT_SERVER_API_AUTH_STRING" in services["prefect-server"]["environment"]
    worker = services["prefect-worker"]["environment"]
    assert {
        "PREFECT_API_AUTH_STRING",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
    } <= set(worker)


def test_the_dvc_s3_remote_example_points_at_the_compose_bucket(compose):
    text = (INFRA / "dvc-remote-s3.config").read_text()
    assert not [line for line in text.splitlines() if line.strip() and not line.startswith("#")], (
        "not active"
    )
    example = text[text.index("# [core]") :]
    config = configparser.ConfigParser()
    config.read_string(
        "\n".join(line.removeprefix("#").removeprefix(" ") for line in example.splitlines())
    )
    remote = config[f"'remote \"{config['core']['remote']}\"'"]
    url, endpoint = urlparse(remote["url"]), urlparse(remote["endpointurl"])
    assert url.scheme == "s3" and url.netloc in compose["services"]["buckets"]["entrypoint"]
    assert endpoint.port in _published(compose["services"]["minio"])
    assert remote["url"] in text.split("# which leaves")[0], "the commands and the result agree"


def test_tf_config_example_is_read_by_tensorflow(monkeypatch):
    import tensorflow as tf

    text = (INFRA / "tf_config.example.json").read_text()
    monkeypatch.setenv("TF_CONFIG", text)
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    assert resolver.task_type == "worker" and resolver.task_id == 0
    assert len(resolver.cluster_spec().as_dict()["worker"]) == 2


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shell_scripts_parse(script):
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    sourced = script.name == "daemon.sh"
    assert bool(script.stat().st_mode & 0o111) is not sourced, "scripts run, libraries are sourced"


def test_make_run_is_a_prefect_flow_run_that_dvc_then_knows():
    """`make run` goes through Prefect (so `make ui` shows the flow run) and leaves dvc.lock
    describing what the flow wrote (so `dvc repro` retrains nothing)."""
    result = subprocess.run(["make", "-n", "run"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    commands = [line.split()[:2] for line in result.stdout.splitlines()]
    ran = [c for c in commands if c and c[0] in ("emoflow", "dvc")]
    assert ran == [["emoflow", "pipeline"], ["dvc", "commit"], ["emoflow", "registry"]]


def test_make_ui_starts_and_stops_both_servers():
    result = subprocess.run(
        ["make", "-n", "ui", "ui-stop"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    commands = [line for line in result.stdout.splitlines() if line.startswith("infra/")]
    assert commands == [
        "infra/mlflow-server.sh start",
        "infra/prefect-server.sh start",
        "infra/prefect-server.sh stop",
        "infra/mlflow-server.sh stop",
    ]


def test_the_local_mlflow_server_serves_the_projects_own_store():
    """`make ui` shows what `make run` logged: the project's mlflow.db and its mlruns/."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "EMOFLOW_"))}
    shown = subprocess.run(
        ["bash", "-c", f'source "{INFRA}/local.env"; echo "$MLFLOW_BACKEND_STORE_URI"'],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert shown == f"sqlite:///{ROOT}/mlflow.db"
    text = (INFRA / "mlflow-server.sh").read_text()
    assert '--default-artifact-root "$EMOFLOW_PROJECT/mlruns"' in text
    assert (
        local_defaults()["MLFLOW_HOST"]
        == local_defaults()["PREFECT_SERVER_API_HOST"]
        == "127.0.0.1"
    )
