"""The gate's verdict, with TFX Evaluator semantics, as a pure function of metrics.

Value thresholds bound a metric from below. Change thresholds bound how far a candidate
may fall below the current champion, both scored on the same data in the same run; the
first model of a name has no champion, so its change thresholds are skipped and the
blessing says so. No thresholds at all means no blessing: an unguarded gate would
promote anything.
"""

from __future__ import annotations

import fnmatch

NO_CHAMPION = "first model of this name: no champion to compare with, change thresholds skipped"


def flatten_metrics(metrics: dict, prefix: str = "") -> dict[str, float]:
    """``{"fer2013": {"accuracy": x}}`` -> ``{"fer2013.accuracy": x}`` (the gate's keys too)."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_metrics(value, f"{name}."))
        else:
            flat[name] = float(value)
    return flat


def _matching(pattern: str, flat: dict[str, float]) -> list[str]:
    """Metric keys a threshold applies to; ``*`` stands for one dotted part."""
    if "*" not in pattern:
        return [pattern]
    parts = pattern.split(".")
    return sorted(
        key for key in flat if len(key.split(".")) == len(parts) and fnmatch.fnmatchcase(key, pattern)
    ) or [pattern]


def _check(metric: str, value: float | None, bound: float, kind: str, reference: float | None = None) -> dict:
    passed = value is not None and value >= bound
    if value is None:
        reason = "missing metric"
    elif kind == "change":
        reason = f"{value:.4f} {'>=' if passed else '<'} champion {reference:.4f} - {reference - bound:.4f}"
    else:
        reason = f"{value:.4f} {'>=' if passed else '<'} {bound}"
    return {"kind": kind, "metric": metric, "value": value, "bound": bound, "passed": passed, "reason": reason}


def judge(
    candidate: dict,
    champion: dict | None,
    value_thresholds: dict[str, float],
    change_thresholds: dict[str, float],
) -> dict[str, object]:
    """Every threshold's value, bound and verdict, and the overall verdicts.

    ``value_passed`` alone makes a candidate a challenger; ``passed`` (value and change)
    makes it the champion.
    """
    flat = flatten_metrics(candidate)
    value_checks = [
        _check(key, flat.get(key), bound, "value")
        for pattern, bound in sorted(value_thresholds.items())
        for key in _matching(pattern, flat)
    ]
    change_checks: list[dict] = []
    note = None
    if champion is None:
        note = NO_CHAMPION if change_thresholds else None
    else:
        reference = flatten_metrics(champion)
        for pattern, delta in sorted(change_thresholds.items()):
            for key in _matching(pattern, flat):
                base = reference.get(key)
                if base is None:
                    change_checks.append(_check(key, None, float("nan"), "change"))
                else:
                    change_checks.append(_check(key, flat.get(key), base - delta, "change", base))
    guarded = bool(value_thresholds or change_thresholds)
    value_passed = guarded and all(c["passed"] for c in value_checks)
    passed = value_passed and all(c["passed"] for c in change_checks)
    return {
        "passed": passed,
        "value_passed": value_passed,
        "checks": value_checks + change_checks,
        "note": note if guarded else "no thresholds configured: no blessing",
    }
