"""The validate stage: GX suites over small interim datasets built in tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from emoflow.components.artifacts import read_json
from emoflow.components.ingest.fer2013_csv import read_fer2013_csv
from emoflow.components.manifest import (
    IMAGE_SIZE,
    MANIFEST,
    PIXELS,
    Dataset,
    describe_pixels,
    read_dataset,
    write_dataset,
)
from emoflow.components.settings import IngestSettings, ValidateSettings
from emoflow.components.validate.stage import (
    DataValidationError,
    docs_site,
    validate,
    write_reference,
)

SPLITS = ("train", "val", "test")
LABELS = ("happy", "sad")
PER_CELL = 3  # images per (split, label): rows 0-2 train/happy, 3-5 train/sad, 6-8 val/happy ...


def make_dataset(name: str, seed: int = 0, subjects: bool = False) -> Dataset:
    """3 splits x 2 labels x 3 mid-grey noise images, with a manifest as ingest writes it.

    With ``subjects``, each (split, label) cell is one subject, as CK+ splits by subject.
    """
    rng = np.random.default_rng(seed)
    cells = [(split, label) for split in SPLITS for label in LABELS for _ in range(PER_CELL)]
    pixels = rng.integers(40, 216, size=(len(cells), IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    manifest = pd.DataFrame(
        {
            "id": [f"{name}-{i:05d}" for i in range(len(cells))],
            "dataset": name,
            "split": [split for split, _ in cells],
            "label": [label for _, label in cells],
            "subject": [f"S{i // PER_CELL:03d}" if subjects else "" for i in range(len(cells))],
            "sequence": "",
            "frame": -1,
            "source": [f"test:row {i}" for i in range(len(cells))],
        }
    )
    return Dataset(pd.concat([manifest, describe_pixels(pixels)], axis=1), pixels)


def with_pixels(dataset: Dataset, pixels: np.ndarray) -> Dataset:
    """The dataset with new pixels and the hashes and statistics ingest would write for them."""
    manifest = dataset.manifest.drop(columns=["sha256", "pixel_mean", "pixel_std"])
    return Dataset(pd.concat([manifest, describe_pixels(pixels)], axis=1), pixels)


def write(tmp_path: Path, name: str, dataset: Dataset) -> Path:
    folder = tmp_path / "interim" / name
    write_dataset(folder, dataset)
    return folder


def settings(tmp_path: Path, **overrides: Any) -> ValidateSettings:
    return ValidateSettings(out_dir=tmp_path / "reports" / "validation", **overrides)


def findings(result: dict, severity: str) -> dict[str, dict]:
    """The report's errors or warnings by check (each check fails once in these tests)."""
    return {f["check"]: f for f in result["errors" if severity == "error" else "warnings"]}


def test_valid_datasets_pass_and_write_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    datasets = {
        "fer2013": write(tmp_path, "fer2013", make_dataset("fer2013")),
        "ckplus": write(tmp_path, "ckplus", make_dataset("ckplus", seed=1, subjects=True)),
    }

    report = validate(datasets, settings(tmp_path))

    assert report.success and report.warnings == 0
    result = read_json(report.result_json)
    assert result["success"] is True
    assert result["errors"] == [] and result["warnings"] == []
    assert set(result["datasets"]) == {"fer2013", "ckplus"}
    for dataset in result["datasets"].values():
        assert dataset["success"] is True
        assert dataset["statistics"]["unsuccessful_expectations"] == 0
        assert dataset["class_counts"] == {s: dict.fromkeys(LABELS, PER_CELL) for s in SPLITS}
        assert all(r["severity"] in {"error", "warning"} for r in dataset["results"])
    checks = {r["check"]: r["severity"] for r in result["datasets"]["ckplus"]["results"]}
    assert checks["label_domain"] == "error" and checks["duplicates_across_splits"] == "warning"
    assert "subjects_across_splits" in checks
    assert "subjects_across_splits" not in {
        r["check"] for r in result["datasets"]["fer2013"]["results"]
    }
    index = report.data_docs.read_text()
    assert "emoflow.fer2013.images" in index and "emoflow.ckplus.subjects" in index
    summary = report.summary_txt.read_text()
    assert summary.splitlines() == [
        "fer2013: ok (25 expectations)",
        "ckplus: ok (26 expectations)",
        f"validation ok; Data Docs: {report.data_docs}",
    ]
    assert summary in capsys.readouterr().out


