"""The TFDS builders: built from small manual dirs by download_and_prepare, read back by tfds."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from test_ingest import ckplus_tree, fer_csv, rows_for
from test_readers_ferplus import write_votes

from emoflow.components.ingest.ckplus48 import read_ckplus48
from emoflow.components.ingest.fer2013_csv import read_fer2013_csv
from emoflow.components.ingest.tfds_builders import CkPlus, Fer2013
from emoflow.components.labels import CANONICAL
from emoflow.components.settings import IngestSettings


def build(builder_class, manual: Path, data_dir: Path, config: str | None = None):
    builder = (
        builder_class(data_dir=str(data_dir), config=config)
        if config
        else builder_class(data_dir=str(data_dir))
    )
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual))
    )
    return builder


def as_arrays(dataset) -> dict[str, dict[str, object]]:
    return {example["id"].decode(): example for example in tfds.as_numpy(dataset)}


def test_fer2013_builds_from_the_csv_and_reads_back(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    csv = fer_csv(manual / "fer2013.csv", rows_for({"Training": 10, "PublicTest": 1}))
    expected = read_fer2013_csv(csv, IngestSettings(fer2013=csv))
    build(Fer2013, manual, tmp_path / "tfds")

    loaded = tfds.load("fer2013", data_dir=str(tmp_path / "tfds"), split=["train", "val", "test"])
    counts = {split: sum(1 for _ in ds) for split, ds in zip(["train", "val", "test"], loaded)}
    assert counts == expected.manifest["split"].value_counts().to_dict()

    test = as_arrays(loaded[2])
    row = int(np.flatnonzero(expected.manifest["split"] == "test")[0])
    example = test[expected.manifest.at[row, "id"]]
    assert example["image"].shape == (48, 48, 1) and example["image"].dtype == np.uint8
    np.testing.assert_array_equal(example["image"][..., 0], expected.pixels[row])
    assert CANONICAL[example["label"]] == expected.manifest.at[row, "label"]


def test_fer2013_ferplus_config_takes_the_vote_labels(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    fer_csv(manual / "fer2013.csv", rows_for({"Training": 1, "PublicTest": 1}, codes=[0, 3]))
    votes = {
        "Training": (0, 10, 0, 0, 0, 0, 0, 0, 0, 0),
        "PublicTest": (0, 0, 0, 0, 3, 0, 0, 7, 0, 0),
    }
    write_votes(
        manual / "fer2013new.csv",
        [
            (u, f"fer{i:07d}.png", votes[u])
            for i, u in enumerate(["Training"] * 2 + ["PublicTest"] * 2)
        ],
    )
    builder = build(Fer2013, manual, tmp_path / "tfds", config="ferplus")
    test = as_arrays(builder.as_dataset(split="test"))
    assert {CANONICAL[e["label"]] for e in test.values()} == {"contempt"}
    assert builder.info.features["label"].names == list(CANONICAL)


def test_ck_plus_builds_from_ckplus48_and_reads_back(tmp_path):
    manual = ckplus_tree(
        tmp_path / "manual",
        {
            (f"S{s:03d}", 1, 4): folder
            for s, folder in zip(
                range(5, 12),
                ["happy", "anger", "fear", "sadness", "surprise", "disgust", "contempt"],
            )
        },
    )
    expected = read_ckplus48(manual, IngestSettings(ckplus=manual))
    builder = build(CkPlus, manual, tmp_path / "tfds")
    assert {s: builder.info.splits[s].num_examples for s in ("train", "val", "test")} == (
        expected.manifest["split"].value_counts().to_dict()
    )
    read = {}
    for split in ("train", "val", "test"):
        read |= as_arrays(builder.as_dataset(split=split))
    assert set(read) == set(expected.manifest["id"])
    for row, record in expected.manifest.iterrows():
        example = read[record["id"]]
        np.testing.assert_array_equal(example["image"][..., 0], expected.pixels[row])
        assert CANONICAL[example["label"]] == record["label"]
        assert (
            example["fold"] == record["fold"] and example["subject"].decode() == record["subject"]
        )


def test_an_empty_manual_dir_says_what_to_put_there(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "README.txt").write_text("not the data")
    with pytest.raises(Exception, match=r"holds neither fer2013\.csv\.gz nor fer2013\.csv"):
        build(Fer2013, manual, tmp_path / "tfds")
    shutil.rmtree(manual)
    with pytest.raises(Exception, match="Download FER2013 from Kaggle"):
        build(Fer2013, manual, tmp_path / "tfds")
