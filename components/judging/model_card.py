"""The model card of a registered version, after TFX's Model Card Toolkit: what it learnt from,
how it scored in and across datasets, what the gate said, and what it must not be used for.

Promote writes it as the version's description (what the MLflow UI shows first) and as the
run's ``model_card.md`` artifact, so a consumer who only reads the registry still learns that a
model was trained on synthetic faces, or that emotion recognition at work is prohibited. The
registered model's own description (:func:`registered_model_description`) says what every
version of the name takes and returns, and points to the cards.
"""

from __future__ import annotations

from dataclasses import dataclass

from emoflow.components.judging.gate import Verdict
from emoflow.components.judging.registry import CHALLENGER, CHAMPION
from emoflow.components.model_kinds import reads_sequences
from emoflow.components.provenance import SYNTHETIC, SYNTHETIC_WARNING
from emoflow.components.settings import ModelCell

CARD_FILE = "model_card.md"

LIMITATIONS = (
    "FER2013's labels are noisy: people labelling its faces agree with them about 65 % of the "
    "time (Goodfellow et al. 2013), and the FER+ relabelling's majority matches its label on "
    "about 62 % of PublicTest; accuracy on it is bounded by its labels, not by the task.",
    "CK+ holds posed expressions of 123 adults filmed in a lab, mostly at their peak: "
    "cross-dataset accuracy on it says little about spontaneous expressions.",
    "Faces are found by a frontal face detector (OpenCV's Haar cascade unless the serve "
    "settings name another): profiles, strong tilts, occlusions and small faces are missed, "
    "and a missed face gets no prediction at all.",
    "The demographic coverage of the training data (age, sex, skin tone, culture) is unknown "
    "and was not measured; accuracy may differ between groups of people.",
    "A facial expression is not an emotion: the model names the expression most like the "
    "face's among a fixed set, not what the person feels.",
)
ETHICS = (
    "Under the EU AI Act, Article 5(1)(f), placing on the market or using AI systems that "
    "infer the emotions of a natural person in the workplace or in education institutions is "
    "prohibited (save for medical or safety reasons).",
    "Its outputs must not drive decisions about people (hiring, grading, policing, credit, "
    "access to services), whatever the jurisdiction.",
    "Faces are personal data: inform the people filmed, and keep no images without a lawful basis.",
)
INTENDED_USE = (
    "Research, teaching and interactive media in which the people filmed know and agree, "
    "e.g. an interactive film that branches on the viewer's expression (EmoPy's RIOT); "
    "aggregate, anonymous measurement where no individual is judged."
)


@dataclass(frozen=True)
class TrainingData:
    """What the card says of the data a version learnt from."""

    dataset: str
    source: str
    kind: str  # components.provenance: real, synthetic-sample or unknown
    records: dict[str, str]  # the training run's datasets: name -> digest (content hash)
    rows: dict[str, int]  # split -> images


def model_card(
    name: str,
    version: str | None,
    cell: ModelCell,
    run_id: str,
    data: TrainingData,
    metrics: dict,
    verdict: Verdict,
) -> str:
    """The card as Markdown; ``version`` None for a candidate the gate did not register."""
    title = f"version {version}" if version else "candidate (not registered)"
    lines = [
        f"# Model card: {name} {title}",
        "",
        *(["> **Warning:** " + SYNTHETIC_WARNING, ""] if data.kind == SYNTHETIC else []),
        "## Model details",
        "",
        f"- Network: `{cell.architecture}`; emotions ({len(cell.emotions)}): "
        f"{', '.join(cell.emotions)}.",
        f"- MLflow run `{run_id}`; input: one 48x48 grey face per prediction, found in a "
        "photo by the model's own face detector.",
        "",
        "## Training data",
        "",
        f"- Dataset: {data.dataset}, {_kind_words(data.kind)}; read from `{data.source}`.",
        _records_line(data.records),
        f"- Images per split: {', '.join(f'{s} {n}' for s, n in sorted(data.rows.items()))}.",
        "",
        "## Evaluation",
        "",
        *_metrics_table(metrics),
        "",
        *_recall_table(metrics),
        "",
        "## Gate",
        "",
        f"Blessing: **{'passed' if verdict.passed else 'failed'}** "
        f"(value thresholds {'passed' if verdict.value_passed else 'failed'}).",
        "",
        *[f"- {'pass' if c.passed else 'FAIL'}: `{c.metric}` {c.reason}" for c in verdict.checks],
        *([f"- {verdict.note}"] if verdict.note else []),
        "",
        "## Intended use",
        "",
        INTENDED_USE,
        "",
        "## Limitations",
        "",
        *[f"- {text}" for text in LIMITATIONS],
        "",
        "## Ethical considerations",
        "",
        *[f"- {text}" for text in ETHICS],
        "",
    ]
    return "\n".join(lines)


