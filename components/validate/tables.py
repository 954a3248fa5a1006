"""The tables the validate stage hands to Great Expectations, derived from a dataset's images.

GX checks the columns of one table. Properties of a dataset that are not properties of one
image (how many images a class has in a split, whether two rows hold the same picture,
whether a subject shows up in two splits) become columns of a table with one row per class
cell, per distinct image or per subject. Each check is then an ordinary column expectation,
and its unexpected count is the number of offending cells, duplicate groups or subjects:
the unit in which a person fixes them.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

IMAGES = "images"  # the manifest plus what the pixels say, one row per image
CLASSES = "classes"
CONTENTS = "contents"
SUBJECTS = "subjects"
# Columns each derived table is built from; a manifest lacking one is already an error of the
# image table's own expectations, so the table is left out rather than failing a second time.
SOURCES: dict[str, tuple[str, ...]] = {
    CLASSES: ("split", "label"),
    CONTENTS: ("sha256", "id", "split", "label"),
    SUBJECTS: ("subject", "split"),
}
# A duplicate group lists this many of its ids; enough to find it, short enough for a report.
IDS_SHOWN = 3


@dataclass(frozen=True)
class TableSpec:
    """How a kind of table is reported: what one row is and how an offending row is named."""

    unit: str
    index: tuple[str, ...]  # columns that name an offending row
    example: str  # format string over ``index``
    groups: bool = False  # a row stands for several images: count those too
    show_value: bool = False  # name the offending value beside the row


TABLES: dict[str, TableSpec] = {
    IMAGES: TableSpec("images", ("id",), "{id}", show_value=True),
    CLASSES: TableSpec(
        "split/class cells", ("split", "label", "images"), "{split}/{label} ({images} images)"
    ),
    CONTENTS: TableSpec(
        "distinct images",
        ("ids", "copies", "split_names", "label_names"),
        "[{ids}] in {split_names} as {label_names}",
        groups=True,
    ),
    SUBJECTS: TableSpec("subjects", ("subject", "split_names"), "{subject} in {split_names}"),
}


def derived_tables(images: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The class, content and subject tables of an image table (one row per image).

    The subject table exists only for datasets that have subjects (CK+, not FER2013).
    """
    builders = {CLASSES: classes_table, CONTENTS: contents_table, SUBJECTS: subjects_table}
    tables = {
        name: build(images)
        for name, build in builders.items()
        if set(SOURCES[name]) <= set(images.columns)
    }
    return {name: table for name, table in tables.items() if table is not None}


def classes_table(images: pd.DataFrame) -> pd.DataFrame:
    """One row per (split, label), including empty cells, with its share of the split's largest.

    Every label of the dataset gets a row in every split, so a class missing from a split
    shows up as a share of 0 rather than as an absent row no expectation would see.
    """
    counts = images.groupby(["split", "label"]).size()
    cells = pd.MultiIndex.from_product(
        [sorted(images["split"].dropna().unique()), sorted(images["label"].dropna().unique())],
        names=["split", "label"],
    )
    table = counts.reindex(cells, fill_value=0).rename("images").reset_index()
    table["largest_in_split"] = table.groupby("split")["images"].transform("max")
    table["share_of_largest"] = table["images"] / table["largest_in_split"]
    return table


def contents_table(images: pd.DataFrame) -> pd.DataFrame:
    """One row per distinct image (sha256): how often, in how many splits and under how many labels.

    Only duplicated contents need the listing columns built in Python; the ~95% of images
    that occur once take their own values, which keeps this fast on FER2013's 32k rows.
    """
    duplicated = images["sha256"].duplicated(keep=False).to_numpy()
    single = images.loc[~duplicated]
    singles = pd.DataFrame(
        {
            "sha256": single["sha256"],
            "copies": 1,
            "copies_in_one_split": 1,
            "splits": 1,
            "labels": 1,
            "ids": single["id"],
            "split_names": single["split"],
            "label_names": single["label"],
        }
    )
    groups = images.loc[duplicated].groupby("sha256", sort=False)
    per_split = images.loc[duplicated].groupby(["sha256", "split"], sort=False).size()
    copies = pd.DataFrame(
        {
            "copies": groups.size(),
            "copies_in_one_split": per_split.groupby(level="sha256", sort=False).max(),
            "splits": groups["split"].nunique(),
            "labels": groups["label"].nunique(),
            "ids": groups["id"].agg(_some_ids),
            "split_names": groups["split"].agg(_names),
            "label_names": groups["label"].agg(_names),
        }
    ).reset_index()
    return pd.concat([copies, singles], ignore_index=True)


def subjects_table(images: pd.DataFrame) -> pd.DataFrame | None:
    """One row per subject with the splits their images are in; None without subjects."""
    people = images[images["subject"].fillna("").astype(str) != ""]
    if people.empty:
        return None
    groups = people.groupby("subject")
    return pd.DataFrame(
        {
            "images": groups.size(),
            "splits": groups["split"].nunique(),
            "split_names": groups["split"].agg(_names),
        }
    ).reset_index()


# Plain Python over each group's values: pandas methods per group cost ~100x more here.
def _names(values: pd.Series) -> str:
    return ", ".join(sorted({str(value) for value in values}))


def _some_ids(ids: pd.Series) -> str:
    every = list(ids)
    shown = ", ".join(every[:IDS_SHOWN])
    return shown if len(every) <= IDS_SHOWN else f"{shown} and {len(every) - IDS_SHOWN} more"
