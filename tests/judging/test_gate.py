"""The gate's verdicts, as a table of candidate/champion metrics (TFX Evaluator semantics)."""

import pytest

from emoflow.components.judging.gate import NO_CHAMPION, Check, flatten_metrics, judge
from emoflow.components.settings import Bounds


def metrics(accuracy=0.92, fear_recall=0.5, happy_recall=0.9, cross=0.4):
    return {
        "fer2013": {
            "accuracy": accuracy,
            "per_class": {"fear": {"recall": fear_recall}, "happy": {"recall": happy_recall}},
        },
        "ckplus": {"accuracy": cross},
    }


def test_flatten_uses_dotted_keys():
    assert flatten_metrics(metrics()) == {
        "fer2013.accuracy": 0.92,
        "fer2013.per_class.fear.recall": 0.5,
        "fer2013.per_class.happy.recall": 0.9,
        "ckplus.accuracy": 0.4,
    }


VALUE = {"fer2013.accuracy": 0.9}
CHANGE = {"fer2013.accuracy": 0.02}


@pytest.mark.parametrize(
    ("candidate", "champion", "value", "change", "passed", "value_passed", "failing"),
    [
        (metrics(), None, VALUE, CHANGE, True, True, []),  # first model: change skipped
        (metrics(0.93), metrics(0.94), VALUE, CHANGE, True, True, []),  # drop within delta
        (metrics(0.93), metrics(0.95), VALUE, CHANGE, True, True, []),  # drop exactly delta
        (
            metrics(0.91),
            metrics(0.95),
            VALUE,
            CHANGE,
            False,
            True,
            ["fer2013.accuracy"],
        ),  # beyond delta
        (metrics(0.97), metrics(0.95), VALUE, CHANGE, True, True, []),  # better
        (
            metrics(0.85),
            metrics(0.80),
            VALUE,
            CHANGE,
            False,
            False,
            ["fer2013.accuracy"],
        ),  # below the floor
        (
            metrics(),
            None,
            {"fer2013.per_class.*.recall": 0.6},
            {},
            False,
            False,
            ["fer2013.per_class.fear.recall"],
        ),
        (
            metrics(),
            None,
            {"ckplus.accuracy": 0.3, "fer2013.macro_f1": 0.1},
            {},
            False,
            False,
            ["fer2013.macro_f1"],
        ),
        (
            metrics(),
            metrics(),
            {},
            {"fer2013.macro_f1": 0.1},
            False,
            True,
            ["fer2013.macro_f1"],
        ),  # missing in both
        (metrics(), metrics(), {}, {}, False, False, []),  # nothing configured: no blessing
    ],
    ids=[
        "first-run",
        "drop-within-delta",
        "drop-at-delta",
        "drop-beyond-delta",
        "better",
        "below-value-bound",
        "one-class-below-floor",
        "missing-metric",
        "missing-change-metric",
        "no-thresholds",
    ],
)
def test_gate_semantics(candidate, champion, value, change, passed, value_passed, failing):
    verdict = judge(candidate, champion, value, change)
    assert verdict.passed is passed
    assert verdict.value_passed is value_passed
    assert [c.metric for c in verdict.checks if not c.passed] == failing


def test_first_model_says_change_thresholds_were_skipped():
    verdict = judge(metrics(), None, VALUE, CHANGE)
    assert verdict.note == NO_CHAMPION
    assert [c.kind for c in verdict.checks] == ["value"]


def test_every_check_records_value_bound_and_reason():
    verdict = judge(metrics(0.91), metrics(0.95), VALUE, CHANGE)
    value, change = verdict.checks
    assert value == Check("value", "fer2013.accuracy", 0.91, 0.9, True, "0.9100 >= 0.9")
    assert verdict.as_dict()["checks"][0] == {
        "kind": "value",
        "metric": "fer2013.accuracy",
        "value": 0.91,
        "bound": 0.9,
        "passed": True,
        "reason": "0.9100 >= 0.9",
        "side": "lower",
    }, "the blessing report holds each check as JSON"
    assert (
        change.kind == "change" and change.bound == pytest.approx(0.93) and change.passed is False
    )
    assert change.reason == "0.9100 < champion 0.9500 - 0.0200"


