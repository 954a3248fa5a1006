"""``emoflow predict``: emotions in image files, videos and webcams.

Images become a table (CSV or JSON), one row per face, as the registry model returns it.
Videos and webcams become JSON lines, one per frame. Per-frame predictions flicker, and a
story that branches on a viewer's emotion (RIOT) needs a steady signal, so each face is
tracked across frames (greedy IoU matching), its probabilities are smoothed with an
exponential moving average, and its *dominant* emotion is the one with the highest mean
probability over the last ``window`` frames.

Every prediction goes through :class:`components.registry_model.EmotionClassifier`, the
object inside the registry model, so the CLI preprocesses exactly as the REST server does.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from components.artifacts import atomic_file, read_json
from components.faces import ImageError, decode_image, iou
from components.registry_model import EmotionClassifier
from components.settings import MlflowSettings, PredictSettings, ServeSettings

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})
VIDEO_SUFFIXES = frozenset({".avi", ".mp4", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"})
TABLE_SUFFIXES = (".csv", ".json")
LINES_SUFFIX = ".jsonl"
RUN_FILE = "run.json"  # written by the train stage beside model.keras; holds the emotions


class PredictError(ValueError):
    """A source or an option that ``emoflow predict`` cannot use; the message says which."""


# --- Loading the model ---------------------------------------------------------------------


def load_classifier(
    model: str, serve: ServeSettings, mlflow_settings: MlflowSettings
) -> EmotionClassifier:
    """A registry URI (``models:/name@alias``), an MLflow model folder, or a ``.keras`` file.

    A ``.keras`` file has no detector settings of its own: ``serve`` supplies them, and the
    emotions come from the ``run.json`` the train stage writes beside it.
    """
    import mlflow

    path = Path(model)
    if path.suffix == ".keras":
        run_file = path.with_name(RUN_FILE)
        if not path.is_file() or not run_file.is_file():
            raise FileNotFoundError(
                f"{path}: a .keras model needs the file and its {RUN_FILE} beside it"
            )
        return EmotionClassifier.from_keras(path, read_json(run_file)["emotions"], serve)
    if ":/" not in model and not (path / "MLmodel").is_file():
        raise FileNotFoundError(
            f"{model}: not a registry URI, an MLflow model folder or a .keras file"
        )
    from components.tracking import tracking_uri

    uri = tracking_uri(mlflow_settings)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    classifier = mlflow.pyfunc.load_model(model).unwrap_python_model()
    if not isinstance(classifier, EmotionClassifier):
        raise PredictError(
            f"{model}: not an EmoFlow model (it holds a {type(classifier).__name__})"
        )
    return classifier


# --- Images --------------------------------------------------------------------------------


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


def predict_images(
    classifier: EmotionClassifier,
    files: Sequence[tuple[Path, Path]],
    mode: str = "detect",
    annotate_dir: Path | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """One row per face with its source file; unreadable files are skipped and listed."""
    tables, skipped = [], []
    for path, name in tqdm(
        files, desc="images", unit="image", file=sys.stderr, disable=len(files) < 2
    ):
        try:
            gray = decode_image(path.read_bytes(), str(path), classifier.settings)
        except ImageError as err:
            skipped.append(str(err))
            continue
        table = classifier.table([gray], mode).drop(columns="image")
        table.insert(0, "source", str(path))
        tables.append(table)
        if annotate_dir is not None:
            _write_annotated_image(path, annotate_dir / name, table, classifier.emotions)
    empty = classifier.table([], mode).drop(columns="image")
    empty.insert(0, "source", pd.Series(dtype=object))
    return pd.concat([empty, *tables], ignore_index=True), skipped


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


def _write_annotated_image(
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


# --- Video: tracking, smoothing, windows ---------------------------------------------------


@dataclass
class _Track:
    ident: int
    box: np.ndarray
    smoothed: np.ndarray
    recent: deque
    missed: int = 0


@dataclass(frozen=True)
class TrackedFace:
    """One face in one frame, as the video output reports it."""

    track: int
    box: tuple[int, int, int, int]
    probabilities: dict[str, float]  # smoothed
    emotion: str  # top smoothed emotion now
    dominant: str  # top mean probability over the window

    def record(self) -> dict:
        return {
            "track": self.track,
            "box": list(self.box),
            "emotion": self.emotion,
            "dominant": self.dominant,
            "probabilities": {k: round(v, 4) for k, v in self.probabilities.items()},
        }


@dataclass
class FaceTracker:
    """Follows faces across frames and smooths each one's probabilities over time."""

    emotions: list[str]
    settings: PredictSettings
    _tracks: list[_Track] = field(default_factory=list)
    _next_id: int = 0

    def update(self, boxes: np.ndarray, probabilities: np.ndarray) -> list[TrackedFace]:
        """Match this frame's faces to tracks, update them, and report every face in it."""
        alpha = self.settings.ema_alpha
        matched = self._match(boxes)
        reports, updated = [], set()
        for box, p, track in zip(boxes, probabilities, matched):
            if track is None:
                track = _Track(self._next_id, box, p.copy(), deque(maxlen=self.settings.window))
                self._next_id += 1
                self._tracks.append(track)
            else:
                track.smoothed = alpha * p + (1 - alpha) * track.smoothed
                track.box, track.missed = box, 0
            track.recent.append(p)
            updated.add(track.ident)
            reports.append(self._report(track))
        for track in self._tracks:
            if track.ident not in updated:
                track.missed += 1
        self._tracks = [t for t in self._tracks if t.missed <= self.settings.max_missed]
        return reports

    def boxes(self) -> np.ndarray:
        """The last box of every live track."""
        return np.array([t.box for t in self._tracks], np.int64).reshape(-1, 4)

    def _match(self, boxes: np.ndarray) -> list[_Track | None]:
        """Greedy: the best-overlapping (box, track) pair first, each used once."""
        pairs = sorted(
            (
                (iou(box, track.box), b, t)
                for b, box in enumerate(boxes)
                for t, track in enumerate(self._tracks)
            ),
            reverse=True,
        )
        matched: list[_Track | None] = [None] * len(boxes)
        used = set()
        for overlap, b, t in pairs:
            if overlap < self.settings.iou_threshold:
                break
            if matched[b] is None and t not in used:
                matched[b] = self._tracks[t]
                used.add(t)
        return matched

    def _report(self, track: _Track) -> TrackedFace:
        window_mean = np.mean(track.recent, axis=0)
        return TrackedFace(
            track=track.ident,
            box=tuple(int(v) for v in track.box),
            probabilities=dict(zip(self.emotions, track.smoothed.astype(float).tolist())),
            emotion=self.emotions[int(np.argmax(track.smoothed))],
            dominant=self.emotions[int(np.argmax(window_mean))],
        )


