"""The model card: training data, metrics in and across datasets, the blessing, use and limits."""

from emoflow.components.judging.gate import judge
from emoflow.components.judging.model_card import (
    ETHICS,
    TrainingData,
    model_card,
    registered_model_description,
)
from emoflow.components.provenance import SYNTHETIC, SYNTHETIC_WARNING
from emoflow.components.settings import Bounds, ModelCell

CELL = ModelCell(architecture="modern", emotion_set="afs", emotions=("angry", "fear", "surprise"))
METRICS = {
    "fer2013": {
        "accuracy": 0.71,
        "macro_f1": 0.66,
        "ece": 0.04,
        "count": 1378,
        "per_class": {
            "angry": {"recall": 0.61, "support": 467},
            "fear": {"recall": 0.52, "support": 496},
            "surprise": {"recall": 0.83, "support": 415},
        },
    },
    "ckplus": {
        "accuracy": 0.58,
        "macro_f1": 0.55,
        "ece": 0.2,
        "count": 300,
        "per_class": {"angry": {"recall": 0.4, "support": 45}},
    },
}
REAL = TrainingData(
    "fer2013",
    "/data/fer2013.csv.gz",
    "real",
    {"fer2013-val": "4567ef01", "fer2013-train": "0123abcd"},
    {"train": 9, "val": 2},
)


def _card(data: TrainingData = REAL, version: str | None = "4") -> str:
    thresholds = {"fer2013.accuracy": 0.62, "fer2013.ece": Bounds(upper_bound=0.1)}
    verdict = judge(METRICS, None, thresholds, {})
    return model_card("emoflow-afs", version, CELL, "run42", data, METRICS, verdict)


def test_the_card_names_the_training_data_and_its_hash():
    card = _card()
    assert card.startswith("# Model card: emoflow-afs version 4\n")
    assert "- Dataset: fer2013, real faces; read from `/data/fer2013.csv.gz`." in card
    assert (
        "- Records, as logged on the training run (dataset, content hash): "
        "`fer2013-train` `0123abcd`, `fer2013-val` `4567ef01`." in card
    )
    assert "Images per split: train 9, val 2." in card
    assert "MLflow run `run42`" in card and "angry, fear, surprise" in card
    assert SYNTHETIC_WARNING not in card


def test_the_card_holds_metrics_in_and_across_datasets_with_recall_and_ece():
    card = _card()
    assert "| fer2013 | 0.7100 | 0.6600 | 0.0400 | 1378 |" in card
    assert "| ckplus | 0.5800 | 0.5500 | 0.2000 | 300 |" in card
    assert "| class | ckplus | fer2013 |" in card
    assert "| angry | 0.400 (45) | 0.610 (467) |" in card
    assert "| fear | - | 0.520 (496) |" in card, "CK+ has no fear here: a dash"


def test_the_card_gives_the_blessing_with_every_check():
    card = _card()
    assert "Blessing: **passed**" in card
    assert "- pass: `fer2013.accuracy` 0.7100 >= 0.62" in card
    assert "- pass: `fer2013.ece` 0.0400 <= 0.1 (upper bound)" in card


def test_the_card_says_what_the_model_must_not_be_used_for():
    card = _card()
    for needle in (
        "## Intended use",
        "FER2013's labels are noisy",
        "CK+ holds posed expressions",
        "frontal face detector",
        "demographic coverage of the training data",
        "EU AI Act, Article 5(1)(f)",
        "workplace or in education",
        "must not drive decisions about people",
    ):
        assert needle in card, needle


def test_a_model_of_the_sample_says_so_first_and_a_refused_one_is_a_candidate():
    sample = TrainingData("fer2013", "data/sample/fer2013.csv", SYNTHETIC, {}, {"train": 1})
    card = _card(sample, version=None)
    assert card.startswith("# Model card: emoflow-afs candidate (not registered)\n")
    assert card.index(SYNTHETIC_WARNING) < card.index("## Model details")
    assert "**the built-in synthetic sample**" in card
    assert "none logged on the training run" in card, "a run from before datasets were logged"


def test_the_registered_model_says_what_it_takes_and_points_to_the_cards():
    faces = registered_model_description("emoflow-afs", CELL)
    assert faces.startswith("# emoflow-afs\n")
    assert "3 emotions: angry, fear, surprise." in faces
    assert "an `image` column, one photo per cell" in faces and "48x48" in faces
    assert "`champion` is the version to use" in faces and "model card" in faces
    assert ETHICS[0] in faces
    assert "modern" not in faces, "a name's versions may come from several image networks"
    windows = registered_model_description(
        "t", CELL.model_copy(update={"architecture": "convlstm"})
    )
    assert "windows of consecutive 48x48 grey face crops" in windows
