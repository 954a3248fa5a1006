"""Validate: Great Expectations suites over the interim datasets, before anything trains on them.

Ingest rejects what it can name a file and row for; this stage checks the properties of the
dataset as a whole (vocabulary, splits, image geometry, duplicates, exposure) and leaves a
report a person can read: ``result.json`` for machines, ``summary.txt`` for the console and
GX Data Docs for browsing. A failed expectation stops the pipeline, but only after the report
is written, because the report is where the user finds out why.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from components import labels
from components.artifacts import atomic_dir, write_json
from components.manifest import IMAGE_SIZE, describe_pixels, read_dataset
from components.settings import ValidateSettings

# GX reads this when it builds a context; the pipeline runs offline, so never phone home.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import great_expectations as gx  # noqa: E402
import great_expectations.expectations as gxe  # noqa: E402
from great_expectations.data_context import EphemeralDataContext  # noqa: E402
from great_expectations.data_context.types.base import ProgressBarsConfig  # noqa: E402
from great_expectations.datasource.fluent import PandasDatasource  # noqa: E402

SPLITS: tuple[str, ...] = ("train", "val", "test")
# FER2013 rows have empty subject/sequence and frame -1, so only these must always be set.
NOT_NULL_COLUMNS: tuple[str, ...] = ("id", "dataset", "split", "label", "sha256")
RESULT_JSON = "result.json"
SUMMARY_TXT = "summary.txt"
DATA_DOCS = "data_docs"
GX_NAME = "emoflow"  # the Data Docs site and the datasource
# Enough offending values and ids to find the rows, few enough to read on one line.
EXAMPLES = 5
# SUMMARY keeps a bounded sample of offending values; the id column says which rows they are.
RESULT_FORMAT: dict[str, Any] = {
    "result_format": "SUMMARY",
    "unexpected_index_column_names": ["id"],
}


class DataValidationError(RuntimeError):
    """An expectation failed; the message is the summary naming dataset, check and values."""


@dataclass(frozen=True)
class ValidationReport:
    """Where the report of one validation run was written."""

    success: bool
    result_json: Path
    summary_txt: Path
    data_docs: Path


def validate(datasets: Mapping[str, Path], settings: ValidateSettings) -> ValidationReport:
    """Validate each interim dataset (name -> folder), write the report, raise if any failed.

    The whole report folder is replaced at once, so a crash half-way keeps the previous report.
    """
    if not datasets:
        raise ValueError("validate needs at least one dataset")
    out_dir = settings.out_dir
    context = _context()
    with atomic_dir(out_dir) as tmp:
        _add_docs_site(context, tmp / DATA_DOCS)
        source = context.data_sources.add_pandas(GX_NAME)
        results = {
            name: _run_suite(context, source, name, _validation_frame(name, folder), settings)
            for name, folder in datasets.items()
        }
        context.build_data_docs(site_names=[GX_NAME])
        success = all(result["success"] for result in results.values())
        summary = _summary(results)
        write_json(tmp / RESULT_JSON, {"success": success, "datasets": results})
        (tmp / SUMMARY_TXT).write_text(summary + "\n")
    print(summary)
    if not success:
        raise DataValidationError(summary)
    return ValidationReport(
        success=success,
        result_json=out_dir / RESULT_JSON,
        summary_txt=out_dir / SUMMARY_TXT,
        data_docs=out_dir / DATA_DOCS / "index.html",
    )


# --- the expectations ---------------------------------------------------------------------


def _expectations(name: str, settings: ValidateSettings) -> list[gxe.Expectation]:
    """The suite for dataset ``name``; each note says why the check exists (shown in Data Docs)."""
    low, high = settings.pixel_mean_range
    return [
        *(
            gxe.ExpectColumnValuesToNotBeNull(column=column, notes="later stages key on it")
            for column in NOT_NULL_COLUMNS
        ),
        gxe.ExpectColumnValuesToBeUnique(column="id", notes="ids join predictions to images"),
        gxe.ExpectColumnValuesToBeInSet(
            column="dataset", value_set=[name], notes="the folder holds the dataset it is named for"
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="label", value_set=list(labels.CANONICAL), notes="models index classes by name"
        ),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
        gxe.ExpectColumnDistinctValuesToContainSet(
            column="split",
            value_set=list(settings.required_splits),
            notes="train/evaluate read these splits (validate.required_splits)",
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="height", min_value=IMAGE_SIZE, max_value=IMAGE_SIZE, notes="model input size"
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="width", min_value=IMAGE_SIZE, max_value=IMAGE_SIZE, notes="model input size"
        ),
        gxe.ExpectColumnValuesToBeBetween(column="pixel_min", min_value=0, notes="8-bit grey"),
        gxe.ExpectColumnValuesToBeBetween(column="pixel_max", max_value=255, notes="8-bit grey"),
        gxe.ExpectColumnValuesToBeBetween(
            column="pixel_mean",
            min_value=low,
            max_value=high,
            notes="blank or saturated images carry no face (validate.pixel_mean_range)",
        ),
        gxe.ExpectColumnPairValuesToBeEqual(
            column_A="sha256",
            column_B="pixels_sha256",
            notes="manifest row i describes image i of pixels.npy",
        ),
    ]


# --- data -----------------------------------------------------------------------------------


def _validation_frame(name: str, folder: Path) -> pd.DataFrame:
    """The manifest plus what the pixels themselves say, one row per image.

    Geometry and range come from ``pixels.npy`` rather than the manifest so that the check
    is on the data later stages will actually read.
    """
    dataset = read_dataset(folder)
    pixels = dataset.pixels
    if pixels.ndim != 3 or len(pixels) != len(dataset.manifest):
        raise DataValidationError(
            f"{name}: {folder} has pixels of shape {pixels.shape} for {len(dataset.manifest)} "
            "manifest rows; expected N x height x width with N equal to the row count"
        )
    flat = pixels.reshape(len(pixels), -1)
    return dataset.manifest.assign(
        height=pixels.shape[1],
        width=pixels.shape[2],
        pixel_min=flat.min(axis=1).astype("int64"),
        pixel_max=flat.max(axis=1).astype("int64"),
        pixels_sha256=describe_pixels(pixels)["sha256"].to_numpy(),
    )


# --- Great Expectations ---------------------------------------------------------------------


def _context() -> EphemeralDataContext:
    """A fresh in-memory context per run, so no state leaks between runs (or tests)."""
    context = gx.get_context(mode="ephemeral")
    # tqdm bars per expectation would bury the summary in the console and in logs.
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def _add_docs_site(context: EphemeralDataContext, folder: Path) -> None:
    """A filesystem Data Docs site; the ephemeral context keeps results in memory to render."""
    context.add_data_docs_site(
        site_name=GX_NAME,
        site_config={
            "class_name": "SiteBuilder",
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(folder.resolve()),
            },
        },
    )


def _run_suite(
    context: EphemeralDataContext,
    source: PandasDatasource,
    name: str,
    frame: pd.DataFrame,
    settings: ValidateSettings,
) -> dict[str, Any]:
    """Run dataset ``name``'s suite on its frame; the result is also stored for Data Docs.

    A ValidationDefinition per dataset rather than one Checkpoint: a Checkpoint hands the same
    batch parameters (here, the dataframe) to all its definitions.
    """
    batch = source.add_dataframe_asset(name=name).add_batch_definition_whole_dataframe("whole")
    suite = context.suites.add(
        gx.ExpectationSuite(name=f"{GX_NAME}.{name}", expectations=_expectations(name, settings))
    )
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"validate.{name}", data=batch, suite=suite)
    )
    result = definition.run(batch_parameters={"dataframe": frame}, result_format=RESULT_FORMAT)
    return _dataset_result(result.to_json_dict())


# --- report ---------------------------------------------------------------------------------


def _dataset_result(gx_result: dict[str, Any]) -> dict[str, Any]:
    """GX's JSON result cut to what a reader needs: each check, its verdict and what it saw."""
    return {
        "success": bool(gx_result["success"]),
        "statistics": gx_result["statistics"],
        "results": [_expectation_result(r) for r in gx_result["results"]],
    }


