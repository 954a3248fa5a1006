"""The original CK+ layout (full frames + Emotion/*.txt), built here from 48x48 face crops.

The crops are the real CK+48 ones where ../shared/data exists and drawn faces
(components.sample.generate) otherwise. Each is scaled up and pasted into a 640x490 frame, so the
reader must find the face again with OpenCV and crop it back to 48x48.
"""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import SHARED_DATA
from test_ingest import fer_csv, rows_for

from emoflow.components import labels
from emoflow.components.artifacts import read_json
from emoflow.components.ingest.bad_records import IngestError
from emoflow.components.ingest.ckplus_crop import find_face
from emoflow.components.ingest.stage import ingest, read_ckplus
from emoflow.components.manifest import read_dataset
from emoflow.components.sample.generate import generate_sample
from emoflow.components.settings import IngestSettings, SampleSettings

FRAME_SHAPE = (490, 640)
FACE_SIDE = 192
FACE_AT = (150, 224)  # row, column of the pasted face's top-left corner
CODE_OF = {name: code for code, name in labels.CKPLUS_CODES.items()}

Sequences = dict[tuple[str, str], tuple[str, list[np.ndarray]]]


@pytest.fixture(scope="module")
def crops(tmp_path_factory: pytest.TempPathFactory) -> Sequences:
    """Four sequences of three peak crops each: (subject, sequence) -> (label, crops).

    The cascade misses or misplaces about one drawn (cartoon) face in five, so only
    sequences whose every frame it finds where it was pasted are used; for the real crops
    that is the first four.
    """
    root = SHARED_DATA / "ckplus48"
    if not root.is_dir():
        root = generate_sample(
            SampleSettings(
                out_dir=tmp_path_factory.mktemp("sample"),
                images_per_class=3,
                ckplus_subjects=6,
                ckplus_frames=3,
            )
        ).ckplus_dir
    groups: dict[tuple[str, str], list[Path]] = {}
    for png in sorted(root.glob("*/*.png")):
        subject, sequence, _ = png.stem.split("_")
        groups.setdefault((subject, sequence), []).append(png)
    chosen: Sequences = {}
    for key in sorted(groups):
        frames = [cv2.imread(str(png), cv2.IMREAD_GRAYSCALE) for png in groups[key]]
        if all(found_where_pasted(full_frame(crop)) for crop in frames):
            chosen[key] = (labels.CKPLUS48_FOLDERS[groups[key][0].parent.name], frames)
        if len(chosen) == 4:
            return chosen
    raise AssertionError(f"fewer than four usable sequences in {root}")


def found_where_pasted(frame: np.ndarray) -> bool:
    """The cascade's face overlaps the pasted square by at least 85% (intersection/union)."""
    box = find_face(frame)
    if box is None:
        return False
    x, y, w, h = box
    top, left = FACE_AT
    overlap_w = max(0, min(x + w, left + FACE_SIDE) - max(x, left))
    overlap_h = max(0, min(y + h, top + FACE_SIDE) - max(y, top))
    inter = overlap_w * overlap_h
    return inter / (w * h + FACE_SIDE**2 - inter) >= 0.85


def full_frame(crop: np.ndarray) -> np.ndarray:
    """The crop enlarged to a CK+-sized face on a plain background, as a camera frame."""
    frame = np.full(FRAME_SHAPE, int(np.median(crop[0])), dtype=np.uint8)
    top, left = FACE_AT
    frame[top : top + FACE_SIDE, left : left + FACE_SIDE] = cv2.resize(
        crop, (FACE_SIDE, FACE_SIDE), interpolation=cv2.INTER_CUBIC
    )
    return frame


def original_tree(root: Path, sequences: Sequences) -> Path:
    """Frames 1..5 per sequence (1 and 2 repeat the first crop), the emotion file on frame 5."""
    for (subject, sequence), (label, peak) in sequences.items():
        frames_dir = root / "cohn-kanade-images" / subject / sequence
        labels_dir = root / "Emotion" / subject / sequence
        frames_dir.mkdir(parents=True)
        labels_dir.mkdir(parents=True)
        for number, crop in enumerate([peak[0], peak[0], *peak], start=1):
            cv2.imwrite(
                str(frames_dir / f"{subject}_{sequence}_{number:08d}.png"), full_frame(crop)
            )
        (labels_dir / f"{subject}_{sequence}_00000005_emotion.txt").write_text(
            f"   {CODE_OF[label]:.7e}\n"
        )
    unlabelled = root / "cohn-kanade-images" / "S000" / "001"
    unlabelled.mkdir(parents=True)
    cv2.imwrite(
        str(unlabelled / "S000_001_00000001.png"), full_frame(next(iter(sequences.values()))[1][0])
    )
    (root / "Emotion" / "S000" / "001").mkdir(parents=True)  # CK+ has label folders without a label
    return root


@pytest.fixture
def settings(tmp_path: Path, crops: Sequences) -> IngestSettings:
    fer_csv(tmp_path / "fer.csv", rows_for({"Training": 1, "PublicTest": 1, "PrivateTest": 1}))
    return IngestSettings(
        fer2013=tmp_path / "fer.csv",
        ckplus=original_tree(tmp_path / "CK+", crops),
        out_dir=tmp_path / "interim",
    )


def test_labelled_sequences_keep_peak_frames_and_a_neutral_onset(settings, crops):
    manifest = read_ckplus(settings.ckplus, settings).manifest
    assert len(manifest) == 4 * len(crops), "frames 1, 3, 4, 5 of each labelled sequence"
    for (subject, sequence), (label, _) in crops.items():
        seq = manifest[(manifest["subject"] == subject) & (manifest["sequence"] == sequence)]
        assert seq["frame"].tolist() == [1, 3, 4, 5]
        assert seq["label"].tolist() == ["neutral", label, label, label]
        assert seq["id"].iloc[-1] == f"ckplus-{subject}_{sequence}_00000005"
    assert "S000" not in set(manifest["subject"]), "unlabelled sequences are left out"
    assert manifest["source"].iloc[0].startswith("cohn-kanade-images/")


