"""Ingest: the boundary where raw files enter, so bad input must be named precisely."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import ImageFile

from emoflow.components.artifacts import read_json
from emoflow.components.ingest.bad_records import IngestError
from emoflow.components.ingest.ckplus48 import read_ckplus48
from emoflow.components.ingest.fer2013_csv import read_fer2013_csv
from emoflow.components.ingest.splits import split_counts, subject_folds
from emoflow.components.ingest.stage import ingest
from emoflow.components.manifest import read_dataset
from emoflow.components.settings import IngestSettings

GOOD_PIXELS = " ".join(["128"] * 2304)


def fer_csv(
    path: Path, rows: list[tuple[str, str, str]], header: str = "emotion,pixels,Usage"
) -> Path:
    path.write_text(header + "\n" + "".join(f"{e},{p},{u}\n" for e, p, u in rows))
    return path


def varied_pixels(seed: int) -> str:
    return " ".join(map(str, np.random.default_rng(seed).integers(0, 256, 2304)))


def rows_for(usages: dict[str, int], codes=range(7)) -> list[tuple[str, str, str]]:
    return [
        (str(code), varied_pixels(hash((usage, code, i)) % 2**32), usage)
        for usage, n in usages.items()
        for code in codes
        for i in range(n)
    ]


def ckplus_tree(root: Path, sequences: dict[tuple[str, int, int], str]) -> Path:
    """sequences: (subject, sequence, frames) -> CK+48 folder name."""
    rng = np.random.default_rng(0)
    for (subject, seq, frames), folder in sequences.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for frame in range(1, frames + 1):
            image = rng.integers(0, 256, (48, 48), dtype=np.uint8)
            cv2.imwrite(str(root / folder / f"{subject}_{seq:03d}_{frame:08d}.png"), image)
    return root


@pytest.fixture
def settings(tmp_path: Path) -> IngestSettings:
    ck = ckplus_tree(
        tmp_path / "ck",
        {("S005", 1, 5): "happy", ("S006", 1, 5): "anger", ("S007", 2, 3): "sadness"},
    )
    return IngestSettings(fer2013=tmp_path / "fer.csv", ckplus=ck, out_dir=tmp_path / "interim")


def test_usage_maps_to_splits(settings, tmp_path):
    fer_csv(settings.fer2013, rows_for({"Training": 3, "PublicTest": 1, "PrivateTest": 1}))
    data = read_fer2013_csv(settings.fer2013, settings)
    assert data.pixels.shape == (35, 48, 48) and data.pixels.dtype == np.uint8
    assert data.manifest["split"].value_counts().to_dict() == {"train": 21, "val": 7, "test": 7}
    assert data.manifest.loc[0, "label"] == "angry"
    assert data.manifest["id"].is_unique


def test_without_private_test_public_becomes_test_and_val_is_carved(settings):
    settings = settings.model_copy(update={"val_fraction": 0.25})
    fer_csv(settings.fer2013, rows_for({"Training": 8, "PublicTest": 2}))
    manifest = read_fer2013_csv(settings.fer2013, settings).manifest
    counts = manifest.groupby(["split", "label"]).size().unstack()
    assert set(counts.index) == {"train", "val", "test"}
    assert (
        (counts.loc["val"] == 2).all()
        and (counts.loc["train"] == 6).all()
        and (counts.loc["test"] == 2).all()
    )
    again = read_fer2013_csv(settings.fer2013, settings).manifest
    assert again["split"].tolist() == manifest["split"].tolist(), "the carve must be seeded"


def test_gzip_csv_is_read(settings, tmp_path):
    plain = fer_csv(
        tmp_path / "plain.csv", rows_for({"Training": 1, "PublicTest": 1, "PrivateTest": 1})
    )
    gz = tmp_path / "fer.csv.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    assert len(read_fer2013_csv(gz, settings).manifest) == 21


@pytest.mark.parametrize(
    ("rows", "header", "message"),
    [
        (
            [("0", " ".join(["1"] * 2303), "Training")],
            None,
            r"row 0 \(line 2\): 2303 pixels, expected 2304",
        ),
        (
            [("0", GOOD_PIXELS, "Training"), ("3", "12.5 " + " ".join(["1"] * 2303), "Training")],
            None,
            r"row 1 \(line 3\): pixel '12.5' is not an integer",
        ),
        (
            [
                ("0", GOOD_PIXELS, "Training"),
                ("0", GOOD_PIXELS, "Training"),
                ("9", GOOD_PIXELS, "Training"),
            ],
            None,
            r"row 2 \(line 4\): emotion '9' is not a FER2013 code",
        ),
        (
            [("0", "300 " + " ".join(["1"] * 2303), "Training")],
            None,
            r"row 0 \(line 2\): pixel values must be 0..255",
        ),
        (
            [("0", GOOD_PIXELS, "Validation")],
            None,
            r"row 0 \(line 2\): Usage 'Validation' is not one of",
        ),
        ([("0", GOOD_PIXELS)], "emotion,pixels", r"missing column\(s\) Usage"),
    ],
    ids=[
        "2303-pixels",
        "non-integer",
        "label-9",
        "out-of-range",
        "unknown-usage",
        "no-usage-column",
    ],
)
def test_bad_csv_names_file_and_row(settings, rows, header, message):
    if header:
        settings.fer2013.write_text(header + "\n" + "".join(",".join(r) + "\n" for r in rows))
    else:
        fer_csv(settings.fer2013, rows)
    with pytest.raises(IngestError, match=message) as caught:
        read_fer2013_csv(settings.fer2013, settings)
    assert str(settings.fer2013) in str(caught.value)


def test_empty_and_missing_files(settings):
    settings.fer2013.write_text("")
    with pytest.raises(IngestError, match=r"fer\.csv: file is empty"):
        read_fer2013_csv(settings.fer2013, settings)
    settings.fer2013.write_text("emotion,pixels,Usage\n")
    with pytest.raises(IngestError, match="has a header but no rows"):
        read_fer2013_csv(settings.fer2013, settings)
    with pytest.raises(IngestError, match="file not found"):
        read_fer2013_csv(settings.fer2013.with_name("absent.csv"), settings)


def test_truncated_file_names_the_last_row(settings):
    fer_csv(settings.fer2013, rows_for({"Training": 1, "PublicTest": 1, "PrivateTest": 1}))
    text = settings.fer2013.read_text()
    settings.fer2013.write_text(text[: len(text) - 3000])
    with pytest.raises(
        IngestError, match=r"row 20 \(line 22\): empty Usage \(is the file truncated\?\)"
    ):
        read_fer2013_csv(settings.fer2013, settings)


def test_bad_input_leaves_previous_outputs_whole(settings):
    fer_csv(settings.fer2013, rows_for({"Training": 1, "PublicTest": 1, "PrivateTest": 1}))
    ingest(settings)
    before = {p: p.read_bytes() for p in settings.out_dir.rglob("*") if p.is_file()}
    fer_csv(settings.fer2013, [("0", GOOD_PIXELS, "Training"), ("9", GOOD_PIXELS, "Training")])
    with pytest.raises(IngestError):
        ingest(settings)
    after = {p: p.read_bytes() for p in settings.out_dir.rglob("*") if p.is_file()}
    assert after == before
    assert {p.name for p in settings.out_dir.iterdir()} == {"fer2013", "ckplus"}, (
        "no temporary leftovers"
    )


def test_failed_first_ingest_writes_nothing(settings):
    fer_csv(settings.fer2013, [("0", " ".join(["1"] * 2303), "Training")])
    with pytest.raises(IngestError):
        ingest(settings)
    assert not settings.out_dir.exists() or not any(settings.out_dir.iterdir())


def test_ckplus_sequences_keep_peak_frames_and_neutral_onset(settings):
    data = read_ckplus48(settings.ckplus, settings)
    manifest = data.manifest
    happy = manifest[manifest["subject"] == "S005"].sort_values("frame")
    assert happy["frame"].tolist() == [1, 3, 4, 5]
    assert happy["label"].tolist() == ["neutral", "happy", "happy", "happy"]
    short = manifest[manifest["subject"] == "S007"]
    assert short["label"].tolist() == ["sad"] * 3, "a 3-frame sequence has no separate onset"
    assert set(manifest["id"]) >= {"ckplus-S005_001_00000005"}
    for split, group in manifest.groupby("split"):
        others = set(manifest.loc[manifest["split"] != split, "subject"])
        assert not set(group["subject"]) & others, "a subject must sit in one split only"


def test_ckplus_pixels_follow_the_manifest(settings):
    data = read_ckplus48(settings.ckplus, settings)
    row = data.manifest.index[data.manifest["id"] == "ckplus-S006_001_00000002"]
    assert len(row) == 0, "middle frames are dropped"
    first = int(np.flatnonzero(data.manifest["id"] == "ckplus-S006_001_00000005")[0])
    on_disk = cv2.imread(
        str(settings.ckplus / "anger" / "S006_001_00000005.png"), cv2.IMREAD_GRAYSCALE
    )
    np.testing.assert_array_equal(data.pixels[first], on_disk)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda root: (
                (root / "boredom").mkdir()
                or cv2.imwrite(
                    str(root / "boredom" / "S009_001_00000001.png"), np.zeros((48, 48), np.uint8)
                )
            ),
            r"class folder 'boredom' is not in the CK\+48 label map",
        ),
        (
            lambda root: cv2.imwrite(
                str(root / "happy" / "S009_001_00000001.png"), np.zeros((40, 48), np.uint8)
            ),
            r"S009_001_00000001\.png: image is 48x40, expected 48x48",
        ),
        (
            lambda root: (root / "happy" / "S009_001_00000001.png").write_bytes(b"\x89PNG garbage"),
            r"S009_001_00000001\.png: cannot decode",
        ),
        (
            lambda root: cv2.imwrite(
                str(root / "happy" / "face.png"), np.zeros((48, 48), np.uint8)
            ),
            r"face\.png: file name is not S<subject>",
        ),
    ],
    ids=["unknown-class-folder", "wrong-size", "corrupt-png", "bad-name"],
)
def test_bad_ckplus_images_are_named(settings, damage, message):
    damage(settings.ckplus)
    with pytest.raises(IngestError, match=message):
        read_ckplus48(settings.ckplus, settings)


def gray_png(width: int, height: int) -> bytes:
    """An all-black 8-bit gray PNG, compressed a row at a time (144 MB of pixels at
    12000x12000, never held at once)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    compressor = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte 0, then the row's pixels
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # at 144 Mpx
def test_an_oversized_image_is_refused_from_its_header_before_decoding(settings, monkeypatch):
    big = settings.ckplus / "happy" / "S005_001_00000003.png"
    big.write_bytes(gray_png(12000, 12000))

    load = ImageFile.ImageFile.load

    def load_48x48_only(image):
        assert image.size == (48, 48), f"the {image.width}x{image.height} image was decoded"
        return load(image)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load_48x48_only)
    with pytest.raises(
        IngestError, match=r"S005_001_00000003\.png: image is 12000x12000, expected"
    ):
        read_ckplus48(settings.ckplus, settings)


