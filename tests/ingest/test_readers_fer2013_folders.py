"""FER2013 in Kaggle's image-folder layout: train|test/<class>/*.png|jpg."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_ingest import ckplus_tree

from emoflow.components.artifacts import read_json
from emoflow.components.ingest.bad_records import IngestError
from emoflow.components.ingest.stage import ingest, read_fer2013
from emoflow.components.labels import FER2013_FOLDERS
from emoflow.components.manifest import read_dataset
from emoflow.components.settings import IngestSettings


def image(seed: int, shape: tuple[int, int] = (48, 48)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def kaggle_tree(root: Path, per_class: dict[str, int]) -> Path:
    """``per_class``: split folder -> images per class; PNGs in train, JPGs in test as on Kaggle."""
    for split, count in per_class.items():
        for c, name in enumerate(FER2013_FOLDERS):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                suffix = "png" if split == "train" else "jpg"
                cv2.imwrite(
                    str(root / split / name / f"{split}_{c}{i:03d}.{suffix}"), image(c * 1000 + i)
                )
    return root


@pytest.fixture
def settings(tmp_path: Path) -> IngestSettings:
    return IngestSettings(
        fer2013=kaggle_tree(tmp_path / "fer", {"train": 10, "test": 2}),
        ckplus=ckplus_tree(
            tmp_path / "ck",
            {("S005", 1, 4): "happy", ("S006", 1, 4): "anger", ("S007", 1, 4): "fear"},
        ),
        out_dir=tmp_path / "interim",
        val_fraction=0.2,
    )


def test_train_is_carved_into_train_and_val_and_test_stays(settings):
    data = read_fer2013(settings.fer2013, settings)
    counts = data.manifest.groupby(["split", "label"]).size().unstack()
    assert (
        (counts.loc["train"] == 8).all()
        and (counts.loc["val"] == 2).all()
        and (counts.loc["test"] == 2).all()
    )
    assert set(counts.columns) == set(FER2013_FOLDERS)
    again = read_fer2013(settings.fer2013, settings).manifest
    assert again["split"].tolist() == data.manifest["split"].tolist(), "the carve must be seeded"


def test_pixels_ids_and_sources_follow_the_files(settings):
    data = read_fer2013(settings.fer2013, settings)
    row = int(np.flatnonzero(data.manifest["source"] == "train/fear/train_2003.png")[0])
    np.testing.assert_array_equal(data.pixels[row], image(2003))
    assert data.manifest.at[row, "id"] == "fer2013-train/fear/train_2003"
    assert data.manifest.at[row, "label"] == "fear"
    jpg = int(np.flatnonzero(data.manifest["source"] == "test/sad/test_4001.jpg")[0])
    assert np.abs(data.pixels[jpg].astype(int) - image(4001)).mean() < 40, "JPEG is lossy but close"
    assert data.manifest["id"].is_unique


def test_ferplus_cannot_be_joined_to_folders(settings, tmp_path):
    settings = settings.model_copy(update={"ferplus": tmp_path / "fer2013new.csv"})
    with pytest.raises(IngestError, match="is an image folder, which has no rows"):
        read_fer2013(settings.fer2013, settings)


def test_a_folder_without_test_is_not_the_kaggle_layout(tmp_path):
    root = kaggle_tree(tmp_path / "fer", {"train": 1})
    with pytest.raises(IngestError, match=r"no test folder"):
        read_fer2013(root, IngestSettings(fer2013=root))


def _truncated_jpg(root: Path) -> str:
    path = root / "test" / "happy" / "cut.jpg"
    cv2.imwrite(str(path), image(1))
    path.write_bytes(path.read_bytes()[:300])
    return "cut.jpg"


def _corrupt_png(root: Path) -> str:
    (root / "train" / "happy" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return "bad.png"


def _unreadable(root: Path) -> str:
    (root / "train" / "sad" / "gone.png").symlink_to(root / "nowhere.png")
    return "gone.png"


def _wrong_size(root: Path) -> str:
    cv2.imwrite(str(root / "train" / "angry" / "big.png"), image(3, (64, 48)))
    return "big.png"


def _unknown_class(root: Path) -> str:
    (root / "train" / "contempt").mkdir()
    cv2.imwrite(str(root / "train" / "contempt" / "c.png"), image(5))
    return "contempt"


BAD_IMAGES = {
    "truncated-jpg": (_truncated_jpg, r"cut\.jpg: cannot decode the image \(.*[Tt]runcated"),
    "corrupt-png": (_corrupt_png, r"bad\.png: cannot decode the image"),
    "unreadable": (_unreadable, r"gone\.png: cannot decode the image \(\[Errno 2\]"),
    "wrong-size": (_wrong_size, r"big\.png: image is 48x64, expected 48x48"),
    "unknown-class-folder": (
        _unknown_class,
        r"train/contempt: class folder 'contempt' is not in the FER2013 label map",
    ),
}


@pytest.mark.parametrize("damage", list(BAD_IMAGES), ids=list(BAD_IMAGES))
def test_bad_images_are_named_and_nothing_is_written(settings, damage):
    make, message = BAD_IMAGES[damage]
    make(settings.fer2013)
    with pytest.raises(IngestError, match=message):
        ingest(settings)
    assert not settings.out_dir.exists() or not any(settings.out_dir.iterdir())


@pytest.mark.parametrize("damage", list(BAD_IMAGES), ids=list(BAD_IMAGES))
def test_skip_quarantines_bad_images_and_keeps_the_rest(settings, damage):
    make, message = BAD_IMAGES[damage]
    name = make(settings.fer2013)
    outputs = ingest(settings.model_copy(update={"on_bad_record": "skip"}))
    report = read_json(outputs.quarantine)
    assert report["count"] == 1
    (record,) = report["records"]
    assert record["file"].endswith(name) and record["record"] == ""
    assert re.search(message, f"{record['file']}: {record['reason']}")
    manifest = read_dataset(outputs.fer2013).manifest
    assert len(manifest) == 7 * 12, "every good image is kept"
    assert not manifest["source"].str.contains(name).any()
