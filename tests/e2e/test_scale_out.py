"""The training grid on a Dask cluster (prefect-dask) gives the models of a local run.

Both runs are `emoflow pipeline` in fresh processes, as a user starts them: TensorFlow
state left behind by other tests in the pytest process cannot take part.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY_OVERRIDES, write_params

pytestmark = pytest.mark.slow
GRID = {"emotion_sets": {"riot": ["fear", "angry", "calm"]}}
CELLS = ("convnn-fer7", "convnn-riot")


def pipeline_in(folder: Path, flow_settings: dict) -> None:
    folder.mkdir()
    overrides = {
        **TINY_OVERRIDES,
        "train": {**TINY_OVERRIDES["train"], **GRID},
        "flow": {"cache": False, **flow_settings},
    }
    write_params(folder, overrides)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run(
        ["emoflow", "pipeline"], cwd=folder, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]


def test_grid_on_a_local_dask_cluster_matches_the_local_run(tmp_path):
    pipeline_in(tmp_path / "local", {"task_runner": "thread"})
    pipeline_in(tmp_path / "dask", {"task_runner": "dask", "dask_workers": 2})
    for cell in CELLS:
        on_dask = json.loads(
            (tmp_path / "dask" / f"reports/evaluation/{cell}/metrics.json").read_text()
        )
        here = json.loads(
            (tmp_path / "local" / f"reports/evaluation/{cell}/metrics.json").read_text()
        )
        assert on_dask == here, f"{cell}: the same seeded model, wherever it trains"
        blessing = json.loads((tmp_path / "dask" / f"reports/promotion/{cell}.json").read_text())
        assert blessing["passed"] is True