def test_faces_are_found_and_cropped_back_to_48x48(settings, crops):
    data = read_ckplus(settings.ckplus, settings)
    assert data.pixels.shape == (len(data.manifest), 48, 48) and data.pixels.dtype == np.uint8
    for (subject, sequence), (_, peak) in crops.items():
        row = int(np.flatnonzero(data.manifest["id"] == f"ckplus-{subject}_{sequence}_00000005")[0])
        found, source = data.pixels[row].astype(float).ravel(), peak[-1].astype(float).ravel()
        # The cascade's box is not the pasted square to the pixel, so compare loosely; a crop
        # of the whole frame would show the face at 40% size and fail.
        assert np.corrcoef(found, source)[0, 1] > 0.5
        assert abs(found.mean() - source.mean()) < 25


def test_splits_and_folds_are_by_subject(settings):
    manifest = read_ckplus(settings.ckplus, settings).manifest
    assert (manifest.groupby("subject")["split"].nunique() == 1).all()
    assert (manifest.groupby("subject")["fold"].nunique() == 1).all()
    assert manifest["fold"].between(0, settings.ckplus_folds - 1).all()


def test_a_frame_without_a_face_is_named_or_center_cropped(settings, crops):
    (subject, sequence), _ = next(iter(crops.items()))
    blank = (
        settings.ckplus
        / "cohn-kanade-images"
        / subject
        / sequence
        / f"{subject}_{sequence}_00000004.png"
    )
    cv2.imwrite(str(blank), np.full(FRAME_SHAPE, 128, np.uint8))
    with pytest.raises(
        IngestError, match=rf"{blank.name}: no face found by OpenCV's frontal-face Haar cascade"
    ):
        read_ckplus(settings.ckplus, settings)
    data = read_ckplus(
        settings.ckplus, settings.model_copy(update={"ckplus_no_face": "center_crop"})
    )
    row = int(np.flatnonzero(data.manifest["id"] == f"ckplus-{blank.stem}")[0])
    assert (data.pixels[row] == 128).all()


def _no_frames(root: Path, subject: str, sequence: str) -> str:
    for png in (root / "cohn-kanade-images" / subject / sequence).glob("*.png"):
        png.unlink()
    return (
        rf"cohn-kanade-images/{subject}/{sequence}: sequence has no frames \(\*\.png\), "
        rf"yet {subject}_{sequence}_00000005_emotion\.txt labels it"
    )


def _bad_code(root: Path, subject: str, sequence: str) -> str:
    (
        root / "Emotion" / subject / sequence / f"{subject}_{sequence}_00000005_emotion.txt"
    ).write_text("   9.0000000e+00\n")
    return (
        rf"{subject}_{sequence}_00000005_emotion\.txt: emotion code '9\.0000000e\+00' "
        r"is not a CK\+ code \(0 neutral, 1 angry"
    )


def _not_a_number(root: Path, subject: str, sequence: str) -> str:
    (
        root / "Emotion" / subject / sequence / f"{subject}_{sequence}_00000005_emotion.txt"
    ).write_text("happy\n")
    return rf"{subject}_{sequence}_00000005_emotion\.txt: emotion code 'happy' is not a CK\+ code"


def _two_label_files(root: Path, subject: str, sequence: str) -> str:
    (
        root / "Emotion" / subject / sequence / f"{subject}_{sequence}_00000004_emotion.txt"
    ).write_text("1\n")
    return rf"Emotion/{subject}/{sequence}: 2 emotion files .*, expected one per sequence"


def _corrupt_frame(root: Path, subject: str, sequence: str) -> str:
    (
        root / "cohn-kanade-images" / subject / sequence / f"{subject}_{sequence}_00000005.png"
    ).write_bytes(b"\x89PNG\r\n")
    return rf"{subject}_{sequence}_00000005\.png: cannot decode the image"


BAD_SEQUENCES = {
    "sequence-without-frames": (_no_frames, 4),
    "emotion-code-9": (_bad_code, 4),
    "emotion-not-a-number": (_not_a_number, 4),
    "two-emotion-files": (_two_label_files, 4),
    "corrupt-frame": (_corrupt_frame, 1),
}


@pytest.mark.parametrize("damage", list(BAD_SEQUENCES), ids=list(BAD_SEQUENCES))
def test_bad_sequences_are_named_or_quarantined(settings, crops, damage):
    make, lost = BAD_SEQUENCES[damage]
    (subject, sequence), _ = next(iter(crops.items()))
    message = make(settings.ckplus, subject, sequence)
    with pytest.raises(IngestError, match=message):
        ingest(settings)
    assert not settings.out_dir.exists() or not any(settings.out_dir.iterdir()), (
        "nothing half-written"
    )

    outputs = ingest(settings.model_copy(update={"on_bad_record": "skip"}))
    (record,) = read_json(outputs.quarantine)["records"]
    assert re.search(message, f"{record['file']}: {record['reason']}")
    assert len(read_dataset(outputs.ckplus).manifest) == 4 * len(crops) - lost


def test_original_layout_needs_its_emotion_folder(settings, tmp_path):
    (settings.ckplus / "Emotion").rename(tmp_path / "elsewhere")
    with pytest.raises(IngestError, match="holds cohn-kanade-images/ but no Emotion/ folder"):
        read_ckplus(settings.ckplus, settings)