@pytest.mark.parametrize("compress", [False, True], ids=["csv", "csv.gz"])
def test_a_byte_that_is_not_utf8_is_named_by_row(settings, compress):
    rows = rows_for({"Training": 2})
    rows[9] = ("0", "12 \udcff" + GOOD_PIXELS[3:], "Training")  # \udcff writes byte 0xff
    text = "emotion,pixels,Usage\n" + "".join(f"{e},{p},{u}\n" for e, p, u in rows)
    data = text.encode("utf-8", "surrogateescape")
    path = settings.fer2013.with_name("fer.csv.gz" if compress else "fer.csv")
    path.write_bytes(gzip.compress(data) if compress else data)
    with pytest.raises(
        IngestError, match=r"fer\.csv(\.gz)?: row 9 \(line 11\): byte 0xff at column 6 is not UTF-8"
    ):
        read_fer2013_csv(path, settings, chunk_rows=4)


@pytest.mark.realdata
def test_real_fer2013_counts_match_its_readme(shared_data, tmp_path):
    settings = IngestSettings(
        fer2013=shared_data / "fer2013" / "fer2013.csv.gz", ckplus=shared_data / "ckplus48"
    )
    manifest = read_fer2013_csv(settings.fer2013, settings).manifest
    counts = manifest.groupby(["split", "label"]).size().unstack()
    training = (counts.loc["train"] + counts.loc["val"]).to_dict()
    assert training == {
        "angry": 3995,
        "disgust": 436,
        "fear": 4097,
        "happy": 7215,
        "sad": 4830,
        "surprise": 3171,
        "neutral": 4965,
    }
    assert counts.loc["test"].to_dict() == {
        "angry": 467,
        "disgust": 56,
        "fear": 496,
        "happy": 895,
        "sad": 653,
        "surprise": 415,
        "neutral": 607,
    }
    assert 0.09 < counts.loc["val"].sum() / 28709 < 0.11


