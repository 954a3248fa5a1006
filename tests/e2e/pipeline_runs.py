"""`emoflow pipeline` in a fresh folder and process, as a user starts it: the scale-out tests
compare its runs on threads and on Dask clusters. TensorFlow state left behind by other tests
in the pytest process cannot take part.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import TINY_OVERRIDES, write_params

GRID = {"emotion_sets": {"riot": ["fear", "angry", "calm"]}}
CELLS = ("convnn-fer7", "convnn-riot")
EMOFLOW = str(Path(sys.executable).parent / "emoflow")
RUN_TIMEOUT = 600  # seconds for one pipeline run


def prepared(folder: Path, flow_settings: dict, grid: dict = GRID) -> dict[str, str]:
    """Write the tiny ``grid``'s params.yaml (with these flow settings) into ``folder``; return
    the environment its processes run in: this venv first, the sqlite store of params.yaml."""
    folder.mkdir(exist_ok=True)
    overrides = {
        **TINY_OVERRIDES,
        "train": {**TINY_OVERRIDES["train"], **grid},
        "flow": {"cache": False, **flow_settings},
    }
    write_params(folder, overrides)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def pipeline_in(folder: Path, flow_settings: dict) -> subprocess.CompletedProcess:
    """Run the pipeline in ``folder``; it must succeed."""
    env = prepared(folder, flow_settings)
    done = subprocess.run(
        [EMOFLOW, "pipeline"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done


def scores(folder: Path, cell: str) -> dict:
    """Every score of ``cell``'s evaluation (its metrics.json holds the headline only)."""
    return json.loads((folder / f"reports/evaluation/{cell}/scores.json").read_text())


def blessing(folder: Path, cell: str) -> dict:
    return json.loads((folder / f"reports/promotion/{cell}.json").read_text())
