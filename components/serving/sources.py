"""Where ``emoflow predict`` reads from: image files and folders, video files, cameras."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from emoflow.components.errors import EmoFlowError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})
VIDEO_SUFFIXES = frozenset({".avi", ".mp4", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"})


class PredictError(EmoFlowError, ValueError):
    """A source or an option that ``emoflow predict`` cannot use; the message says which."""


def image_files(sources: Sequence[Path]) -> list[tuple[Path, Path]]:
    """``(file, name for outputs)`` for image files and, recursively, images in folders."""
    found = []
    for source in sources:
        if source.is_dir():
            files = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            found += [(p, p.relative_to(source)) for p in files]
        elif source.is_file():
            found.append((source, Path(source.name)))
        else:
            raise FileNotFoundError(f"{source}: no such file or folder")
    return found


def split_sources(sources: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """Videos by suffix; everything else is an image file or a folder of images."""
    videos = [s for s in sources if s.suffix.lower() in VIDEO_SUFFIXES]
    return [s for s in sources if s not in videos], videos


class VideoSource:
    """A video file or a camera index, opened with OpenCV; frames as ``(index, seconds, BGR)``."""

    def __init__(self, source: Path | int):
        self.camera = isinstance(source, int)
        self.name = f"webcam:{source}" if self.camera else str(source)
        self.stem = f"webcam{source}" if self.camera else Path(source).stem
        self._capture = cv2.VideoCapture(source if self.camera else str(source))
        if not self._capture.isOpened():
            raise PredictError(
                f"{self.name}: OpenCV cannot open this {'camera' if self.camera else 'video'}"
            )
        self.fps = self._capture.get(cv2.CAP_PROP_FPS) or 0.0
        self.frame_count = (
            None if self.camera else int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
        )

    def frames(self, max_frames: int | None = None) -> Iterator[tuple[int, float, np.ndarray]]:
        started = time.monotonic()
        try:
            index = 0
            while max_frames is None or index < max_frames:
                ok, frame = self._capture.read()
                if not ok:
                    break
                # A file's clock is its frame rate; a camera's is the wall clock (its rate varies).
                seconds = (
                    time.monotonic() - started if self.camera or self.fps <= 0 else index / self.fps
                )
                yield index, seconds, frame
                index += 1
        finally:
            self._capture.release()