def _records_line(records: dict[str, str]) -> str:
    if not records:
        return "- Records: none logged on the training run (it predates logged datasets)."
    named = ", ".join(f"`{name}` `{digest}`" for name, digest in sorted(records.items()))
    return f"- Records, as logged on the training run (dataset, content hash): {named}."


def registered_model_description(name: str, cell: ModelCell) -> str:
    """What a registered model is, shown beside its name; each version's card says the rest.

    It names the kind of network, not the architecture: versions of one name may come from
    several image architectures of one emotion set (``promote.model_name``)."""
    if reads_sequences(cell.architecture):
        takes = (
            "windows of consecutive 48x48 grey face crops of one person, uint8 "
            "[N, frames, 48, 48]; one row per window, a probability per emotion"
        )
    else:
        takes = (
            "an `image` column, one photo per cell (an array, encoded bytes or base64 text; "
            "a file path in-process) or one 48x48 face crop per cell; one row per face found, "
            "with its box and a probability per emotion"
        )
    return "\n".join(
        [
            f"# {name}",
            "",
            f"EmoFlow facial expression recognition of {len(cell.emotions)} emotions: "
            f"{', '.join(cell.emotions)}.",
            "",
            f"- Input and output: {takes}.",
            f"- Aliases: `{CHAMPION}` is the version to use; `{CHALLENGER}` the latest that "
            "passed the value thresholds.",
            "- Each version's description is its model card: training data, scores in and "
            "across datasets, the gate's verdict, intended use and limitations.",
            f"- {ETHICS[0]}",
            "",
        ]
    )


def _kind_words(kind: str) -> str:
    return {
        SYNTHETIC: "**the built-in synthetic sample** (generated faces, not real people)",
        "real": "real faces",
    }.get(kind, "of unknown origin (ingested before provenance was recorded)")


def _metrics_table(metrics: dict) -> list[str]:
    rows = [
        "| dataset | accuracy | macro-F1 | ECE (lower is better) | images |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for dataset, scores in sorted(metrics.items()):
        rows.append(
            f"| {dataset} | {scores['accuracy']:.4f} | {scores['macro_f1']:.4f} | "
            f"{scores['ece']:.4f} | {scores['count']} |"
        )
    return rows


def _recall_table(metrics: dict) -> list[str]:
    """Recall per class (rows) and dataset (columns); a dataset without the class has a dash."""
    datasets = sorted(metrics)
    classes = list(dict.fromkeys(c for d in datasets for c in metrics[d]["per_class"]))

    def cell(dataset: str, emotion: str) -> str:
        scores = metrics[dataset]["per_class"].get(emotion)
        return "-" if scores is None else f"{scores['recall']:.3f} ({scores['support']})"

    return [
        "Recall per class (test images in brackets):",
        "",
        "| class | " + " | ".join(datasets) + " |",
        "| --- |" + " ---: |" * len(datasets),
        *(f"| {c} | " + " | ".join(cell(d, c) for d in datasets) + " |" for c in classes),
    ]