@pytest.mark.realdata
def test_real_ckplus48_counts_match_its_readme(shared_data):
    settings = IngestSettings(ckplus=shared_data / "ckplus48")
    manifest = read_ckplus48(settings.ckplus, settings).manifest
    assert len(manifest) == 981
    assert manifest["subject"].nunique() == 118
    assert manifest.groupby(["subject", "sequence"]).ngroups == 327
    assert manifest["label"].value_counts().to_dict() == {
        "surprise": 249,
        "happy": 207,
        "disgust": 177,
        "angry": 135,
        "sad": 84,
        "fear": 75,
        "contempt": 54,
    }


@pytest.mark.parametrize(
    ("total", "expected"),
    [
        (3, {"train": 1, "val": 1, "test": 1}),
        (118, {"train": 82, "val": 18, "test": 18}),
        (2, {"train": 2, "val": 0, "test": 0}),
    ],
)
def test_subject_split_counts_cover_every_split_when_possible(total, expected):
    assert split_counts(total, {"train": 0.7, "val": 0.15, "test": 0.15}) == expected


# --- bad records set aside (ingest.on_bad_record: skip) ------------------------------------


def test_skip_quarantines_bad_rows_and_keeps_the_rest(settings):
    rows = rows_for({"Training": 2, "PublicTest": 1, "PrivateTest": 1})
    rows[3] = ("0", " ".join(["1"] * 2303), "Training")
    rows[5] = ("9", GOOD_PIXELS, "Training")
    rows[7] = ("3", "12.5 " + " ".join(["1"] * 2303), "Training")
    fer_csv(settings.fer2013, rows)
    text = settings.fer2013.read_text()
    settings.fer2013.write_text(text[: len(text) - 3000])  # and the last row is cut short
    outputs = ingest(settings.model_copy(update={"on_bad_record": "skip"}))
    report = read_json(outputs.quarantine)
    assert report["count"] == 4
    assert [(r["record"], r["reason"]) for r in report["records"]] == [
        ("row 3 (line 5)", "2303 pixels, expected 2304"),
        ("row 5 (line 7)", "emotion '9' is not a FER2013 code 0..6"),
        ("row 7 (line 9)", "pixel '12.5' is not an integer"),
        ("row 27 (line 29)", "empty Usage (is the file truncated?)"),
    ]
    assert {r["file"] for r in report["records"]} == {str(settings.fer2013)}
    manifest = read_dataset(outputs.fer2013).manifest
    assert len(manifest) == 28 - 4
    assert not {"fer2013-00003", "fer2013-00005", "fer2013-00007", "fer2013-00027"} & set(
        manifest["id"]
    )


