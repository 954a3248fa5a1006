"""The built-in sample: the exact file formats ingest reads, determinism, atomic writes, and
faces that change with the emotion rather than only with noise."""

from __future__ import annotations

import itertools
import re
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from emoflow.components import labels
from emoflow.components.ingest.ckplus48 import read_ckplus48
from emoflow.components.ingest.fer2013_csv import read_fer2013_csv
from emoflow.components.sample.generate import (
    USAGES,
    SampleFiles,
    generate_sample,
    write_large_fer2013,
)
from emoflow.components.settings import IngestSettings, SampleSettings

CKPLUS_NAME = re.compile(r"^S(\d{3})_(\d{3})_(\d{8})\.png$")
# 10 per class gives every usage at the default 0.8/0.1/0.1 fractions: 8/1/1.
SMALL = {"images_per_class": 10, "ckplus_subjects": 2, "ckplus_frames": 3}


def small_settings(out_dir: Path, **overrides: object) -> SampleSettings:
    return SampleSettings(out_dir=out_dir, **{**SMALL, **overrides})


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleFiles:
    return generate_sample(small_settings(tmp_path_factory.mktemp("sample") / "sample"))


def csv_rows(csv: Path) -> list[list[str]]:
    return [line.split(",") for line in csv.read_text().splitlines()[1:]]


def file_tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def ckplus_frames(root: Path) -> dict[tuple[str, str], dict[int, Path]]:
    """(subject, sequence) -> frame number -> file."""
    sequences: dict[tuple[str, str], dict[int, Path]] = {}
    for png in root.glob("*/*.png"):
        subject, sequence, frame = CKPLUS_NAME.match(png.name).groups()
        sequences.setdefault((subject, sequence), {})[int(frame)] = png
    return sequences


def read_gray(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED).astype(np.float32)


def face_difference(a: np.ndarray, b: np.ndarray) -> float:
    """How much the facial parts differ: robust to sensor noise, blind to unchanged pixels.

    A 3x3 blur averages the noise away; the 99th percentile looks at the ~20 pixels that
    changed most, because an expression moves a mouth and brows, not the whole image.
    """
    return float(np.percentile(np.abs(cv2.blur(a, (3, 3)) - cv2.blur(b, (3, 3))), 99))


# --- FER2013 csv ---------------------------------------------------------------------------


def test_returns_the_paths_it_wrote(sample: SampleFiles) -> None:
    out_dir = sample.fer2013_csv.parent
    assert sample == SampleFiles(out_dir / "fer2013.csv", out_dir / "ckplus48")
    assert sample.fer2013_csv.is_file() and sample.ckplus_dir.is_dir()


def test_csv_is_in_the_canonical_kaggle_format(sample: SampleFiles) -> None:
    assert sample.fer2013_csv.read_text().splitlines()[0] == "emotion,pixels,Usage"
    for emotion, pixels, usage in csv_rows(sample.fer2013_csv):
        assert int(emotion) in labels.FER2013_CODES
        tokens = pixels.split(" ")
        assert len(tokens) == 48 * 48 and all(t.isdigit() for t in tokens)
        assert 0 <= min(map(int, tokens)) and max(map(int, tokens)) <= 255
        assert usage in USAGES


def test_every_class_is_split_by_the_usage_fractions(sample: SampleFiles) -> None:
    counts = Counter((int(emotion), usage) for emotion, _, usage in csv_rows(sample.fer2013_csv))
    expected = {"Training": 8, "PublicTest": 1, "PrivateTest": 1}
    assert counts == {(code, u): n for code in labels.FER2013_CODES for u, n in expected.items()}


def test_rows_come_in_usage_blocks_with_the_classes_mixed(sample: SampleFiles) -> None:
    rows = csv_rows(sample.fer2013_csv)
    usages = [usage for _, _, usage in rows]
    assert usages == sorted(usages, key=USAGES.index)
    training = [int(emotion) for emotion, _, usage in rows if usage == "Training"]
    class_changes = sum(a != b for a, b in itertools.pairwise(training))
    assert class_changes > 2 * len(labels.FER2013_CODES)  # not grouped by class


@pytest.mark.parametrize(
    ("fractions", "expected"),
    [
        # 3.5 / 1.75 / 1.75: the two largest remainders get the two left-over images.
        ({"Training": 0.5, "PublicTest": 0.25, "PrivateTest": 0.25}, [3, 2, 2]),
        # Without PrivateTest, like many circulating copies of FER2013.
        ({"Training": 0.75, "PublicTest": 0.25}, [5, 2, 0]),
    ],
)
def test_uneven_fractions_round_to_whole_images(
    tmp_path: Path, fractions: dict[str, float], expected: list[int]
) -> None:
    settings = small_settings(tmp_path / "s", images_per_class=7, usage_fractions=fractions)
    rows = csv_rows(generate_sample(settings).fer2013_csv)
    for code in labels.FER2013_CODES:
        usages = Counter(usage for emotion, _, usage in rows if int(emotion) == code)
        assert [usages[u] for u in USAGES] == expected


# --- CK+48 folders -------------------------------------------------------------------------


