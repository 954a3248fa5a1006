"""Shared fixtures. State is isolated before anything imports MLflow or Prefect."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_STATE = Path(tempfile.mkdtemp(prefix="emoflow-tests-"))
os.environ["PREFECT_HOME"] = str(_STATE / "prefect")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# On a loaded machine Prefect's temporary API server can take a minute to answer (20 s default).
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
# prefect_test_harness has a timeout of its own (30 s by default): the same for it.
PREFECT_STARTUP_TIMEOUT = int(os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"])
os.environ.pop("MLFLOW_TRACKING_URI", None)

import pytest  # noqa: E402
import yaml  # noqa: E402

from tests.leftovers import pytest_configure, pytest_sessionfinish  # noqa: E402, F401 (hooks)

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("EMOFLOW_SHARED_DATA", ROOT.parent / "shared" / "data"))

# Small enough for a 2-core CI machine, big enough that every split of every class exists.
TINY_OVERRIDES = {
    "sample": {"images_per_class": 12, "ckplus_subjects": 3, "ckplus_frames": 4},
    "train": {"epochs": 2, "batch_size": 32},
    "promote": {"value_thresholds": {"fer2013.accuracy": 0.0}},
}


def deep_merge(base: dict, overrides: dict) -> dict:
    merged = dict(base)
    for key, value in overrides.items():
        merged[key] = deep_merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return merged


def write_params(folder: Path, overrides: dict, name: str = "params.yaml") -> Path:
    """The project's params.yaml with ``overrides`` merged in, written to ``folder / name``
    (relative paths in it hold from ``folder``)."""
    params = deep_merge(yaml.safe_load((ROOT / "params.yaml").read_text()), overrides)
    path = folder / name
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.fixture
def mlflow_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh sqlite tracking store and registry for one test."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


# MLflow's scoring app marks the whole process as its serving environment when it is built
# (os.environ, never taken back), and a served model then refuses file paths. Tests build that
# app in-process; the mark must not outlive one, nor reach the processes later tests start.
SERVING_MARKER = "_MLFLOW_IS_IN_SERVING_ENVIRONMENT"


@pytest.fixture(autouse=True)
def not_serving(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SERVING_MARKER, raising=False)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not available at {SHARED_DATA}")
    return SHARED_DATA


# Test files named ``test_*_cluster.py`` start clusters of TensorFlow processes (Dask workers,
# multi-worker training). Under pytest-xdist they form one unit of work, so that no two
# clusters share the cores (their workers would starve and be taken for lost), and they go
# first, beside the other test worker's files, as the longest unit.
CLUSTER_SCOPE = "clusters"


def is_cluster_file(path: str) -> bool:
    return Path(path).stem.endswith("_cluster")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: not is_cluster_file(item.nodeid.split("::")[0]))


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class ClustersTogether(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = super()._split_scope(nodeid)
            return CLUSTER_SCOPE if is_cluster_file(scope) else scope

    config.option.loadscopereorder = False  # keep the cluster unit first
    return ClustersTogether(config, log)