def _expectation_result(result: dict[str, Any]) -> dict[str, Any]:
    config = result["expectation_config"]
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
    return {
        "expectation": config["type"],
        "kwargs": {k: v for k, v in config["kwargs"].items() if k != "batch_id"},
        "success": bool(result["success"]),
        "observed": {"exception": "; ".join(messages)} if messages else result["result"],
    }


def _summary(results: Mapping[str, dict[str, Any]]) -> str:
    """One line per dataset, then one indented line per failed expectation."""
    lines = []
    for name, result in results.items():
        failed = [r for r in result["results"] if not r["success"]]
        total = len(result["results"])
        if not failed:
            lines.append(f"{name}: ok ({total} expectations)")
            continue
        lines.append(f"{name}: {len(failed)} of {total} expectations failed")
        lines += [
            f"  {r['expectation']} on {_columns(r['kwargs'])}: {_describe(r['observed'])}"
            for r in failed
        ]
    return "\n".join(lines)


def _columns(kwargs: Mapping[str, Any]) -> str:
    if "column_A" in kwargs:
        return f"{kwargs['column_A']} vs {kwargs['column_B']}"
    return str(kwargs.get("column", "table"))


def _describe(observed: Mapping[str, Any]) -> str:
    """What the expectation saw, in a few words and with examples of the offending rows."""
    if "exception" in observed:
        return f"error: {observed['exception']}"
    if observed.get("partial_missing_list"):
        return f"missing {observed['partial_missing_list']}"
    if observed.get("unexpected_count"):
        ids = [row["id"] for row in observed.get("partial_unexpected_index_list") or []]
        text = (
            f"{observed['unexpected_count']} of {observed['element_count']} rows unexpected, "
            f"e.g. {observed['partial_unexpected_list'][:EXAMPLES]}"
        )
        return text + (f" (ids {', '.join(map(str, ids[:EXAMPLES]))})" if ids else "")
    return f"observed {observed.get('observed_value')}"
