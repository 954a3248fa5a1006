"""Pictures a person would rather look at than numbers: curves, confusion matrices, grids.

matplotlib is imported lazily with the Agg backend: plotting never needs a display, and
modules that only sometimes plot should not pay its import at start-up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from emoflow.components.artifacts import atomic_file

# A Keras history holds ``loss`` and ``accuracy`` per epoch on the training batches, and the
# same on the validation split under ``val_``.
CURVES = ("loss", "accuracy")
SPLIT_PREFIXES = {"train": "", "val": "val_"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> Path:
    plt = _pyplot()
    with atomic_file(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path


def training_curves(history: Mapping[str, Sequence[float]], path: Path) -> Path:
    """Loss and accuracy per epoch, training against validation."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric in zip(axes, CURVES):
        for (split, prefix), style in zip(SPLIT_PREFIXES.items(), ("-", "--")):
            if f"{prefix}{metric}" in history:
                values = history[f"{prefix}{metric}"]
                axis.plot(range(1, len(values) + 1), values, style, label=f"{split}_{metric}")
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        axis.legend()
        axis.grid(alpha=0.3)
    return _save(figure, path)


def curves_table(history: Mapping[str, Sequence[float]]) -> pd.DataFrame:
    """The curves as ``dvc plots`` draws them (.dvc/plots/training_curves.json): a row per
    epoch and split, a column per metric."""
    rows = [
        {"epoch": epoch, "split": split}
        | {m: history[f"{prefix}{m}"][epoch - 1] for m in CURVES if f"{prefix}{m}" in history}
        for split, prefix in SPLIT_PREFIXES.items()
        if f"{prefix}loss" in history
        for epoch in range(1, len(history[f"{prefix}loss"]) + 1)
    ]
    return pd.DataFrame(rows, columns=["epoch", "split", *CURVES])


def confusion_matrices(
    matrices: Mapping[str, np.ndarray], class_names: Mapping[str, Sequence[str]], path: Path
) -> Path:
    """Each dataset's confusion matrix as counts and row-normalised, side by side."""
    plt = _pyplot()
    figure, axes = plt.subplots(len(matrices), 2, figsize=(11, 4.8 * len(matrices)), squeeze=False)
    for row, (dataset, counts) in enumerate(matrices.items()):
        names = class_names[dataset]
        totals = counts.sum(axis=1, keepdims=True)
        normalised = np.divide(
            counts, totals, out=np.zeros_like(counts, dtype=float), where=totals > 0
        )
        for axis, values, fmt, title in (
            (axes[row, 0], counts, "d", "counts"),
            (axes[row, 1], normalised, ".2f", "recall-normalised"),
        ):
            axis.imshow(values, cmap="Blues", vmin=0)
            axis.set_xticks(range(len(names)), names, rotation=45, ha="right")
            axis.set_yticks(range(len(names)), names)
            axis.set_xlabel("predicted")
            axis.set_ylabel("actual")
            axis.set_title(f"{dataset}: {title}")
            limit = values.max() / 2 if values.size else 0
            for (i, j), value in np.ndenumerate(values):
                axis.text(
                    j,
                    i,
                    format(value, fmt),
                    ha="center",
                    va="center",
                    color="white" if value > limit else "black",
                    fontsize=8,
                )
    figure.tight_layout()
    return _save(figure, path)


def image_grid(rows: Sequence[Sequence[np.ndarray]], row_titles: Sequence[str], path: Path) -> Path:
    """A grid of grayscale images, one titled row per original (e.g. augmentation variants)."""
    plt = _pyplot()
    columns = max(len(r) for r in rows)
    figure, axes = plt.subplots(
        len(rows), columns, figsize=(1.3 * columns, 1.4 * len(rows)), squeeze=False
    )
    for r, (images, title) in enumerate(zip(rows, row_titles)):
        for c in range(columns):
            axis = axes[r, c]
            axis.axis("off")
            if c < len(images):
                axis.imshow(np.squeeze(images[c]), cmap="gray", vmin=0, vmax=1)
        axes[r, 0].set_title(title, fontsize=8, loc="left")
    figure.tight_layout()
    return _save(figure, path)


def reliability_diagram(curves: Mapping[str, Mapping[str, Sequence[float]]], path: Path) -> Path:
    """Accuracy against confidence per bin, per dataset: the diagonal is perfect calibration."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(curves), figsize=(4.5 * len(curves), 4.2), squeeze=False)
    for axis, (dataset, curve) in zip(axes[0], curves.items()):
        centers = np.asarray(curve["bin_centers"])
        filled = np.asarray(curve["count"]) > 0
        width = 1.0 / len(centers)
        axis.bar(
            centers[filled],
            np.asarray(curve["accuracy"])[filled],
            width=width * 0.9,
            alpha=0.7,
            label="accuracy",
        )
        axis.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
        axis.plot(
            np.asarray(curve["confidence"])[filled],
            np.asarray(curve["accuracy"])[filled],
            "o-",
            label="observed",
        )
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1)
        axis.set_xlabel("confidence")
        axis.set_ylabel("accuracy")
        axis.set_title(f"{dataset}: reliability")
        axis.legend(fontsize=8)
    figure.tight_layout()
    return _save(figure, path)
