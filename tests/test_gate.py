"""The gate's verdicts (the registry side is covered by the pipeline tests)."""

import pytest

from components.evaluate import flatten_metrics
from components.promote import judge

METRICS = {"fer2013": {"accuracy": 0.92, "per_class": {"fear": {"recall": 0.5}}}, "ckplus": {"accuracy": 0.4}}


def test_flatten_uses_dotted_keys():
    assert flatten_metrics(METRICS) == {
        "fer2013.accuracy": 0.92,
        "fer2013.per_class.fear.recall": 0.5,
        "ckplus.accuracy": 0.4,
    }


@pytest.mark.parametrize(
    ("thresholds", "passed", "failing"),
    [
        ({"fer2013.accuracy": 0.9}, True, []),
        ({"fer2013.accuracy": 0.92}, True, []),
        ({"fer2013.accuracy": 0.9, "ckplus.accuracy": 0.5}, False, ["ckplus.accuracy"]),
        ({"fer2013.per_class.fear.recall": 0.6}, False, ["fer2013.per_class.fear.recall"]),
        ({"fer2013.macro_f1": 0.1}, False, ["fer2013.macro_f1"]),
        ({}, False, []),
    ],
    ids=["pass", "at-bound", "cross-dataset-below", "class-recall-below", "missing-metric", "no-thresholds"],
)
def test_judge(thresholds, passed, failing):
    verdict, checks = judge(METRICS, thresholds)
    assert verdict is passed
    assert [c["metric"] for c in checks if not c["passed"]] == failing
    assert {c["metric"] for c in checks} == set(thresholds)


def test_missing_metric_says_so():
    _, checks = judge(METRICS, {"fer2013.macro_f1": 0.1})
    assert checks[0]["value"] is None and checks[0]["reason"] == "missing metric"