def test_an_error_run_removes_a_stale_quarantine_report(settings):
    fer_csv(settings.fer2013, rows_for({"Training": 1, "PublicTest": 1, "PrivateTest": 1}))
    skipped = ingest(settings.model_copy(update={"on_bad_record": "skip"}))
    assert read_json(skipped.quarantine) == {"count": 0, "records": []}
    assert ingest(settings).quarantine is None
    assert not skipped.quarantine.exists(), "a report of an earlier run must not outlive it"


# --- CK+ folds -----------------------------------------------------------------------------


def test_subject_folds_group_by_subject_and_balance_images():
    rng = np.random.default_rng(1)
    subjects = pd.Series([f"S{s:03d}" for s in range(40) for _ in range(int(rng.integers(1, 12)))])
    folds = subject_folds(subjects, 10, seed=7)
    assert set(folds) == set(range(10))
    assert (pd.Series(folds).groupby(subjects).nunique() == 1).all(), "a subject sits in one fold"
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= 11, "folds differ by at most one subject's images"
    assert (subject_folds(subjects, 10, seed=7) == folds).all()
    assert (subject_folds(subjects, 10, seed=8) != folds).any(), "the seed changes the folds"


def test_written_manifests_carry_folds(settings):
    fer_csv(settings.fer2013, rows_for({"Training": 1, "PublicTest": 1, "PrivateTest": 1}))
    outputs = ingest(settings)
    assert (read_dataset(outputs.fer2013).manifest["fold"] == -1).all()
    ck = read_dataset(outputs.ckplus).manifest
    assert ck["fold"].between(0, 9).all() and (ck.groupby("subject")["fold"].nunique() == 1).all()


@pytest.mark.realdata
def test_real_ckplus48_ten_folds_by_subject(shared_data):
    manifest = read_ckplus48(shared_data / "ckplus48", IngestSettings()).manifest
    assert sorted(manifest["fold"].unique()) == list(range(10))
    assert (manifest.groupby("subject")["fold"].nunique() == 1).all()
    per_fold = manifest.groupby("fold").agg(images=("id", "size"), subjects=("subject", "nunique"))
    assert (
        per_fold["images"].sum() == 981
        and per_fold["images"].max() - per_fold["images"].min() <= 11
    )
    assert per_fold["subjects"].min() >= 10


def test_skip_quarantines_bad_ckplus48_images(settings):
    (settings.ckplus / "boredom").mkdir()
    cv2.imwrite(
        str(settings.ckplus / "boredom" / "S009_001_00000001.png"), np.zeros((48, 48), np.uint8)
    )
    (settings.ckplus / "happy" / "S005_001_00000005.png").write_bytes(b"\x89PNG garbage")
    fer_csv(settings.fer2013, rows_for({"Training": 1, "PublicTest": 1, "PrivateTest": 1}))
    outputs = ingest(settings.model_copy(update={"on_bad_record": "skip"}))
    records = read_json(outputs.quarantine)["records"]
    assert [(Path(r["file"]).name, r["reason"].split(" (")[0]) for r in records] == [
        ("boredom", "class folder 'boredom' is not in the CK+48 label map"),
        ("S005_001_00000005.png", "cannot decode the image"),
    ]
    ids = set(read_dataset(outputs.ckplus).manifest["id"])
    assert "ckplus-S005_001_00000004" in ids and "ckplus-S005_001_00000005" not in ids
    assert not any(i.startswith("ckplus-S009") for i in ids)
