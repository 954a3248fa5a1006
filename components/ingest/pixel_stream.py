"""Writing ``pixels.npy`` a block of images at a time, for inputs too large to hold at once.

The interim format (``components.manifest``) keeps every image of a dataset in one
``pixels.npy``; ``np.save`` needs the whole array in memory, which at a million images is
2.3 GB on top of what ingest already holds. The file is instead written as the csv is
parsed: a header for zero images first, the images as they come, and the real count last.
NumPy pads a header so that its first dimension can grow in place to 21 digits, so the
final header has the placeholder's length and no byte of pixels moves.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

import numpy as np

from emoflow.components.manifest import IMAGE_SIZE

BLOCK = 4096  # images per block when copying kept rows


class PixelWriter:
    """Append uint8 48x48 images to a new ``.npy`` file; the header is completed on close."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._file = path.open("wb")
        self._header = self._write_header()

    def append(self, images: np.ndarray) -> None:
        if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE) or images.dtype != np.uint8:
            raise ValueError(f"expected uint8 N x {IMAGE_SIZE} x {IMAGE_SIZE}, got {images.shape}")
        self._file.write(np.ascontiguousarray(images).tobytes())
        self.count += len(images)

    def close(self) -> None:
        """Write the final count into the header; the file then loads with ``np.load``."""
        self._file.seek(0)
        if self._write_header() != self._header:
            raise RuntimeError(f"{self.path}: the .npy header changed length")
        self._file.close()

    def __enter__(self) -> PixelWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if kind is None:
            self.close()
        else:
            self._file.close()  # the caller's temporary folder goes, and the file with it

    def _write_header(self) -> int:
        header = {
            "descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
            "fortran_order": False,
            "shape": (self.count, IMAGE_SIZE, IMAGE_SIZE),
        }
        np.lib.format.write_array_header_1_0(self._file, header)
        return self._file.tell()


def keep_rows(path: Path, keep: np.ndarray) -> None:
    """Rewrite the ``.npy`` at ``path`` with only the images where ``keep`` is true.

    A block at a time through a mapping made for that block: pages read through one mapping
    of the whole file would stay resident and grow with it.
    """
    scratch = path.with_name(f"{path.name}.all")
    os.replace(path, scratch)
    with PixelWriter(path) as writer:
        for start in range(0, len(keep), BLOCK):
            block = np.load(scratch, mmap_mode="r")[start : start + BLOCK]
            writer.append(np.asarray(block[keep[start : start + BLOCK]]))
    scratch.unlink()
