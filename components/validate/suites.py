"""The expectation suites of the validate stage: which checks run on which table, and why.

Each expectation belongs to a named check (``components.settings.VALIDATION_SEVERITY``) and
carries that check's severity from params in GX's own ``severity`` field, so GX results and
Data Docs show it too. The ``why`` of each check is its note in Data Docs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import great_expectations.expectations as gxe
from great_expectations.expectations.metadata_types import FailureSeverity
from great_expectations.expectations.row_conditions import Column
from pydantic import BaseModel, ConfigDict

from emoflow.components import labels
from emoflow.components.manifest import IMAGE_SIZE
from emoflow.components.settings import ValidateSettings
from emoflow.components.validate.tables import CLASSES, CONTENTS, IMAGES, SUBJECTS

SPLITS: tuple[str, ...] = ("train", "val", "test")
# FER2013 rows have empty subject/sequence and frame -1, so only these must always be set.
NOT_NULL_COLUMNS: tuple[str, ...] = ("id", "dataset", "split", "label", "sha256")
# params say error/warning; GX calls them critical/warning.
GX_SEVERITY = {"error": FailureSeverity.CRITICAL, "warning": FailureSeverity.WARNING}
PARAMS_SEVERITY = {gx_value.value: name for name, gx_value in GX_SEVERITY.items()}

Expect = Callable[..., gxe.Expectation]


class PixelRanges(BaseModel):
    """Where the pixel statistics of a sound dataset lie, per image and over the dataset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pixel_mean: tuple[float, float]
    pixel_std: tuple[float, float]
    dataset_pixel_mean: tuple[float, float]
    dataset_pixel_std: tuple[float, float]
    images: int | None = None  # how many images a reference run's ranges were taken from


class Reference(BaseModel):
    """The ``validate.reference`` file: per-dataset ranges observed in a run one trusts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    margin: float
    datasets: dict[str, PixelRanges]


def builtin_ranges(settings: ValidateSettings) -> PixelRanges:
    return PixelRanges(
        pixel_mean=settings.pixel_mean_range,
        pixel_std=settings.pixel_std_range,
        dataset_pixel_mean=settings.dataset_pixel_mean_range,
        dataset_pixel_std=settings.dataset_pixel_std_range,
    )


def expectations(
    table: str, name: str, settings: ValidateSettings, ranges: PixelRanges
) -> list[gxe.Expectation]:
    """The suite for one table of dataset ``name``."""
    expect = _expecter(settings)
    if table == IMAGES:
        return _image_expectations(expect, name, settings, ranges)
    if table == CLASSES:
        return [
            expect(
                "class_balance",
                gxe.ExpectColumnValuesToBeBetween,
                "a class far rarer than the largest of its split is learnt and scored poorly "
                "(validate.min_class_ratio)",
                column="share_of_largest",
                min_value=settings.min_class_ratio,
            )
        ]
    if table == CONTENTS:
        return _content_expectations(expect)
    if table == SUBJECTS:
        return [
            expect(
                "subjects_across_splits",
                gxe.ExpectColumnValuesToBeBetween,
                "frames of one person are near-identical: splits are drawn by subject",
                column="splits",
                max_value=1,
            )
        ]
    raise ValueError(f"no suite for table {table!r}")


def _expecter(settings: ValidateSettings) -> Expect:
    """Build expectations tagged with their check and that check's severity from params."""

    def expect(check: str, kind: type[gxe.Expectation], why: str, **kwargs: Any) -> gxe.Expectation:
        severity = settings.severity[check]
        return kind(
            meta={"check": check},
            severity=GX_SEVERITY[severity],
            notes=f"{check} ({severity}): {why}",
            **kwargs,
        )

    return expect


def _image_expectations(
    expect: Expect, name: str, settings: ValidateSettings, ranges: PixelRanges
) -> list[gxe.Expectation]:
    between = gxe.ExpectColumnValuesToBeBetween
    non_blank = Column("pixel_std") > 0
    return [
        *(
            expect(
                "required_columns",
                gxe.ExpectColumnValuesToNotBeNull,
                "later stages key on it",
                column=c,
            )
            for c in NOT_NULL_COLUMNS
        ),
        expect(
            "unique_ids",
            gxe.ExpectColumnValuesToBeUnique,
            "ids join predictions to images",
            column="id",
        ),
        expect(
            "dataset_name",
            gxe.ExpectColumnValuesToBeInSet,
            "the folder holds the dataset it is named for",
            column="dataset",
            value_set=[name],
        ),
        expect(
            "label_domain",
            gxe.ExpectColumnValuesToBeInSet,
            "models index classes by canonical name",
            column="label",
            value_set=list(labels.CANONICAL),
        ),
        expect(
            "split_domain",
            gxe.ExpectColumnValuesToBeInSet,
            "stages read train, val and test",
            column="split",
            value_set=list(SPLITS),
        ),
        expect(
            "required_splits",
            gxe.ExpectColumnDistinctValuesToContainSet,
            "train/evaluate read these splits (validate.required_splits)",
            column="split",
            value_set=list(settings.required_splits),
        ),
        *(
            expect(
                "image_size",
                between,
                "model input size",
                column=c,
                min_value=IMAGE_SIZE,
                max_value=IMAGE_SIZE,
            )
            for c in ("height", "width")
        ),
        expect("pixel_range", between, "8-bit grey", column="pixel_min", min_value=0),
        expect("pixel_range", between, "8-bit grey", column="pixel_max", max_value=255),
        expect(
            "pixels_match_manifest",
            gxe.ExpectColumnPairValuesToBeEqual,
            "manifest row i describes image i of pixels.npy",
            column_A="sha256",
            column_B="pixels_sha256",
        ),
        expect(
            "blank_images",
            between,
            "a constant image (e.g. all black) carries no face",
            column="pixel_std",
            min_value=0,
            strict_min=True,
        ),
        *(
            expect(
                "image_pixel_stats",
                between,
                "exposure and contrast like the reference's; blank images are blank_images'",
                column=column,
                min_value=low,
                max_value=high,
                row_condition=non_blank,
            )
            for column, (low, high) in (
                ("pixel_mean", ranges.pixel_mean),
                ("pixel_std", ranges.pixel_std),
            )
        ),
        *(
            expect(
                "dataset_pixel_stats",
                gxe.ExpectColumnMeanToBeBetween,
                "a shifted dataset mean means pixels were decoded or scaled differently",
                column=column,
                min_value=low,
                max_value=high,
            )
            for column, (low, high) in (
                ("pixel_mean", ranges.dataset_pixel_mean),
                ("pixel_std", ranges.dataset_pixel_std),
            )
        ),
    ]


def _content_expectations(expect: Expect) -> list[gxe.Expectation]:
    """Duplicates, on the table with one row per distinct image (sha256 of the pixels)."""
    checks = (
        (
            "duplicate_images",
            "copies",
            "byte-identical images weigh double in training and scoring",
        ),
        ("duplicates_within_split", "copies_in_one_split", "copies of one image inside a split"),
        (
            "duplicates_across_splits",
            "splits",
            "an image in train and in val/test leaks: that score is not on unseen faces",
        ),
        (
            "duplicate_label_conflicts",
            "labels",
            "copies of one image under different labels are label noise",
        ),
    )
    return [
        expect(check, gxe.ExpectColumnValuesToBeBetween, why, column=column, max_value=1)
        for check, column, why in checks
    ]
