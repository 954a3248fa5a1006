"""Preprocess artifacts and the training input pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from emoflow.components.manifest import Dataset, describe_pixels, read_dataset, write_dataset
from emoflow.components.model_input import to_model_input
from emoflow.components.records import preprocess as preprocess_module
from emoflow.components.records.augment import augment_image
from emoflow.components.records.input_pipelines import scoring_batches, training_batches
from emoflow.components.records.preprocess import preprocess
from emoflow.components.records.tfrecords import read_examples, write_split
from emoflow.components.settings import AugmentSettings, PreprocessSettings

LABELS = ["angry", "happy", "neutral", "happy", "fear", "angry"]


@pytest.fixture
def shards(tmp_path):
    pixels = np.random.default_rng(1).integers(0, 256, (len(LABELS), 48, 48), dtype=np.uint8)
    manifest = pd.DataFrame(
        {
            "id": [f"img-{i}" for i in range(len(LABELS))],
            "label": LABELS,
            "split": ["train"] * 4 + ["test"] * 2,
        }
    )
    dataset = Dataset(pd.concat([manifest, describe_pixels(pixels)], axis=1), pixels)
    written = write_split(dataset, "train", tmp_path, examples_per_shard=3)
    write_split(dataset, "test", tmp_path, examples_per_shard=3)
    return tmp_path, pixels, written


def test_shards_round_trip_pixels_and_labels(shards):
    folder, pixels, written = shards
    assert [p.name for p in written] == [
        "train-00000-of-00002.tfrecord.gz",
        "train-00001-of-00002.tfrecord.gz",
    ]
    emotions = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    read = sorted(
        read_examples(folder, ["train", "test"], emotions).as_numpy_iterator(), key=lambda r: r[2]
    )
    assert [ident.decode() for _, _, ident in read] == [f"img-{i}" for i in range(6)]
    assert [emotions[label] for _, label, _ in read] == LABELS
    np.testing.assert_array_equal(np.stack([image[..., 0] for image, _, _ in read]), pixels)


def test_emotion_set_drops_other_classes_and_renumbers(shards):
    folder, _, _ = shards
    read = list(read_examples(folder, ["train"], ("happy", "angry")).as_numpy_iterator())
    assert [(ident.decode(), int(label)) for _, label, ident in read] == [
        ("img-0", 1),
        ("img-1", 0),
        ("img-3", 0),
    ]


def test_training_batches_are_reproducible_from_the_seed(shards):
    folder, _, _ = shards
    emotions = ("angry", "happy", "neutral")

    def first_epoch(seed: int) -> np.ndarray:
        return np.concatenate(
            [
                x
                for x, _ in training_batches(
                    folder, emotions, 2, seed, AugmentSettings()
                ).as_numpy_iterator()
            ]
        )

    np.testing.assert_array_equal(first_epoch(7), first_epoch(7))
    assert not np.array_equal(first_epoch(7), first_epoch(8))
    x, y = next(iter(scoring_batches(folder, ["train"], emotions, 8)))
    assert x.shape == (4, 48, 48, 1) and x.dtype == tf.float32 and float(tf.reduce_max(x)) <= 1.0


def test_to_model_input_accepts_batches_with_or_without_channel():
    faces = np.full((3, 48, 48), 255, np.uint8)
    np.testing.assert_allclose(to_model_input(faces), np.ones((3, 48, 48, 1)))
    assert to_model_input(faces[..., None]).shape == (3, 48, 48, 1)
    with pytest.raises(ValueError, match="48x48"):
        to_model_input(np.zeros((2, 32, 32), np.uint8))


def _face() -> tf.Tensor:
    ramp = np.tile(np.linspace(0, 255, 48, dtype=np.uint8), (48, 1))
    return to_model_input(ramp)


def test_augmentation_without_amounts_is_identity():
    none = AugmentSettings(
        flip=False, max_rotation_deg=0, max_zoom=0, max_brightness=0, contrast_range=(1, 1)
    )
    out = augment_image(_face(), tf.constant([1, 2], tf.int64), none)
    np.testing.assert_allclose(out, _face(), atol=1e-5)


def test_flip_mirrors_and_keeps_range():
    flip_only = AugmentSettings(
        flip=True, max_rotation_deg=0, max_zoom=0, max_brightness=0, contrast_range=(1, 1)
    )
    outs = [
        augment_image(_face(), tf.constant([s, 0], tf.int64), flip_only).numpy() for s in range(8)
    ]
    mirrored = _face().numpy()[:, ::-1]
    assert any(np.allclose(o, mirrored, atol=1e-5) for o in outs)
    assert any(np.allclose(o, _face(), atol=1e-5) for o in outs)


def test_full_augmentation_changes_image_within_range_and_is_seeded():
    settings = AugmentSettings(max_rotation_deg=15, max_zoom=0.2, max_brightness=0.2)
    a = augment_image(_face(), tf.constant([3, 4], tf.int64), settings).numpy()
    b = augment_image(_face(), tf.constant([3, 4], tf.int64), settings).numpy()
    c = augment_image(_face(), tf.constant([5, 6], tf.int64), settings).numpy()
    np.testing.assert_array_equal(a, b)
    assert a.shape == (48, 48, 1) and 0.0 <= a.min() and a.max() <= 1.0
    assert not np.allclose(a, c)
    assert not np.allclose(a, _face().numpy(), atol=0.01)


def test_random_erasing_covers_one_rectangle_with_noise_or_nothing():
    face = tf.fill([48, 48, 1], 0.5)
    off = AugmentSettings(
        flip=False, max_rotation_deg=0, max_zoom=0, max_brightness=0, contrast_range=(1, 1)
    )
    always = off.model_copy(update={"erase_probability": 1.0})
    changed = [
        np.asarray(augment_image(face, tf.constant([i, 7], tf.int64), always)) != 0.5
        for i in range(20)
    ]
    for mask in changed:
        rows, cols = np.nonzero(mask[..., 0])
        area = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert 0.01 * 48 * 48 <= area <= 0.45 * 48 * 48, "2-40 % of the face, as a rectangle"
        assert mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].mean() > 0.95
    assert len({m.sum() for m in changed}) > 5, "sizes and places vary with the seed"
    never = np.asarray(augment_image(face, tf.constant([1, 7], tf.int64), off))
    np.testing.assert_array_equal(never, np.asarray(face))


def interim_dataset(seed: int) -> Dataset:
    """A dataset as ingest writes it: random faces labelled ``LABELS``, all in train."""
    pixels = np.random.default_rng(seed).integers(0, 256, (len(LABELS), 48, 48), dtype=np.uint8)
    manifest = pd.DataFrame(
        {
            "id": [f"img-{i}" for i in range(len(LABELS))],
            "dataset": "test",
            "split": "train",
            "label": LABELS,
            "subject": "",
            "sequence": "",
            "frame": -1,
            "source": "test",
        }
    )
    return Dataset(pd.concat([manifest, describe_pixels(pixels)], axis=1), pixels)


def test_shards_from_memory_mapped_pixels_equal_those_from_an_array(tmp_path):
    """Preprocess reads ingest's pixels.npy through a mapping per shard: same records."""
    dataset = interim_dataset(seed=2)
    write_dataset(tmp_path / "interim", dataset)
    mapped = read_dataset(tmp_path / "interim")
    assert isinstance(mapped.pixels, np.memmap)
    from_array = write_split(dataset, "train", tmp_path / "array", examples_per_shard=4)
    from_map = write_split(mapped, "train", tmp_path / "mapped", examples_per_shard=4)
    assert [p.name for p in from_map] == [p.name for p in from_array]
    for a, b in zip(from_array, from_map):
        assert _records(a) == _records(b)