def test_ckplus48_layout(sample: SampleFiles) -> None:
    root = sample.ckplus_dir
    assert {p.name for p in root.iterdir()} == set(labels.CKPLUS48_FOLDERS)
    assert all(CKPLUS_NAME.match(p.name) for p in root.rglob("*.png"))
    sequences = ckplus_frames(root)
    subjects = {subject for subject, _ in sequences}
    assert subjects == {"005", "006"}
    for subject in subjects:
        numbers = sorted(int(seq) for s, seq in sequences if s == subject)
        assert numbers == list(range(1, len(labels.CKPLUS48_FOLDERS) + 1))
    for frames in sequences.values():
        assert sorted(frames) == [1, 2, 3]
        assert len({png.parent.name for png in frames.values()}) == 1  # one class per sequence


def test_ckplus48_images_are_8bit_grayscale_48x48(sample: SampleFiles) -> None:
    for png in sample.ckplus_dir.rglob("*.png"):
        image = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
        assert image.shape == (48, 48) and image.dtype == np.uint8


def test_each_subject_has_one_sequence_per_class(sample: SampleFiles) -> None:
    for folder in labels.CKPLUS48_FOLDERS:
        subjects = Counter(p.name[1:4] for p in (sample.ckplus_dir / folder).glob("*_00000001.png"))
        assert subjects == {"005": 1, "006": 1}


# --- Behaviour: expressions, not noise, tell the images apart ------------------------------


def test_sequences_start_neutral_and_end_at_distinct_peaks(sample: SampleFiles) -> None:
    """One subject, one session: only the expression differs between sequences.

    Measured on several seeds: first frames differ by at most ~3 (noise), peaks pairwise by
    at least ~43, a sequence's first and last frame by at least ~18 (contempt is subtle).
    """
    sequences = ckplus_frames(sample.ckplus_dir)
    for subject in {"005", "006"}:
        runs = [frames for (s, _), frames in sorted(sequences.items()) if s == subject]
        first = [read_gray(frames[1]) for frames in runs]
        last = [read_gray(frames[3]) for frames in runs]
        assert max(face_difference(a, b) for a, b in itertools.combinations(first, 2)) < 6
        assert min(face_difference(a, b) for a, b in itertools.combinations(last, 2)) > 25
        assert min(face_difference(a, b) for a, b in zip(first, last)) > 10


def test_fer2013_images_are_all_different(sample: SampleFiles) -> None:
    pixels = [pixels for _, pixels, _ in csv_rows(sample.fer2013_csv)]
    assert len(set(pixels)) == len(pixels)


# --- Determinism and atomic writes ---------------------------------------------------------


def test_same_settings_give_identical_bytes(sample: SampleFiles, tmp_path: Path) -> None:
    again = generate_sample(small_settings(tmp_path / "again"))
    assert file_tree(again.fer2013_csv.parent) == file_tree(sample.fer2013_csv.parent)


def test_another_seed_gives_other_images(sample: SampleFiles, tmp_path: Path) -> None:
    other = generate_sample(small_settings(tmp_path / "other", seed=7))
    assert other.fer2013_csv.read_bytes() != sample.fer2013_csv.read_bytes()
    ours = set(file_tree(sample.ckplus_dir).values())
    assert not ours & set(file_tree(other.ckplus_dir).values())


def test_a_failed_run_leaves_the_previous_sample(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out_dir = tmp_path / "sample"
    generate_sample(small_settings(out_dir))
    before = file_tree(out_dir)

    def fail(*_: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr("emoflow.components.sample.generate._write_ckplus48", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        generate_sample(small_settings(out_dir, seed=7))
    assert file_tree(out_dir) == before
    assert [p.name for p in tmp_path.iterdir()] == ["sample"]  # no temporary folder left


# --- The consumer ---------------------------------------------------------------------------


def test_ingest_reads_the_sample(sample: SampleFiles) -> None:
    settings = IngestSettings(fer2013=sample.fer2013_csv, ckplus=sample.ckplus_dir)
    fer = read_fer2013_csv(sample.fer2013_csv, settings)
    assert len(fer.manifest) == 7 * SMALL["images_per_class"]
    assert set(fer.manifest["label"]) == set(labels.FER2013_CODES.values())
    ckplus = read_ckplus48(sample.ckplus_dir, settings)
    assert set(ckplus.manifest["label"]) == set(labels.CKPLUS48_FOLDERS.values())


# --- The fast path for large csv files (bench/scale.py) --------------------------------------


def test_large_csv_is_fer2013_format_deterministic_and_distinct(tmp_path: Path) -> None:
    first = write_large_fer2013(tmp_path / "a.csv", 50, seed=3)
    assert first.read_text().splitlines()[0] == "emotion,pixels,Usage"
    assert write_large_fer2013(tmp_path / "b.csv", 50, seed=3).read_bytes() == first.read_bytes()
    assert write_large_fer2013(tmp_path / "c.csv", 50, seed=4).read_bytes() != first.read_bytes()
    rows = csv_rows(first)
    assert [usage for _, _, usage in rows] == ["Training"] * 40 + ["PublicTest"] * 5 + [
        "PrivateTest"
    ] * 5
    fer = read_fer2013_csv(first, IngestSettings(fer2013=first))
    assert len(fer.manifest) == 50 and fer.manifest["sha256"].is_unique
    assert fer.manifest["pixel_std"].gt(0).all()


def test_large_csv_already_there_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "fer2013-50.csv"
    path.write_text("emotion,pixels,Usage\n")
    assert write_large_fer2013(path, 50).read_text() == "emotion,pixels,Usage\n"