class FrameAnalyser:
    """Consecutive gray frames -> tracked, smoothed faces.

    Detection costs most of a frame (a Haar pass over 640x480 is ~30 ms on one CPU core,
    the network ~1 ms a face), so the whole frame is searched only every
    ``full_scan_every`` frames and, in between, only around the faces being tracked.
    """

    def __init__(self, classifier: EmotionClassifier, settings: PredictSettings):
        self.classifier = classifier
        self.settings = settings
        self.tracker = FaceTracker(classifier.emotions, settings)
        self._frames = 0

    def __call__(self, gray: np.ndarray) -> list[TrackedFace]:
        finder, known = self.classifier.finder, self.tracker.boxes()
        if self._frames % self.settings.full_scan_every == 0 or not len(known):
            faces = finder.detect(gray)
        else:
            faces = finder.at(gray, finder.boxes_near(gray, known))
        self._frames += 1
        return self.tracker.update(faces.boxes, self.classifier.probabilities(faces.crops))


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


# --- The command ---------------------------------------------------------------------------


def split_sources(sources: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """Videos by suffix; everything else is an image file or a folder of images."""
    videos = [s for s in sources if s.suffix.lower() in VIDEO_SUFFIXES]
    return [s for s in sources if s not in videos], videos


def run(
    classifier: EmotionClassifier,
    sources: Sequence[Path],
    settings: PredictSettings,
    out: Path | None = None,
    annotate_dir: Path | None = None,
    mode: str = "detect",
    webcam: int | None = None,
    max_frames: int | None = None,
    warn: Callable[[str], None] = lambda message: print(message, file=sys.stderr),
) -> str:
    """Predict on images, or on videos / a webcam, and write the results; return a summary."""
    if mode not in ("detect", "faces"):
        raise PredictError(f"mode must be detect or faces, got {mode!r}")
    images, videos = split_sources(sources)
    streams: list[Path | int] = [*videos, *([webcam] if webcam is not None else [])]
    if images and streams:
        raise PredictError(
            "give images and videos (or a webcam) in separate runs: their outputs differ"
        )
    if not images and not streams:
        raise PredictError("nothing to predict: give image files, folders, videos or --webcam")
    if streams:
        if mode != "detect":
            raise PredictError(f"mode {mode} is for images; video frames are always searched")
        if out is not None and out.suffix != LINES_SUFFIX:
            raise PredictError(
                f"{out}: video predictions are JSON lines, use a {LINES_SUFFIX} file"
            )
        records = (
            r
            for s in streams
            for r in predict_video(classifier, s, settings, annotate_dir, max_frames)
        )
        return f"{write_lines(records, out)} frames"
    if out is not None and out.suffix not in TABLE_SUFFIXES:
        raise PredictError(f"{out}: image predictions are a table, use a .csv or .json file")
    table, skipped = predict_images(classifier, image_files(images), mode, annotate_dir)
    for message in skipped:
        warn(f"skipped {message}")
    write_table(table, out)
    return (
        f"{table['source'].nunique()} images with faces, {len(table)} faces, {len(skipped)} skipped"
    )
