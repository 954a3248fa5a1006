"""The real-data profile on ../shared/data, on a short schedule: the gate calibrated for real
data refuses a weak model and names the thresholds it failed.

The command is the README's (``emoflow pipeline --profile real-data``), with one more profile
laid over it that swaps the 2-hour CPU recipe for one epoch of EmoPy's ConvolutionalNN: a
model far below ``fer``'s level, which the real-data thresholds exist to stop.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tests.e2e.test_pipeline import client_for, copy_project, run

pytestmark = [pytest.mark.slow, pytest.mark.realdata]
SHORT = {"train": {"architectures": ["convnn"], "epochs": 1}, "evaluate": {"tta": "none"}}


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> Path:
    from tests.conftest import SHARED_DATA

    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not available at {SHARED_DATA}")
    project = copy_project(tmp_path_factory.mktemp("real-data"))  # its params replaced below
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["profiles"]["short"] = SHORT
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    command = ["emoflow", "pipeline", "--profile", "real-data", "--profile", "short"]
    run([*command, "--data", str(SHARED_DATA)], project)
    return project


def test_a_weak_model_on_real_data_is_refused_with_the_failed_thresholds_named(real_run):
    blessing = json.loads((real_run / "reports/promotion/convnn-fer7.json").read_text())
    assert not blessing["passed"] and blessing["version"] is None
    failed = {c["metric"] for c in blessing["checks"] if not c["passed"]}
    assert "fer2013.accuracy" in failed, blessing["checks"]
    assert "fer2013.per_class.disgust.recall" in failed, "one epoch never learns disgust"
    sides = {c["metric"]: c["side"] for c in blessing["checks"]}
    assert sides["fer2013.ece"] == "upper" and sides["fer2013.accuracy"] == "lower"
    assert client_for(real_run).search_registered_models() == [], "nothing registered"


def test_the_refused_candidates_card_says_it_learnt_from_real_faces(real_run):
    card = (real_run / "reports/promotion/convnn-fer7.model_card.md").read_text()
    assert card.startswith("# Model card: emoflow-fer7 candidate (not registered)")
    assert "Dataset: fer2013, real faces" in card and "synthetic" not in card
    assert "Images per split: test 3589, train 25837, val 2872" in card
    assert "Blessing: **failed**" in card and "FAIL: `fer2013.accuracy`" in card