def test_a_label_outside_the_vocabulary_is_named(tmp_path):
    pixels = np.zeros((2, 48, 48), np.uint8)
    manifest = pd.DataFrame({"id": ["a", "b"], "label": ["happy", "happyy"], "split": "train"})
    with pytest.raises(ValueError, match=r"\['happyy'\] are not in"):
        write_split(Dataset(manifest, pixels), "train", tmp_path, examples_per_shard=4)


def test_preprocess_publishes_every_dataset_or_none(tmp_path, monkeypatch):
    """A failure on the second dataset leaves the first one's previous shards, not new ones."""
    interim = {name: tmp_path / "interim" / name for name in ("fer2013", "ckplus")}
    for seed, folder in enumerate(interim.values()):
        write_dataset(folder, interim_dataset(seed))
    settings = PreprocessSettings(out_dir=tmp_path / "processed", examples_per_shard=4)
    augment = AugmentSettings(grid_png=tmp_path / "grid.png")
    preprocess(interim, settings, augment)
    previous = _contents(settings.out_dir)

    write_dataset(interim["fer2013"], interim_dataset(seed=7))
    write_sequences = preprocess_module.write_sequences

    def failing_on_ckplus(dataset: Dataset, folder: Path, examples_per_shard: int) -> list[Path]:
        if folder.name == "ckplus":
            raise OSError("No space left on device")
        return write_sequences(dataset, folder, examples_per_shard)

    monkeypatch.setattr(preprocess_module, "write_sequences", failing_on_ckplus)
    with pytest.raises(OSError, match="No space left"):
        preprocess(interim, settings, augment)
    assert _contents(settings.out_dir) == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png", "interim", "processed"]


def _contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _records(path):
    return list(tf.data.TFRecordDataset(str(path), compression_type="GZIP").as_numpy_iterator())