def test_a_rerun_leaves_the_output_as_it_was_and_rebuilds_the_data_docs_beside_it(
    tmp_path: Path,
) -> None:
    """DVC and the Prefect flow both run validate: a re-run on the same data must leave its
    output byte for byte, or preprocess and every model after it would run again. The Data
    Docs pages are stamped with their build time, so they are rebuilt outside the output."""
    datasets = {
        "fer2013": write(tmp_path, "fer2013", make_dataset("fer2013")),
        "ckplus": write(tmp_path, "ckplus", make_dataset("ckplus", seed=1, subjects=True)),
    }
    site = docs_site(settings(tmp_path))

    def run() -> tuple[dict[str, bytes], list[Path]]:
        report = validate(datasets, settings(tmp_path))
        assert report.data_docs == site / "index.html"
        output = {p.name: p.read_bytes() for p in report.result_json.parent.iterdir()}
        return output, sorted(p.relative_to(site) for p in site.rglob("*.html"))

    (output, pages), (again, rebuilt) = run(), run()

    assert again == output and set(output) == {"result.json", "summary.txt"}
    assert rebuilt != pages, "validation pages are filed under their run time"
    assert site.parent == settings(tmp_path).out_dir.parent
    assert (site / ".gitignore").read_text() == "*\n", "rebuilt by every run: never committed"


def _relabel(dataset: Dataset) -> Dataset:
    dataset.manifest.loc[4, "label"] = "happyy"
    return dataset


def _drop_val(dataset: Dataset) -> Dataset:
    keep = (dataset.manifest["split"] != "val").to_numpy()
    return Dataset(dataset.manifest[keep].reset_index(drop=True), dataset.pixels[keep])


def _duplicate_id(dataset: Dataset) -> Dataset:
    dataset.manifest.loc[7, "id"] = dataset.manifest.loc[6, "id"]
    return dataset


def _swap_images(dataset: Dataset) -> Dataset:
    return Dataset(dataset.manifest, dataset.pixels[[1, 0, *range(2, len(dataset.pixels))]])


def _subject_in_two_splits(dataset: Dataset) -> Dataset:
    dataset.manifest.loc[17, "subject"] = dataset.manifest.loc[0, "subject"]
    return dataset


def _darkened(dataset: Dataset) -> Dataset:
    """Every image at 70% of its brightness: what a wrong decode or gamma looks like."""
    return with_pixels(dataset, (dataset.pixels * 0.7).astype(np.uint8))


@pytest.mark.parametrize(
    ("corrupt", "check", "column", "observed"),
    [
        (_relabel, "label_domain", "label", "happyy"),
        (_drop_val, "required_splits", "split", "val"),
        (_duplicate_id, "unique_ids", "id", "ckplus-00006"),
        (_swap_images, "pixels_match_manifest", "sha256 vs pixels_sha256", "ckplus-00000"),
        (_subject_in_two_splits, "subjects_across_splits", "splits", "S000 in test, train"),
    ],
    ids=["bad-label", "empty-split", "duplicate-id", "misaligned-pixels", "subject-leak"],
)
def test_a_failed_error_check_raises_after_writing_the_report(
    tmp_path: Path,
    corrupt: Callable[[Dataset], Dataset],
    check: str,
    column: str,
    observed: str,
) -> None:
    datasets = {
        "fer2013": write(tmp_path, "fer2013", make_dataset("fer2013")),
        "ckplus": write(tmp_path, "ckplus", corrupt(make_dataset("ckplus", seed=1, subjects=True))),
    }
    out = settings(tmp_path).out_dir

    with pytest.raises(DataValidationError) as raised:
        validate(datasets, settings(tmp_path))

    message = str(raised.value)
    assert "fer2013: ok" in message
    assert "ckplus: failed: 1 error(s)" in message
    failure = next(line for line in message.splitlines() if f"error {check} " in line)
    assert f"error {check} ({column}):" in failure
    assert observed in failure
    assert message.index("ckplus:") < message.index(failure)
    assert message.splitlines()[-1].startswith("validation failed: 1 error(s)")
    result = read_json(out / "result.json")
    assert result["success"] is False
    assert result["datasets"]["fer2013"]["success"] is True
    ckplus = result["datasets"]["ckplus"]
    assert ckplus["success"] is False
    failed = [r for r in ckplus["results"] if not r["success"] and r["severity"] == "error"]
    assert [r["check"] for r in failed] == [check]
    assert observed in str(failed[0]["observed"])
    assert [f["check"] for f in result["errors"]] == [check]
    assert (out / "summary.txt").read_text().strip() == message
    assert (docs_site(settings(tmp_path)) / "index.html").is_file()


