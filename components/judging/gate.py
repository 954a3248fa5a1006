"""The gate's verdict, with TFX Evaluator semantics, as a pure function of metrics.

Value thresholds bound a metric from below (a number, or ``lower_bound``) or, for metrics
where lower is better such as calibration error, from above (``upper_bound``), as TFX's
``GenericValueThreshold`` does. Change thresholds bound how far a candidate
may fall below the current champion, both scored on the same data in the same run; the
first model of a name has no champion, so its change thresholds are skipped and the
blessing says so. A threshold's first key part names a dataset; it applies to the models
scored on that dataset (image networks on ``fer2013``/``ckplus``, sequence networks on
``ckplus_sequences``), so one set of thresholds serves a grid of both, and the blessing lists
the thresholds left aside. Within a scored dataset a missing metric fails. No applicable
thresholds at all means no blessing: an unguarded gate would promote anything.
"""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass, field
from typing import Literal

from emoflow.components.settings import Bounds, ValueThreshold

NO_CHAMPION = "first model of this name: no champion to compare with, change thresholds skipped"


@dataclass(frozen=True)
class Check:
    """One threshold on one metric: its value, bound and verdict, and why in words."""

    kind: Literal["value", "change"]
    metric: str
    value: float | None
    bound: float
    passed: bool
    reason: str
    side: Literal["lower", "upper"] = "lower"  # which way ``bound`` bounds ``value``


@dataclass(frozen=True)
class Verdict:
    """The gate's decision: ``value_passed`` makes a challenger, ``passed`` a champion."""

    passed: bool
    value_passed: bool
    checks: list[Check]
    note: str | None
    not_applicable: list[str] = field(default_factory=list)

    def failed(self, kind: str | None = None) -> list[Check]:
        """The checks that failed, of one kind or of both."""
        return [c for c in self.checks if not c.passed and kind in (None, c.kind)]

    def as_dict(self) -> dict[str, object]:
        """The JSON form the blessing report and MLflow hold."""
        return asdict(self)


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
        key
        for key in flat
        if len(key.split(".")) == len(parts) and fnmatch.fnmatchcase(key, pattern)
    ) or [pattern]


def _on_datasets(
    thresholds: dict[str, ValueThreshold], datasets: list[str]
) -> tuple[dict[str, ValueThreshold], list[str]]:
    """The thresholds whose dataset (first key part, ``*`` allowed) the candidate was scored
    on, and the keys of the others."""

    def applies(pattern: str) -> bool:
        return any(fnmatch.fnmatchcase(dataset, pattern.split(".")[0]) for dataset in datasets)

    kept = {pattern: bound for pattern, bound in thresholds.items() if applies(pattern)}
    return kept, sorted(set(thresholds) - set(kept))


def _check(
    metric: str, value: float | None, bound: float, kind: str, reference: float | None = None
) -> Check:
    passed = value is not None and value >= bound
    if value is None:
        reason = "missing metric"
    elif kind == "change":
        sign = ">=" if passed else "<"
        reason = f"{value:.4f} {sign} champion {reference:.4f} - {reference - bound:.4f}"
    else:
        reason = f"{value:.4f} {'>=' if passed else '<'} {bound}"
    return Check(kind, metric, value, bound, passed, reason)


def _value_checks(metric: str, value: float | None, threshold: ValueThreshold) -> list[Check]:
    """A number is a lower bound; ``Bounds`` may give a lower bound, an upper bound or both."""
    bounds = threshold if isinstance(threshold, Bounds) else Bounds(lower_bound=threshold)
    checks = []
    if bounds.lower_bound is not None:
        checks.append(_check(metric, value, bounds.lower_bound, "value"))
    if bounds.upper_bound is not None:
        bound = bounds.upper_bound
        passed = value is not None and value <= bound
        reason = (
            "missing metric"
            if value is None
            else f"{value:.4f} {'<=' if passed else '>'} {bound} (upper bound)"
        )
        checks.append(Check("value", metric, value, bound, passed, reason, "upper"))
    return checks


def judge(
    candidate: dict,
    champion: dict | None,
    value_thresholds: dict[str, ValueThreshold],
    change_thresholds: dict[str, float],
) -> Verdict:
    """Every threshold's value, bound and verdict, and the overall verdicts."""
    datasets = sorted(candidate)
    value_thresholds, value_aside = _on_datasets(value_thresholds, datasets)
    change_thresholds, change_aside = _on_datasets(change_thresholds, datasets)
    flat = flatten_metrics(candidate)
    value_checks = [
        check
        for pattern, threshold in sorted(value_thresholds.items())
        for key in _matching(pattern, flat)
        for check in _value_checks(key, flat.get(key), threshold)
    ]
    change_checks: list[Check] = []
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
    value_passed = guarded and all(c.passed for c in value_checks)
    passed = value_passed and all(c.passed for c in change_checks)
    return Verdict(
        passed=passed,
        value_passed=value_passed,
        checks=value_checks + change_checks,
        note=note if guarded else f"no thresholds on {', '.join(datasets)}: no blessing",
        not_applicable=sorted(set(value_aside) | set(change_aside)),
    )
