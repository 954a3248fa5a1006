"""Videos and webcams -> one JSON-ready record per frame, with every tracked face in it."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from emoflow.components.serving.face_tracking import FrameAnalyser
from emoflow.components.serving.image_model import EmotionClassifier
from emoflow.components.serving.prediction_files import draw
from emoflow.components.serving.sources import VideoSource
from emoflow.components.settings import PredictSettings


def predict_video(
    classifier: EmotionClassifier,
    source: Path | int,
    settings: PredictSettings,
    annotate_dir: Path | None = None,
    max_frames: int | None = None,
) -> Iterator[dict]:
    """One JSON-ready record per frame: its time and every tracked face in it."""
    video = VideoSource(source)
    analyse = FrameAnalyser(classifier, settings)
    writer, finished = None, False
    target = annotate_dir / f"{video.stem}.annotated.avi" if annotate_dir is not None else None
    partial = target.with_name(f".{target.stem}.partial.avi") if target is not None else None
    total = min(filter(None, (video.frame_count, max_frames)), default=None)
    try:
        for index, seconds, frame in tqdm(
            video.frames(max_frames), desc=video.name, unit="frame", total=total, file=sys.stderr
        ):
            tracked = analyse(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
            if partial is not None:
                writer = writer or _video_writer(partial, video.fps, frame)
                labels = [f"#{f.track} {f.emotion} ({f.dominant})" for f in tracked]
                writer.write(draw(frame, np.array([f.box for f in tracked]).reshape(-1, 4), labels))
            record = {"source": video.name, "frame": index, "time_s": round(seconds, 3)}
            yield {**record, "faces": [f.record() for f in tracked]}
        finished = True
    except (KeyboardInterrupt, GeneratorExit):
        finished = True  # the user stopped (a webcam is stopped with Ctrl-C): keep what was seen
        raise
    finally:
        if writer is not None:
            writer.release()
            if finished:  # in place only when whole, like every other output
                os.replace(partial, target)
            else:
                partial.unlink(missing_ok=True)


def _video_writer(path: Path, fps: float, frame: np.ndarray) -> cv2.VideoWriter:
    """Motion JPEG in AVI: every OpenCV build can write it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    size = (frame.shape[1], frame.shape[0])
    return cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps or 25.0, size)