def test_wildcard_checks_every_class():
    verdict = judge(metrics(), None, {"fer2013.per_class.*.recall": 0.4}, {})
    assert sorted(c.metric for c in verdict.checks) == [
        "fer2013.per_class.fear.recall",
        "fer2013.per_class.happy.recall",
    ]


def test_missing_metric_says_so():
    verdict = judge(metrics(), None, {"fer2013.macro_f1": 0.1}, {})
    assert verdict.checks[0].value is None and verdict.checks[0].reason == "missing metric"


def test_thresholds_apply_to_the_datasets_a_model_was_scored_on():
    sequences = {"ckplus_sequences": {"accuracy": 0.7}}
    thresholds = {"fer2013.accuracy": 0.9, "ckplus_sequences.accuracy": 0.6}
    image_verdict = judge(metrics(), None, thresholds, {"ckplus_sequences.accuracy": 0.0})
    assert image_verdict.passed is True
    assert [c.metric for c in image_verdict.checks] == ["fer2013.accuracy"]
    assert image_verdict.not_applicable == ["ckplus_sequences.accuracy"]
    sequence_verdict = judge(sequences, metrics(), thresholds, CHANGE)
    assert sequence_verdict.passed is True
    assert [c.metric for c in sequence_verdict.checks] == ["ckplus_sequences.accuracy"]
    assert sequence_verdict.not_applicable == ["fer2013.accuracy"]


def test_a_model_no_threshold_applies_to_is_not_blessed():
    verdict = judge({"ckplus_sequences": {"accuracy": 0.99}}, None, VALUE, CHANGE)
    assert verdict.value_passed is False and verdict.checks == []
    assert verdict.note == "no thresholds on ckplus_sequences: no blessing"


def test_a_wildcard_dataset_applies_to_every_scored_dataset():
    verdict = judge(metrics(cross=0.2), None, {"*.accuracy": 0.3}, {})
    assert [(c.metric, c.passed) for c in verdict.checks] == [
        ("ckplus.accuracy", False),
        ("fer2013.accuracy", True),
    ]


def calibrated(ece: float | None) -> dict:
    scores = {"accuracy": 0.7} if ece is None else {"accuracy": 0.7, "ece": ece}
    return {"fer2013": scores}


@pytest.mark.parametrize(
    ("ece", "passed", "reason"),
    [
        (0.05, True, "0.0500 <= 0.1 (upper bound)"),
        (0.1, True, "0.1000 <= 0.1 (upper bound)"),
        (0.15, False, "0.1500 > 0.1 (upper bound)"),
        (None, False, "missing metric"),
    ],
)
def test_an_upper_bound_refuses_a_metric_above_it(ece, passed, reason):
    verdict = judge(calibrated(ece), None, {"fer2013.ece": Bounds(upper_bound=0.1)}, {})
    [check] = verdict.checks
    assert (check.passed, check.side, check.bound, check.reason) == (passed, "upper", 0.1, reason)
    assert verdict.value_passed is passed


def test_lower_and_upper_bounds_on_one_metric_are_two_checks():
    window = Bounds(lower_bound=0.02, upper_bound=0.1)
    verdict = judge(calibrated(0.01), None, {"fer2013.ece": window}, {})
    assert [(c.side, c.passed) for c in verdict.checks] == [("lower", False), ("upper", True)]
    assert not verdict.passed


def test_bounds_need_one_side_and_an_order():
    with pytest.raises(ValueError, match="lower_bound, upper_bound or both"):
        Bounds()
    with pytest.raises(ValueError, match="lower_bound 0.5 > upper_bound 0.1"):
        Bounds(lower_bound=0.5, upper_bound=0.1)
