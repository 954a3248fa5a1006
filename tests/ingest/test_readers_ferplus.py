"""FER+ votes: majority labels by the FER+ reference rule, soft labels, row alignment."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydantic
import pytest
from test_ingest import ckplus_tree, fer_csv, varied_pixels

from emoflow.components.artifacts import read_json
from emoflow.components.ingest import fer2013_csv
from emoflow.components.ingest.bad_records import IngestError
from emoflow.components.ingest.fer2013_csv import read_fer2013_csv
from emoflow.components.ingest.ferplus import VOTE_COLUMNS, majority_labels, vote_shares
from emoflow.components.ingest.stage import ingest
from emoflow.components.labels import CANONICAL
from emoflow.components.manifest import read_dataset
from emoflow.components.settings import IngestSettings

HEADER = "Usage,Image name," + ",".join(VOTE_COLUMNS)

#            neutral happy surprise sad anger disgust fear contempt unknown NF -> label
RULE_CASES = [
    ((4, 0, 0, 1, 3, 2, 0, 0, 0, 0), ""),  # 4 of 9 counted votes: a plurality, no majority
    ((6, 0, 1, 1, 0, 0, 0, 0, 2, 0), "neutral"),  # lone votes dropped: 6 of 8
    ((0, 10, 0, 0, 0, 0, 0, 0, 0, 0), "happy"),
    ((0, 0, 6, 0, 0, 0, 4, 0, 0, 0), "surprise"),
    ((0, 0, 0, 5, 5, 0, 0, 0, 0, 0), ""),  # a tie at the top
    ((0, 0, 0, 0, 3, 0, 0, 0, 7, 0), ""),  # unknown wins
    ((2, 0, 0, 0, 0, 0, 0, 0, 0, 8), ""),  # not a face
    ((0, 0, 0, 0, 4, 0, 0, 6, 0, 0), "contempt"),
    ((1, 1, 1, 1, 1, 1, 1, 1, 1, 1), ""),  # nothing but outliers
    ((0, 0, 0, 0, 2, 3, 1, 0, 0, 0), "disgust"),  # 3 of 5 once the lone fear vote is dropped
]


def test_majority_rule_of_the_ferplus_reference_code():
    votes = np.array([v for v, _ in RULE_CASES])
    assert majority_labels(votes).tolist() == [label for _, label in RULE_CASES]


def test_vote_shares_are_canonical_ordered_distributions():
    shares = vote_shares(np.array([[6, 0, 1, 1, 0, 0, 0, 0, 2, 0], [0, 0, 0, 0, 4, 0, 0, 6, 0, 0]]))
    assert shares.shape == (2, len(CANONICAL)) and shares.dtype == np.float32
    np.testing.assert_allclose(shares.sum(axis=1), 1.0)
    first = dict(zip(CANONICAL, shares[0]))
    assert first["neutral"] == pytest.approx(0.75) and first["surprise"] == pytest.approx(0.125)
    assert dict(zip(CANONICAL, shares[1]))["contempt"] == pytest.approx(0.6)


def write_votes(path: Path, rows: list[tuple[str, str, tuple[int, ...]]]) -> Path:
    path.write_text(
        HEADER + "\n" + "".join(f"{u},{name},{','.join(map(str, v))}\n" for u, name, v in rows)
    )
    return path


@pytest.fixture
def settings(tmp_path: Path) -> IngestSettings:
    """A 12-row csv (8 Training, 4 PublicTest) and votes covering all 14 rows of its 'full file'."""
    usages = ["Training"] * 8 + ["PublicTest"] * 4
    fer_csv(tmp_path / "fer.csv", [("0", varied_pixels(i), u) for i, u in enumerate(usages)])
    cases = [RULE_CASES[i % 4] for i in range(12)]  # "", neutral, happy, surprise, ...
    rows = [(u, f"fer{i:07d}.png", v) for i, (u, (v, _)) in enumerate(zip(usages, cases))]
    rows[6] = ("Training", "", rows[6][2])  # FER+ dropped this image
    rows += [("PrivateTest", f"fer{i:07d}.png", RULE_CASES[2][0]) for i in (12, 13)]
    ck = ckplus_tree(
        tmp_path / "ck", {("S005", 1, 4): "happy", ("S006", 1, 4): "anger", ("S007", 1, 4): "fear"}
    )
    return IngestSettings(
        fer2013=tmp_path / "fer.csv",
        ferplus=write_votes(tmp_path / "fer2013new.csv", rows),
        ckplus=ck,
        out_dir=tmp_path / "interim",
        val_fraction=0.25,
    )


def test_ferplus_labels_replace_the_csv_labels(settings):
    manifest = read_fer2013_csv(settings.fer2013, settings).manifest
    kept = {int(i.split("-")[1]): label for i, label in zip(manifest["id"], manifest["label"])}
    assert kept == {
        1: "neutral",
        2: "happy",
        3: "surprise",
        5: "neutral",
        7: "surprise",
        9: "neutral",
        10: "happy",
        11: "surprise",
    }, "rows 0, 4, 8 lack a majority; 6 has no name"
    assert set(manifest.loc[manifest["id"].isin(["fer2013-00009", "fer2013-00010"]), "split"]) == {
        "test"
    }


def test_soft_labels_sidecar_is_row_aligned(settings):
    outputs = ingest(settings.model_copy(update={"ferplus_soft_labels": True}))
    data = read_dataset(outputs.fer2013)
    assert data.soft_labels.shape == (len(data.manifest), len(CANONICAL))
    np.testing.assert_allclose(data.soft_labels.sum(axis=1), 1.0, rtol=1e-6)
    assert (np.asarray(CANONICAL)[data.soft_labels.argmax(axis=1)] == data.manifest["label"]).all()
    assert read_dataset(outputs.ckplus).soft_labels is None
    without = ingest(settings)
    assert read_dataset(without.fer2013).soft_labels is None, "off by default, and no stale sidecar"


def test_soft_labels_need_the_votes_file():
    with pytest.raises(pydantic.ValidationError, match="ferplus_soft_labels needs ferplus"):
        IngestSettings(ferplus_soft_labels=True)


def rewrite(settings: IngestSettings, edit) -> None:
    lines = settings.ferplus.read_text().splitlines()
    settings.ferplus.write_text("\n".join(edit(lines)) + "\n")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda lines: lines[:-3], r"fer2013new\.csv: 11 rows, but .*fer\.csv has 12"),
        (
            lambda lines: lines + [lines[1]],
            r"fer2013new\.csv: 15 rows, .*\(extra rows are allowed only for usages the csv lacks",
        ),
        (
            lambda lines: [lines[0]] + lines[2:],
            r"fer2013new\.csv: row 7 \(line 9\): Usage 'PublicTest', but .* says 'Training'",
        ),
        (lambda lines: [lines[0].replace("NF", "notface")] + lines[1:], r"missing column\(s\) NF"),
    ],
    ids=["too-few-rows", "extra-rows-of-a-csv-usage", "shifted-rows", "missing-column"],
)
def test_misaligned_votes_file_is_an_error(settings, edit, message):
    rewrite(settings, edit)
    with pytest.raises(IngestError, match=message):
        read_fer2013_csv(settings.fer2013, settings)


def test_bad_vote_names_file_and_row_or_is_quarantined(settings):
    rewrite(
        settings,
        lambda lines: lines[:3] + [lines[3].replace(",0,0,0,0,0,", ",0,x,0,0,0,", 1)] + lines[4:],
    )
    with pytest.raises(
        IngestError, match=r"fer2013new\.csv: row 2 \(line 4\): \w+ vote 'x' is not a count"
    ):
        read_fer2013_csv(settings.fer2013, settings)
    outputs = ingest(settings.model_copy(update={"on_bad_record": "skip"}))
    report = read_json(outputs.quarantine)
    assert [(Path(r["file"]).name, r["record"]) for r in report["records"]] == [
        ("fer2013new.csv", "row 2 (line 4)")
    ]
    assert "fer2013-00002" not in set(read_dataset(outputs.fer2013).manifest["id"])


@pytest.mark.realdata
def test_real_ferplus_majority_counts(shared_data):
    settings = IngestSettings(
        fer2013=shared_data / "fer2013" / "fer2013.csv.gz",
        ferplus=shared_data / "fer2013" / "fer2013new.csv",
    )
    manifest = read_fer2013_csv(settings.fer2013, settings).manifest
    counts = manifest.groupby(["split", "label"]).size().unstack(fill_value=0)
    training = (counts.loc["train"] + counts.loc["val"]).to_dict()
    # The Training counts the FER+ reference code prints in majority mode.
    assert training == {
        "neutral": 8740,
        "happy": 7287,
        "surprise": 3149,
        "sad": 3014,
        "angry": 2100,
        "fear": 532,
        "disgust": 119,
        "contempt": 119,
    }
    assert counts.loc["test"].to_dict() == {
        "angry": 287,
        "contempt": 13,
        "disgust": 24,
        "fear": 62,
        "happy": 865,
        "neutral": 1182,
        "sad": 351,
        "surprise": 415,
    }


def test_streamed_ingest_keeps_only_the_rows_ferplus_labels(settings, monkeypatch):
    """Rows FER+ leaves out are known after the csv's pixels were written: they are removed."""
    monkeypatch.setattr(fer2013_csv, "CHUNK_ROWS", 5)
    outputs = ingest(settings.model_copy(update={"ferplus_soft_labels": True}))
    written = read_dataset(outputs.fer2013)
    whole = read_fer2013_csv(
        settings.fer2013, settings.model_copy(update={"ferplus_soft_labels": True})
    )
    assert len(written.manifest) == 8
    assert written.manifest.drop(columns=["fold"]).equals(whole.manifest)
    np.testing.assert_array_equal(written.pixels, whole.pixels)
    np.testing.assert_array_equal(written.soft_labels, whole.soft_labels)
