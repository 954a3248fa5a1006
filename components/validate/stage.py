"""Validate: Great Expectations suites over the interim datasets, before anything trains on them.

Ingest rejects what it can name a file and row for; this stage checks the properties of the
dataset as a whole (vocabulary, splits, image geometry, pixel statistics, class balance,
duplicates, subject leakage) and leaves a report a person can read: ``result.json`` for
machines, ``summary.txt`` for the console and GX Data Docs for browsing.

Only ``result.json`` and ``summary.txt`` are the stage's output: the same data gives the
same bytes, so a re-run by DVC or by the Prefect flow changes nothing downstream. The Data
Docs pages carry build times and random ids, so the site is rebuilt beside the output
(``data_docs/`` next to ``validate.out_dir``), untracked, with its scripts and styles inside
it so that it opens offline (:mod:`emoflow.components.validate.data_docs`).

Every expectation belongs to a named check whose severity comes from ``validate.severity``:
a failed ``error`` stops the pipeline (after the report is written, because the report is
where the user finds out why); a failed ``warning`` is reported with its counts and the
pipeline carries on. The public datasets have known faults (FER2013's blank images and
duplicates) that are used as published, so those checks are warnings by default.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError
from tqdm import tqdm

# GX reads this when it builds a context; the pipeline runs offline, so never phone home.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import great_expectations as gx  # noqa: E402
from great_expectations.data_context import EphemeralDataContext  # noqa: E402
from great_expectations.data_context.types.base import ProgressBarsConfig  # noqa: E402
from great_expectations.datasource.fluent import PandasDatasource  # noqa: E402

from emoflow.components.artifacts import atomic_dir, write_json  # noqa: E402
from emoflow.components.errors import EmoFlowError
from emoflow.components.manifest import PIXELS, describe_pixels, read_dataset  # noqa: E402
from emoflow.components.settings import ValidateSettings  # noqa: E402
from emoflow.components.validate import data_docs  # noqa: E402
from emoflow.components.validate import report as validation_report  # noqa: E402
from emoflow.components.validate.outputs import DATA_DOCS, RESULT_JSON, SUMMARY_TXT  # noqa: E402
from emoflow.components.validate.suites import (  # noqa: E402
    PixelRanges,
    Reference,
    builtin_ranges,
    expectations,
)
from emoflow.components.validate.tables import CLASSES, IMAGES, TABLES, derived_tables  # noqa: E402

GX_NAME = "emoflow"  # the Data Docs site and the datasource
# Images per block when recomputing pixel statistics: bounds the float64 temporaries of
# the standard deviation to ~75 MB instead of 8 bytes per pixel of the whole dataset, and
# the pixels held at once to 9 MB whatever the dataset's size.
STATS_CHUNK = 4096


class DataValidationError(EmoFlowError, RuntimeError):
    """An error-severity check failed, or the data or the reference cannot be read."""


@dataclass(frozen=True)
class ValidationReport:
    """Where the report of one validation run was written, and how many warnings it holds."""

    success: bool
    warnings: int
    result_json: Path
    summary_txt: Path
    data_docs: Path


def validate(datasets: Mapping[str, Path], settings: ValidateSettings) -> ValidationReport:
    """Validate each interim dataset (name -> folder), write the report, raise on any error.

    The report folder and the Data Docs site are each replaced at once, so a crash half-way
    keeps the previous ones.
    """
    if not datasets:
        raise ValueError("validate needs at least one dataset")
    ranges = _pixel_ranges(list(datasets), settings)
    tables = {name: _tables(name, folder) for name, folder in datasets.items()}
    out_dir = settings.out_dir
    site = docs_site(settings)
    context = _context()
    with atomic_dir(site) as tmp:
        _add_docs_site(context, tmp)
        source = context.data_sources.add_pandas(GX_NAME)
        results = {
            name: _validate_dataset(context, source, name, tables[name], settings, ranges[name])
            for name in datasets
        }
        context.build_data_docs(site_names=[GX_NAME])
        online = data_docs.make_offline(tmp)
        (tmp / ".gitignore").write_text("*\n")  # rebuilt by every run: never committed
    report = validation_report.report(results)
    summary = validation_report.summary(report, site / "index.html")
    with atomic_dir(out_dir) as tmp:
        write_json(tmp / RESULT_JSON, report)
        (tmp / SUMMARY_TXT).write_text(summary + "\n")
    print(summary)
    if online:
        print(
            f"Data Docs load {len(online)} file(s) from the network, so offline they render "
            f"blank (e.g. {online[0]}): `python -m emoflow.components.web_assets` installs them"
        )
    if not report["success"]:
        raise DataValidationError(summary)
    return ValidationReport(
        success=True,
        warnings=len(report["warnings"]),
        result_json=out_dir / RESULT_JSON,
        summary_txt=out_dir / SUMMARY_TXT,
        data_docs=site / "index.html",
    )


def docs_site(settings: ValidateSettings) -> Path:
    """The Data Docs folder: beside the output folder, not in it (see the module's docstring)."""
    return settings.out_dir.parent / DATA_DOCS


# --- pixel statistics ranges ------------------------------------------------------------------


def write_reference(datasets: Mapping[str, Path], path: Path, margin: float) -> Path:
    """Write the pixel-statistics ranges of datasets one trusts, for ``validate.reference``.

    Per-image ranges span the run's images (blank images aside: ``blank_images`` reports
    those) and the dataset ranges its means, each widened by ``margin`` grey levels, so a
    later run is flagged only where it differs from this one by more than that.
    """
    reference = Reference(
        margin=margin,
        datasets={
            name: _observed_ranges(_image_table(name, f), margin) for name, f in datasets.items()
        },
    )
    write_json(path, reference.model_dump(mode="json"))
    return path


def _observed_ranges(images: pd.DataFrame, margin: float) -> PixelRanges:
    shown = images[images["pixel_std"] > 0]

    def widen(low: float, high: float, top: float) -> tuple[float, float]:
        return max(0.0, float(low) - margin), min(top, float(high) + margin)

    mean, std = images["pixel_mean"].mean(), images["pixel_std"].mean()
    return PixelRanges(
        pixel_mean=widen(shown["pixel_mean"].min(), shown["pixel_mean"].max(), 255.0),
        pixel_std=widen(shown["pixel_std"].min(), shown["pixel_std"].max(), 127.5),
        dataset_pixel_mean=widen(mean, mean, 255.0),
        dataset_pixel_std=widen(std, std, 127.5),
        images=len(images),
    )


def _pixel_ranges(names: list[str], settings: ValidateSettings) -> dict[str, PixelRanges]:
    """Each dataset's ranges: from ``validate.reference`` when set, else the built-in ones."""
    path = settings.reference
    if path is None:
        return dict.fromkeys(names, builtin_ranges(settings))
    try:
        reference = Reference.model_validate(json.loads(path.read_text()))
    except OSError as err:
        raise DataValidationError(
            f"{path}: cannot read the pixel-statistics reference (validate.reference): "
            f"{err.strerror}"
        ) from None
    except (json.JSONDecodeError, ValidationError) as err:
        raise DataValidationError(f"{path}: not a pixel-statistics reference: {err}") from None
    missing = [name for name in names if name not in reference.datasets]
    if missing:
        raise DataValidationError(
            f"{path}: no pixel ranges for {', '.join(missing)} (it has "
            f"{', '.join(reference.datasets) or 'none'}); rewrite it with "
            "emoflow.components.validate.stage.write_reference from a run you trust"
        )
    return {name: reference.datasets[name] for name in names}


# --- data -----------------------------------------------------------------------------------


def _tables(name: str, folder: Path) -> dict[str, pd.DataFrame]:
    images = _image_table(name, folder)
    return {IMAGES: images, **derived_tables(images)}


def _image_table(name: str, folder: Path) -> pd.DataFrame:
    """The manifest plus what the pixels themselves say, one row per image.

    Geometry, range and statistics come from ``pixels.npy`` rather than the manifest so that
    the check is on the data later stages will actually read.
    """
    dataset = read_dataset(folder)
    pixels = dataset.pixels
    if pixels.ndim != 3 or len(pixels) != len(dataset.manifest):
        raise DataValidationError(
            f"{name}: {folder} has pixels of shape {pixels.shape} for {len(dataset.manifest)} "
            "manifest rows; expected N x height x width with N equal to the row count"
        )
    described = pd.concat(
        [_describe_block(block) for block in _pixel_blocks(folder / PIXELS, len(pixels), name)]
        or [_describe_block(pixels)],
        ignore_index=True,
    )
    # Columns are added in place: ``assign`` would copy the manifest, the largest table here.
    images = dataset.manifest
    images["height"], images["width"] = pixels.shape[1], pixels.shape[2]
    for column in ("pixel_min", "pixel_max", "pixel_mean", "pixel_std"):
        images[column] = described[column].to_numpy()
    images["pixels_sha256"] = described["sha256"].to_numpy()
    return images


def _pixel_blocks(path: Path, count: int, name: str) -> Iterator[np.ndarray]:
    """``pixels.npy`` in blocks of ``STATS_CHUNK`` images, each copied from its own mapping.

    Pages read through one mapping of the whole file stay resident until it is unmapped, so
    the stage's memory would grow by the whole pixel file (2.3 GB at a million images); a
    mapping per block is released with the block.
    """
    for start in tqdm(range(0, count, STATS_CHUNK), desc=f"pixels {name}", mininterval=5):
        yield np.array(np.load(path, mmap_mode="r")[start : start + STATS_CHUNK])


def _describe_block(pixels: np.ndarray) -> pd.DataFrame:
    flat = pixels.reshape(len(pixels), -1)
    return describe_pixels(pixels).assign(
        pixel_min=flat.min(axis=1).astype("int64"), pixel_max=flat.max(axis=1).astype("int64")
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


def _validate_dataset(
    context: EphemeralDataContext,
    source: PandasDatasource,
    name: str,
    tables: Mapping[str, pd.DataFrame],
    settings: ValidateSettings,
    ranges: PixelRanges,
) -> dict[str, Any]:
    """Run each of the dataset's tables through its suite; add the per-split class counts."""
    results = [
        result
        for table, frame in tables.items()
        for result in _run_suite(
            context, source, name, table, frame, expectations(table, name, settings, ranges)
        )
    ]
    dataset = validation_report.dataset_result(results)
    if CLASSES in tables:
        dataset["class_counts"] = {
            split: dict(zip(cells["label"], cells["images"].astype(int).tolist(), strict=True))
            for split, cells in tables[CLASSES].groupby("split")
        }
    return dataset


def _run_suite(
    context: EphemeralDataContext,
    source: PandasDatasource,
    name: str,
    table: str,
    frame: pd.DataFrame,
    suite_expectations: list[Any],
) -> list[dict[str, Any]]:
    """Run one table's suite; the result is also stored for Data Docs.

    A ValidationDefinition per table rather than one Checkpoint: a Checkpoint hands the same
    batch parameters (here, the dataframe) to all its definitions. Group tables ask for every
    offending row (COMPLETE) so the report can count the images behind the groups.
    """
    spec = TABLES[table]
    asset = source.add_dataframe_asset(name=f"{name}.{table}")
    batch = asset.add_batch_definition_whole_dataframe("whole")
    suite = context.suites.add(
        gx.ExpectationSuite(name=f"{GX_NAME}.{name}.{table}", expectations=suite_expectations)
    )
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"validate.{name}.{table}", data=batch, suite=suite)
    )
    result_format = {
        "result_format": "COMPLETE" if spec.groups else "SUMMARY",
        "unexpected_index_column_names": list(spec.index),
    }
    result = definition.run(batch_parameters={"dataframe": frame}, result_format=result_format)
    return [
        validation_report.expectation_result(r, table) for r in result.to_json_dict()["results"]
    ]