def known_faults(dataset: Dataset) -> Dataset:
    """The kinds of fault FER2013 ships with, one of each, on the small dataset."""
    pixels = dataset.pixels.copy()
    pixels[2] = 0  # a blank (all-black) image in train/happy
    pixels[15] = pixels[0]  # train/happy copied into test/sad: leakage and a label conflict
    pixels[4] = pixels[3]  # a copy within train/sad
    faulty = with_pixels(dataset, pixels)
    keep = ~((faulty.manifest["split"] == "val") & (faulty.manifest["label"] == "sad")).to_numpy()
    return Dataset(faulty.manifest[keep].reset_index(drop=True), faulty.pixels[keep])


def test_known_dataset_faults_are_warnings_with_counts_and_validation_carries_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write(tmp_path, "fer2013", known_faults(make_dataset("fer2013")))

    report = validate({"fer2013": folder}, settings(tmp_path))

    assert report.success and report.warnings == 6
    result = read_json(report.result_json)
    assert result["success"] is True and result["errors"] == []
    counts = {
        check: (f["count"], f.get("images")) for check, f in findings(result, "warning").items()
    }
    assert counts == {
        "blank_images": (1, None),
        "class_balance": (1, None),  # val has no sad image left
        "duplicate_images": (2, 4),
        "duplicates_within_split": (1, 2),
        "duplicates_across_splits": (1, 2),
        "duplicate_label_conflicts": (1, 2),
    }
    warnings = findings(result, "warning")
    assert warnings["blank_images"]["unit"] == "images" and warnings["blank_images"]["of"] == 15
    assert "fer2013-00002" in warnings["blank_images"]["message"]
    assert "val/sad (0 images)" in warnings["class_balance"]["message"]
    assert (
        "[fer2013-00000, fer2013-00015] in test, train as happy, sad"
        in (warnings["duplicates_across_splits"]["message"])
    )
    assert result["datasets"]["fer2013"]["class_counts"]["val"] == {"happy": 3, "sad": 0}
    out = capsys.readouterr().out
    assert "fer2013: passed with 6 warning(s) (25 expectations)" in out
    leak = "warning duplicates_across_splits (splits): 1 of 13 distinct images occur in more than"
    assert leak in out
    assert "validation passed with 6 warning(s)" in out


def test_severity_comes_from_params(tmp_path: Path) -> None:
    folder = write(tmp_path, "fer2013", known_faults(make_dataset("fer2013")))
    strict = settings(tmp_path, severity={"duplicates_across_splits": "error"})

    with pytest.raises(
        DataValidationError, match=r"error duplicates_across_splits \(splits\): 1 of"
    ):
        validate({"fer2013": folder}, strict)

    result = read_json(strict.out_dir / "result.json")
    assert list(findings(result, "error")) == ["duplicates_across_splits"]
    assert "blank_images" in findings(result, "warning")


def test_severity_names_must_be_checks() -> None:
    with pytest.raises(ValueError, match="unknown check.*duplicate_rows.*duplicate_images"):
        ValidateSettings(severity={"duplicate_rows": "error"})
    assert ValidateSettings(severity={"blank_images": "error"}).severity["unique_ids"] == "error"


def test_pixel_statistics_are_checked_against_a_reference_run(tmp_path: Path) -> None:
    good = write(tmp_path, "ckplus", make_dataset("ckplus", subjects=True))
    reference = write_reference({"ckplus": good}, tmp_path / "reference.json", margin=5.0)
    ranges = read_json(reference)["datasets"]["ckplus"]
    assert ranges["images"] == 18
    low, high = ranges["dataset_pixel_mean"]
    assert high - low == pytest.approx(10.0) and low < 128 < high
    with_reference = settings(tmp_path, reference=reference)

    assert validate({"ckplus": good}, with_reference).success
    dark = write(tmp_path / "dark", "ckplus", _darkened(make_dataset("ckplus", subjects=True)))
    # The built-in ranges are wide enough for any face dataset: the darker copy passes them.
    assert validate({"ckplus": dark}, settings(tmp_path)).success
    with pytest.raises(DataValidationError) as raised:
        validate({"ckplus": dark}, with_reference)

    message = str(raised.value)
    assert "error dataset_pixel_stats (pixel_mean): observed 88.7" in message
    assert f"expected {low}..{high}" in message
    warnings = findings(read_json(with_reference.out_dir / "result.json"), "warning")
    assert warnings["image_pixel_stats"]["count"] == 18


