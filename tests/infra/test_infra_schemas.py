"""The infra files against their tools' published schemas, offline.

- ``infra/docker-compose.yml`` against the Compose Specification's JSON schema (the copy that
  check-jsonschema ships as ``vendor.compose-spec``, Apache-2.0), which ``docker compose``
  enforces before it starts anything;
- the Kubernetes Job of ``infra/k8s-work-pool.json``, rendered as the Prefect Kubernetes
  worker renders it for a flow run, against the Kubernetes API schemas bundled with
  kubernetes-validate, strictly: a field in the wrong place is an error, not dropped silently.
"""

from __future__ import annotations

import json
import shlex

import jsonschema
import kubernetes_validate
import pytest
import yaml
from check_jsonschema.builtin_schemas import get_builtin_schema

from tests.conftest import ROOT

INFRA = ROOT / "infra"
# Filled in by the worker for each flow run (prefect-kubernetes' KubernetesWorker).
FLOW_RUN_VALUES = {
    "name": "emoflow-nightly",
    "command": "prefect flow-run execute",
    "labels": {"prefect.io/flow-run-id": "0b7d2a4c"},
}


def schema_errors(document: dict, schema: dict) -> list[str]:
    """Every place ``document`` breaks ``schema``, as ``path: message``."""
    validator_class = jsonschema.validators.validator_for(schema)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def rendered_job(pool: dict, job_variables: dict) -> dict:
    """The Job a flow run of this pool becomes: placeholders filled with the variables' defaults,
    the deployment's job variables and the flow run's values (as Prefect does), then the env
    mapping made a list of name/value pairs and the command split into args (as the worker does).
    """
    from prefect.utilities.templating import apply_values

    variables = pool["variables"]["properties"]
    values = {name: spec["default"] for name, spec in variables.items() if "default" in spec}
    values.update(job_variables, **FLOW_RUN_VALUES)
    job = apply_values(pool["job_configuration"], values)["job_manifest"]
    for container in job["spec"]["template"]["spec"]["containers"]:
        container["env"] = [{"name": k, "value": v} for k, v in container["env"].items()]
        container["args"] = shlex.split(container["args"])
    return job


def test_the_compose_file_follows_the_compose_specification():
    schema = get_builtin_schema("vendor.compose-spec")
    compose = yaml.safe_load((INFRA / "docker-compose.yml").read_text())
    assert schema_errors(compose, schema) == []


def test_the_compose_schema_check_finds_a_misplaced_key():
    """The check itself: a port list given as a mapping and an unknown service key fail."""
    schema = get_builtin_schema("vendor.compose-spec")
    compose = yaml.safe_load((INFRA / "docker-compose.yml").read_text())
    compose["services"]["mlflow"]["ports"] = {"5000": 5000}
    compose["services"]["minio"]["restart_policy"] = "always"
    errors = schema_errors(compose, schema)
    assert any(e.startswith("services/mlflow/ports:") for e in errors), errors
    assert any(e.startswith("services/minio:") and "restart_policy" in e for e in errors), errors


@pytest.fixture(scope="module")
def k8s_job() -> dict:
    pool = json.loads((INFRA / "k8s-work-pool.json").read_text())
    prefect_yaml = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    [deployment] = [d for d in prefect_yaml["deployments"] if d["name"] == "nightly-k8s"]
    return rendered_job(pool, deployment["work_pool"]["job_variables"])


def test_the_k8s_job_of_a_flow_run_follows_the_kubernetes_schema(k8s_job):
    version = kubernetes_validate.latest_version()
    failure = None
    try:
        kubernetes_validate.validate(k8s_job, version, strict=True)
    except kubernetes_validate.ValidationError as err:
        failure = f"Kubernetes {version}: {'/'.join(map(str, err.absolute_path))}: {err.message}"
    assert failure is None, failure
    assert (k8s_job["spec"]["parallelism"], k8s_job["spec"]["completions"]) == (1, 1)


def test_the_k8s_schema_check_finds_a_misplaced_field(k8s_job):
    """The check itself: parallelism belongs to the Job's spec, not to its pods'."""
    pod = {**k8s_job["spec"]["template"]["spec"], "parallelism": 1}
    broken = {**k8s_job, "spec": {**k8s_job["spec"], "template": {"spec": pod}}}
    with pytest.raises(kubernetes_validate.ValidationError, match="'parallelism' was unexpected"):
        kubernetes_validate.validate(broken, kubernetes_validate.latest_version(), strict=True)
