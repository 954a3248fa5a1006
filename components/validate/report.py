"""The validate stage's report: GX results cut to what a reader needs, by severity.

``result.json`` leads with the verdict and every failed check as an error or a warning with
its counts, then each dataset in full; the console summary is one line per dataset and per
failed check.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from emoflow.components.validate.suites import PARAMS_SEVERITY
from emoflow.components.validate.tables import TABLES, TableSpec

# Offending rows named per failed check: in result.json, and (fewer) on the console.
LISTED = 20
EXAMPLES = 3
# What the offending rows of a check are, for the summary; other checks say "unexpected".
FAILS: dict[str, str] = {
    "blank_images": "are constant (pixel_std 0)",
    "image_pixel_stats": "are outside the pixel statistics range",
    "class_balance": "are below validate.min_class_ratio of their split's largest class",
    "duplicate_images": "occur more than once",
    "duplicates_within_split": "occur more than once within a split",
    "duplicates_across_splits": "occur in more than one split",
    "duplicate_label_conflicts": "carry conflicting labels",
    "subjects_across_splits": "are in more than one split",
}


def expectation_result(result: Mapping[str, Any], table: str) -> dict[str, Any]:
    """One GX expectation result (JSON dict): its check, severity, verdict and what it saw."""
    config = result["expectation_config"]
    return {
        "check": config["meta"]["check"],
        "severity": PARAMS_SEVERITY[config["severity"]],
        "table": table,
        "expectation": config["type"],
        "kwargs": {k: v for k, v in config["kwargs"].items() if k != "batch_id"},
        "success": bool(result["success"]),
        "observed": _observed(result, TABLES[table], config["kwargs"].get("column")),
    }


def dataset_result(results: list[dict[str, Any]]) -> dict[str, Any]:
    """A dataset's verdict: it fails only on failed error-severity checks."""
    failed = [r for r in results if not r["success"]]
    errors = sum(r["severity"] == "error" for r in failed)
    return {
        "success": errors == 0,
        "errors": errors,
        "warnings": len(failed) - errors,
        "statistics": {
            "evaluated_expectations": len(results),
            "successful_expectations": len(results) - len(failed),
            "unsuccessful_expectations": len(failed),
        },
        "results": results,
    }


def report(results: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """result.json: the verdict, every failed check by severity, then each dataset in full."""
    findings = [
        _finding(name, r)
        for name, dataset in results.items()
        for r in dataset["results"]
        if not r["success"]
    ]
    errors = [f for f in findings if f["severity"] == "error"]
    return {
        "success": not errors,
        "errors": errors,
        "warnings": [f for f in findings if f["severity"] == "warning"],
        "datasets": dict(results),
    }


def summary(full_report: Mapping[str, Any], docs: Path) -> str:
    """One line per dataset, one indented line per failed check (errors first), a verdict."""
    lines = []
    for name, dataset in full_report["datasets"].items():
        total = len(dataset["results"])
        lines.append(
            f"{name}: {_verdict(dataset['errors'], dataset['warnings'])} ({total} expectations)"
        )
        failed = sorted(
            (r for r in dataset["results"] if not r["success"]),
            key=lambda r: r["severity"] != "error",
        )
        lines += [
            f"  {r['severity']} {r['check']} ({_columns(r['kwargs'])}): {_describe(r)}"
            for r in failed
        ]
    verdict = _verdict(len(full_report["errors"]), len(full_report["warnings"]))
    lines.append(f"validation {verdict}; Data Docs: {docs}")
    return "\n".join(lines)


def _observed(result: Mapping[str, Any], spec: TableSpec, column: str | None) -> dict[str, Any]:
    error = result.get("exception_info") or {}
    # Metric errors are keyed by metric id, the expectation's own error is flat.
    # Several metrics of one expectation often fail for the same reason: say it once.
    messages = list(
        dict.fromkeys(
            info["exception_message"]
            for info in ([error] if "raised_exception" in error else error.values())
            if info.get("raised_exception")
        )
    )
    if messages:
        return {"exception": "; ".join(messages)}
    seen = result["result"]
    if "unexpected_count" not in seen:
        return seen
    rows = seen.get("unexpected_index_list") or seen.get("partial_unexpected_index_list") or []
    observed = {
        "element_count": seen["element_count"],
        "unexpected_count": seen["unexpected_count"],
        "unexpected_percent": seen["unexpected_percent"],
        "partial_unexpected_list": seen["partial_unexpected_list"][:LISTED],
        "examples": [_example(spec, row, column) for row in rows[:LISTED]],
    }
    if spec.groups:
        observed["unexpected_images"] = sum(int(row["copies"]) for row in rows)
    return observed


def _example(spec: TableSpec, row: Mapping[str, Any], column: str | None) -> str:
    named = spec.example.format(**row)
    return f"{named}: {row[column]}" if spec.show_value and column in row else named


def _finding(name: str, result: Mapping[str, Any]) -> dict[str, Any]:
    observed = result["observed"]
    finding = {
        "dataset": name,
        "check": result["check"],
        "severity": result["severity"],
        "expectation": result["expectation"],
        "column": _columns(result["kwargs"]),
        "message": _describe(result),
    }
    if "unexpected_count" in observed:
        finding |= {
            "count": observed["unexpected_count"],
            "of": observed["element_count"],
            "unit": TABLES[result["table"]].unit,
        }
    if "unexpected_images" in observed:
        finding["images"] = observed["unexpected_images"]
    return finding


def _verdict(errors: int, warnings: int) -> str:
    if errors:
        return f"failed: {errors} error(s), {warnings} warning(s)"
    return f"passed with {warnings} warning(s)" if warnings else "ok"


def _columns(kwargs: Mapping[str, Any]) -> str:
    if "column_A" in kwargs:
        return f"{kwargs['column_A']} vs {kwargs['column_B']}"
    return str(kwargs.get("column", "table"))


def _describe(result: Mapping[str, Any]) -> str:
    """What the expectation saw, in a few words and with examples of the offending rows."""
    observed = result["observed"]
    if "exception" in observed:
        return f"error: {observed['exception']}"
    if observed.get("partial_missing_list"):
        return f"missing {observed['partial_missing_list']}"
    if observed.get("unexpected_count"):
        unit = TABLES[result["table"]].unit
        text = f"{observed['unexpected_count']} of {observed['element_count']} {unit} "
        text += FAILS.get(result["check"], "unexpected")
        if "unexpected_images" in observed:
            text += f" ({observed['unexpected_images']} images)"
        return text + f", e.g. {'; '.join(observed['examples'][:EXAMPLES])}"
    kwargs = result["kwargs"]
    expected = (
        f", expected {kwargs.get('min_value')}..{kwargs.get('max_value')}"
        if "min_value" in kwargs
        else ""
    )
    return f"observed {observed.get('observed_value')}{expected}"
