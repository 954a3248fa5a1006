"""The validate stage: GX suites over small interim datasets built in tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.artifacts import read_json
from components.manifest import (
    IMAGE_SIZE,
    MANIFEST,
    PIXELS,
    Dataset,
    describe_pixels,
    write_dataset,
)
from components.settings import ValidateSettings
from components.validate import DataValidationError, validate

SPLITS = ("train", "val", "test")
LABELS = ("happy", "sad")
PER_CELL = 3  # images per (split, label)


def make_dataset(name: str, seed: int = 0) -> Dataset:
    """3 splits x 2 labels x 3 mid-grey noise images, with a manifest as ingest writes it."""
    rng = np.random.default_rng(seed)
    cells = [(split, label) for split in SPLITS for label in LABELS for _ in range(PER_CELL)]
    pixels = rng.integers(40, 216, size=(len(cells), IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    manifest = pd.DataFrame(
        {
            "id": [f"{name}-{i:05d}" for i in range(len(cells))],
            "dataset": name,
            "split": [split for split, _ in cells],
            "label": [label for _, label in cells],
            "subject": "",
            "sequence": "",
            "frame": -1,
            "source": [f"test:row {i}" for i in range(len(cells))],
        }
    )
    return Dataset(pd.concat([manifest, describe_pixels(pixels)], axis=1), pixels)


def write(tmp_path: Path, name: str, dataset: Dataset) -> Path:
    folder = tmp_path / "interim" / name
    write_dataset(folder, dataset)
    return folder


def settings(tmp_path: Path) -> ValidateSettings:
    return ValidateSettings(out_dir=tmp_path / "reports" / "validation")


def test_valid_datasets_pass_and_write_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    datasets = {name: write(tmp_path, name, make_dataset(name)) for name in ("fer2013", "ckplus")}

    report = validate(datasets, settings(tmp_path))

    assert report.success
    result = read_json(report.result_json)
    assert result["success"] is True
    assert set(result["datasets"]) == {"fer2013", "ckplus"}
    for dataset in result["datasets"].values():
        assert dataset["success"] is True
        assert dataset["statistics"]["unsuccessful_expectations"] == 0
        assert {r["expectation"] for r in dataset["results"]} >= {
            "expect_column_values_to_be_in_set",
            "expect_column_values_to_be_unique",
            "expect_column_distinct_values_to_contain_set",
        }
    assert report.data_docs.is_file()
    assert "emoflow.fer2013" in report.data_docs.read_text()
    summary = report.summary_txt.read_text()
    assert summary.splitlines() == ["fer2013: ok (16 expectations)", "ckplus: ok (16 expectations)"]
    assert summary in capsys.readouterr().out


def _relabel(dataset: Dataset) -> Dataset:
    dataset.manifest.loc[4, "label"] = "happyy"
    return dataset


def _drop_val(dataset: Dataset) -> Dataset:
    keep = (dataset.manifest["split"] != "val").to_numpy()
    return Dataset(dataset.manifest[keep].reset_index(drop=True), dataset.pixels[keep])


def _black_image(dataset: Dataset) -> Dataset:
    pixels = dataset.pixels.copy()
    pixels[2] = 0
    manifest = dataset.manifest.drop(columns=["sha256", "pixel_mean", "pixel_std"])
    return Dataset(pd.concat([manifest, describe_pixels(pixels)], axis=1), pixels)


def _duplicate_id(dataset: Dataset) -> Dataset:
    dataset.manifest.loc[7, "id"] = dataset.manifest.loc[6, "id"]
    return dataset


def _swap_images(dataset: Dataset) -> Dataset:
    return Dataset(dataset.manifest, dataset.pixels[[1, 0, *range(2, len(dataset.pixels))]])


@pytest.mark.parametrize(
    ("corrupt", "expectation", "column", "observed"),
    [
        (_relabel, "expect_column_values_to_be_in_set", "label", "happyy"),
        (_drop_val, "expect_column_distinct_values_to_contain_set", "split", "val"),
        (_black_image, "expect_column_values_to_be_between", "pixel_mean", "ckplus-00002"),
        (_duplicate_id, "expect_column_values_to_be_unique", "id", "ckplus-00006"),
        (
            _swap_images,
            "expect_column_pair_values_to_be_equal",
            "sha256 vs pixels_sha256",
            "ckplus-00000",
        ),
    ],
    ids=["bad-label", "empty-split", "black-image", "duplicate-id", "misaligned-pixels"],
)
def test_a_failed_expectation_raises_after_writing_the_report(
    tmp_path: Path,
    corrupt: Callable[[Dataset], Dataset],
    expectation: str,
    column: str,
    observed: str,
) -> None:
    datasets = {
        "fer2013": write(tmp_path, "fer2013", make_dataset("fer2013")),
        "ckplus": write(tmp_path, "ckplus", corrupt(make_dataset("ckplus", seed=1))),
    }
    out = settings(tmp_path).out_dir

    with pytest.raises(DataValidationError) as raised:
        validate(datasets, settings(tmp_path))

    message = str(raised.value)
    assert "fer2013: ok" in message
    failure = next(line for line in message.splitlines() if expectation in line)
    assert f"{expectation} on {column}:" in failure
    assert observed in failure
    assert message.index("ckplus:") < message.index(failure)
    result = read_json(out / "result.json")
    assert result["success"] is False
    assert result["datasets"]["fer2013"]["success"] is True
    ckplus = result["datasets"]["ckplus"]
    assert ckplus["success"] is False
    failed = [r for r in ckplus["results"] if not r["success"]]
    assert [r["expectation"] for r in failed] == [expectation]
    assert observed in str(failed[0]["observed"])
    assert (out / "summary.txt").read_text().strip() == message
    assert (out / "data_docs" / "index.html").is_file()


def test_a_missing_manifest_column_is_reported_as_an_error(tmp_path: Path) -> None:
    folder = write(tmp_path, "ckplus", make_dataset("ckplus"))
    manifest = pd.read_parquet(folder / MANIFEST).drop(columns=["label"])
    manifest.to_parquet(folder / MANIFEST, index=False)

    with pytest.raises(DataValidationError, match=r"ckplus: 2 of 16 expectations failed"):
        validate({"ckplus": folder}, settings(tmp_path))

    result = read_json(settings(tmp_path).out_dir / "result.json")
    failed = [r for r in result["datasets"]["ckplus"]["results"] if not r["success"]]
    assert {r["kwargs"]["column"] for r in failed} == {"label"}
    assert all('"label"' in r["observed"]["exception"] for r in failed)


def test_pixels_that_do_not_match_the_manifest_stop_before_gx(tmp_path: Path) -> None:
    folder = write(tmp_path, "ckplus", make_dataset("ckplus"))
    np.save(folder / PIXELS, np.load(folder / PIXELS)[:-1])
    out = settings(tmp_path).out_dir

    with pytest.raises(DataValidationError, match=r"ckplus: .* 18 manifest rows"):
        validate({"ckplus": folder}, settings(tmp_path))
    assert not out.exists()
