"""How images are assigned to train/val/test and to cross-validation folds.

Every assignment is seeded, so the same settings give the same splits on every machine, and
person-level datasets (CK+) are assigned by subject: frames of one person are
near-identical, so an image-level split would put the same face on both sides.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def carve_validation(
    splits: np.ndarray, labels: np.ndarray, fraction: float, seed: int
) -> np.ndarray:
    """Move a stratified, seeded ``fraction`` of each class's ``train`` images to ``val``.

    For FER2013 copies without a third usage (PrivateTest) and for the Kaggle image-folder
    layout, which ships only train and test.
    """
    splits = splits.copy()
    rng = np.random.default_rng(seed)
    for label in np.unique(labels):
        members = np.flatnonzero((splits == "train") & (labels == label))
        take = round(len(members) * fraction)
        splits[rng.permutation(members)[:take]] = "val"
    return splits


def subject_splits(subjects: pd.Series, fractions: dict[str, float], seed: int) -> list[str]:
    """A split per row, drawn by subject: every image of a person lands in one split."""
    unique = sorted(subjects.unique())
    order = np.random.default_rng(seed).permutation(len(unique))
    counts = split_counts(len(unique), fractions)
    names = np.repeat(list(counts), list(counts.values()))
    split_of = {unique[i]: str(names[rank]) for rank, i in enumerate(order)}
    return [split_of[s] for s in subjects]


def split_counts(total: int, fractions: dict[str, float]) -> dict[str, int]:
    """Share ``total`` groups by ``fractions`` (largest remainder), at least one per split.

    A small set (a test fixture, a subset of subjects) must still give every requested
    split a member, or validation rightly fails on an empty split.
    """
    wanted = {name: f for name, f in fractions.items() if f > 0}
    exact = {name: total * f / sum(wanted.values()) for name, f in wanted.items()}
    counts = {name: int(value) for name, value in exact.items()}
    for name in sorted(exact, key=lambda n: exact[n] - counts[n], reverse=True)[
        : total - sum(counts.values())
    ]:
        counts[name] += 1
    for name in counts:
        while counts[name] == 0 and total >= len(counts):
            donor = max(counts, key=counts.get)
            counts[donor] -= 1
            counts[name] += 1
    return counts


def subject_folds(subjects: pd.Series, folds: int, seed: int) -> np.ndarray:
    """A fold (0..folds-1) per row for k-fold cross-validation grouped by subject.

    The usual CK+ protocol: no person appears in two folds. Subjects are taken in a seeded
    order, the largest first, and each joins the fold with the fewest images so far, so
    folds hold about the same number of images even though people have 1 to 11 sequences.
    """
    sizes = subjects.value_counts()
    shuffled = sizes.sample(frac=1.0, random_state=np.random.default_rng(seed))
    ordered = shuffled.sort_values(ascending=False, kind="stable")
    load = np.zeros(folds, dtype=np.int64)
    fold_of: dict[str, int] = {}
    for subject, size in ordered.items():
        fold = int(np.argmin(load))
        fold_of[subject] = fold
        load[fold] += size
    return subjects.map(fold_of).to_numpy(dtype=np.int64)
