"""What ``emoflow predict`` writes: tables, JSON lines, annotated copies, each once whole."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

import cv2
import numpy as np
import pandas as pd

from emoflow.components.artifacts import atomic_file
from emoflow.components.serving.sources import PredictError


def write_table(table: pd.DataFrame, out: Path | None, stream: TextIO | None = None) -> None:
    """CSV or JSON (a list of records) by the suffix of ``out``; CSV on stdout without."""
    if out is None:
        table.to_csv(stream or sys.stdout, index=False)
        return
    with atomic_file(out) as tmp:
        if out.suffix == ".json":
            table.to_json(tmp, orient="records", indent=2)
        else:
            table.to_csv(tmp, index=False)


def write_annotated_image(
    path: Path, target: Path, table: pd.DataFrame, emotions: list[str]
) -> None:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    boxes = table[["x", "y", "w", "h"]].to_numpy()
    labels = [f"{row.emotion} {getattr(row, row.emotion):.2f}" for row in table.itertuples()]
    target.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(target.suffix, draw(image, boxes, labels))
    if not ok:
        raise PredictError(f"{target}: OpenCV cannot write a {target.suffix} image")
    with atomic_file(target) as tmp:
        tmp.write_bytes(encoded.tobytes())


def draw(image: np.ndarray, boxes: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """A copy of a BGR image with each box and its label drawn on it."""
    out = image.copy()
    thickness = max(1, round(max(image.shape[:2]) / 400))
    for (x, y, w, h), label in zip(boxes, labels):
        cv2.rectangle(out, (int(x), int(y)), (int(x + w), int(y + h)), (0, 200, 0), thickness)
        cv2.putText(
            out,
            label,
            (int(x), max(12, int(y) - 4)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.5 * thickness,
            (0, 200, 0),
            thickness,
        )
    return out


def write_lines(records: Iterator[dict], out: Path | None, stream: TextIO | None = None) -> int:
    """JSON lines to ``out`` (in place once complete) or, as they come, to ``stream``.

    Ctrl-C ends the input (it is how a webcam is stopped): what was predicted is kept.
    """
    count, stream = 0, stream or sys.stdout
    with contextlib.ExitStack() as stack:
        if out is not None:
            stream = stack.enter_context(stack.enter_context(atomic_file(out)).open("w"))
        try:
            for record in records:
                stream.write(json.dumps(record) + "\n")
                stream.flush()
                count += 1
        except KeyboardInterrupt:
            pass
    return count