def test_emoflow_reference_records_the_ingested_datasets(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from emoflow.flows.cli import app
    from tests.conftest import write_params

    write(tmp_path, "fer2013", make_dataset("fer2013"))
    params = write_params(tmp_path, {"ingest": {"out_dir": str(tmp_path / "interim")}})
    result = CliRunner().invoke(
        app, ["reference", str(tmp_path / "reference.json"), "--params", str(params)]
    )
    assert result.exit_code == 1, "a dataset not ingested is named"
    assert (
        "ckplus/manifest.parquet: no ingested dataset here; run emoflow ingest first"
        in result.output
    )
    assert not (tmp_path / "reference.json").exists()

    write(tmp_path, "ckplus", make_dataset("ckplus", subjects=True))
    result = CliRunner().invoke(
        app, ["reference", str(tmp_path / "reference.json"), "--params", str(params)]
    )
    assert result.exit_code == 0, result.output
    assert set(read_json(tmp_path / "reference.json")["datasets"]) == {"fer2013", "ckplus"}


def test_a_reference_without_the_dataset_is_an_error(tmp_path: Path) -> None:
    good = write(tmp_path, "ckplus", make_dataset("ckplus", subjects=True))
    reference = write_reference({"ckplus": good}, tmp_path / "reference.json", margin=5.0)
    fer = write(tmp_path, "fer2013", make_dataset("fer2013"))

    with pytest.raises(DataValidationError, match=r"reference.json: no pixel ranges for fer2013"):
        validate({"fer2013": fer}, settings(tmp_path, reference=reference))
    with pytest.raises(DataValidationError, match=r"missing.json: cannot read"):
        validate({"fer2013": fer}, settings(tmp_path, reference=tmp_path / "missing.json"))


def test_a_missing_manifest_column_is_reported_as_an_error(tmp_path: Path) -> None:
    folder = write(tmp_path, "ckplus", make_dataset("ckplus"))
    manifest = pd.read_parquet(folder / MANIFEST).drop(columns=["label"])
    manifest.to_parquet(folder / MANIFEST, index=False)

    with pytest.raises(DataValidationError, match=r"ckplus: failed: 2 error\(s\), 0 warning\(s\)"):
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


@pytest.mark.realdata
def test_fer2013_faults_are_reported_as_warnings(shared_data: Path, tmp_path: Path) -> None:
    """The known faults of ../shared/data's FER2013 copy, counted in the units a person fixes.

    This copy (Training + PublicTest) has 1,273 groups of byte-identical images (2,805 rows)
    and 47 groups whose copies carry different labels; 270 groups span Training and
    PublicTest, and 466 span two splits once ingest has carved val out of Training
    (ingest.seed 2018, val_fraction 0.1).
    """
    ingest = IngestSettings()
    folder = tmp_path / "interim" / "fer2013"
    write_dataset(folder, read_fer2013_csv(shared_data / "fer2013" / "fer2013.csv.gz", ingest))

    report = validate({"fer2013": folder}, settings(tmp_path))

    assert report.success
    result = read_json(report.result_json)
    assert result["errors"] == []
    counts = {
        check: (f["count"], f.get("images")) for check, f in findings(result, "warning").items()
    }
    assert counts["blank_images"] == (12, None)
    assert counts["duplicate_images"] == (1273, 2805)
    assert counts["duplicates_across_splits"][0] == 466
    assert counts["duplicate_label_conflicts"][0] == 47
    manifest = read_dataset(folder).manifest
    spread = manifest.groupby("sha256")["split"].nunique()
    assert counts["duplicates_across_splits"][0] == (spread > 1).sum()
    assert set(counts) >= {"class_balance", "duplicates_within_split"}


def test_pixels_are_read_in_blocks_with_the_results_of_reading_them_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Statistics per block of images equal those of the whole array, rows in order."""
    from emoflow.components.validate import stage

    folder = write(tmp_path, "fer2013", make_dataset("fer2013"))
    whole = stage._image_table("fer2013", folder)
    blocks: list[int] = []
    describe = stage._describe_block

    def spy(pixels: np.ndarray) -> pd.DataFrame:
        blocks.append(len(pixels))
        return describe(pixels)

    monkeypatch.setattr(stage, "STATS_CHUNK", 4)
    monkeypatch.setattr(stage, "_describe_block", spy)
    chunked = stage._image_table("fer2013", folder)
    assert blocks == [4, 4, 4, 4, 2]
    pd.testing.assert_frame_equal(chunked, whole)
    assert (chunked["pixels_sha256"] == chunked["sha256"]).all()
    pixels = np.load(folder / PIXELS).reshape(18, -1)
    assert chunked["pixel_min"].tolist() == pixels.min(axis=1).tolist()
    assert chunked["pixel_max"].tolist() == pixels.max(axis=1).tolist()
