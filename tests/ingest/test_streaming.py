"""Ingest streams the FER2013 csv: chunk by chunk, with the results of reading it whole."""

from __future__ import annotations

import numpy as np
import pytest
from test_ingest import GOOD_PIXELS, ckplus_tree, fer_csv, rows_for

from emoflow.components.artifacts import read_json
from emoflow.components.ingest import fer2013_csv
from emoflow.components.ingest.bad_records import IngestError, read_csv_chunks
from emoflow.components.ingest.fer2013_csv import read_fer2013_csv, write_fer2013_csv
from emoflow.components.ingest.pixel_stream import PixelWriter, keep_rows
from emoflow.components.ingest.stage import ingest
from emoflow.components.manifest import read_dataset
from emoflow.components.settings import IngestSettings

WHOLE = 10**6  # one chunk: the file read whole, as ingest did before it streamed


@pytest.fixture
def settings(tmp_path):
    ck = ckplus_tree(tmp_path / "ck", {("S005", 1, 4): "happy", ("S006", 1, 4): "anger"})
    rows = rows_for({"Training": 3, "PublicTest": 1, "PrivateTest": 1})
    return IngestSettings(
        fer2013=fer_csv(tmp_path / "fer.csv", rows), ckplus=ck, out_dir=tmp_path / "interim"
    )


def test_csv_is_read_in_chunks_of_file_rows(settings):
    chunks = list(read_csv_chunks(settings.fer2013, fer2013_csv.FER2013_COLUMNS, "ingest", 8))
    assert [len(chunk) for chunk in chunks] == [8, 8, 8, 8, 3]
    assert [int(chunk.index[0]) for chunk in chunks] == [0, 8, 16, 24, 32]


@pytest.mark.parametrize("chunk_rows", [1, 4, 7])
def test_chunked_parse_equals_the_whole_file(settings, chunk_rows):
    whole = read_fer2013_csv(settings.fer2013, settings, chunk_rows=WHOLE)
    chunked = read_fer2013_csv(settings.fer2013, settings, chunk_rows=chunk_rows)
    assert chunked.manifest.equals(whole.manifest)
    np.testing.assert_array_equal(chunked.pixels, whole.pixels)


def test_ingest_writes_what_reading_the_csv_whole_gives(settings, monkeypatch):
    monkeypatch.setattr(fer2013_csv, "CHUNK_ROWS", 4)
    outputs = ingest(settings)
    written = read_dataset(outputs.fer2013)
    whole = read_fer2013_csv(settings.fer2013, settings, chunk_rows=WHOLE)
    assert written.manifest.drop(columns=["fold"]).equals(whole.manifest)
    assert (written.manifest["fold"] == -1).all()
    np.testing.assert_array_equal(written.pixels, whole.pixels)


def test_bad_rows_are_named_by_file_row_across_chunks(settings):
    rows = rows_for({"Training": 2})
    rows[9] = ("0", " ".join(["1"] * 2303), "Training")
    rows[12] = ("9", GOOD_PIXELS, "Training")
    fer_csv(settings.fer2013, rows)
    with pytest.raises(IngestError, match=r"row 9 \(line 11\): 2303 pixels"):
        read_fer2013_csv(settings.fer2013, settings, chunk_rows=4)
    skip = settings.model_copy(update={"on_bad_record": "skip"})
    outputs = ingest(skip)
    records = [r["record"] for r in read_json(outputs.quarantine)["records"]]
    assert records == ["row 9 (line 11)", "row 12 (line 14)"]
    ids = read_dataset(outputs.fer2013).manifest["id"]
    assert len(ids) == 12 and not {"fer2013-00009", "fer2013-00012"} & set(ids)


def test_the_first_bad_row_stops_ingest_before_the_rest_is_read(settings):
    """A malformed line further on is never reached: the error is the first bad row's."""
    rows = rows_for({"Training": 2})
    rows[1] = ("0", " ".join(["1"] * 2303), "Training")
    fer_csv(settings.fer2013, rows)
    with settings.fer2013.open("a") as csv:
        csv.write("0,1 2,Training,extra,fields\n")
    with pytest.raises(IngestError, match=r"row 1 \(line 3\): 2303 pixels"):
        read_fer2013_csv(settings.fer2013, settings, chunk_rows=4)
    with pytest.raises(IngestError, match="not a readable csv"):
        read_fer2013_csv(settings.fer2013, settings.model_copy(update={"on_bad_record": "skip"}))


def test_pixel_writer_completes_the_header_and_keep_rows_drops_images(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (10, 48, 48), dtype=np.uint8)
    path = tmp_path / "pixels.npy"
    with PixelWriter(path) as writer:
        for start in range(0, 10, 3):
            writer.append(images[start : start + 3])
    np.save(tmp_path / "saved.npy", images)
    assert path.read_bytes() == (tmp_path / "saved.npy").read_bytes(), "the file np.save writes"
    (tmp_path / "saved.npy").unlink()
    keep = np.arange(10) % 3 != 1
    keep_rows(path, keep)
    np.testing.assert_array_equal(np.load(path), images[keep])
    assert [p.name for p in tmp_path.iterdir()] == ["pixels.npy"]


def test_pixel_writer_rejects_images_of_another_shape(tmp_path):
    with PixelWriter(tmp_path / "pixels.npy") as writer, pytest.raises(ValueError, match="48"):
        writer.append(np.zeros((2, 40, 40), np.uint8))


def test_streamed_write_holds_one_chunk_of_pixels_at_a_time(settings, tmp_path, monkeypatch):
    """The sink sees chunk-sized blocks, never the whole dataset's pixels."""
    sizes: list[int] = []
    append = PixelWriter.append

    def spy(self: PixelWriter, images: np.ndarray) -> None:
        sizes.append(len(images))
        append(self, images)

    monkeypatch.setattr(PixelWriter, "append", spy)
    folder = tmp_path / "out"
    folder.mkdir()
    written = write_fer2013_csv(settings.fer2013, settings, folder, {}, chunk_rows=8)
    assert written == 35 and sizes == [8, 8, 8, 8, 3]
