"""Frames per second and per-face latency on a 640x480 clip with one face: ours vs fer's.

    python bench/video.py [--frames 150] [--model URI_OR_PATH] [--json OUT] [--detector mtcnn]

Both pipelines detect faces with the same Haar cascade file (OpenCV's frontal face) and the
same settings (scale 1.1, 5 neighbours, 48 px smallest face), unless ``--detector mtcnn``
gives ours MTCNN (``serve.detector``); each then classifies its own way:

- ours: the classifier inside the registry model (square crop, 48x48, ``to_model_input``,
  the network through one traced ``tf.function``), twice: searching every frame whole, as
  the REST model does for each image, and as ``emoflow predict`` runs a video
  (``FrameAnalyser``: the whole frame every 10th frame, only around tracked faces between);
- fer: ``FER(use_tflite=False).detect_emotions``: its padding, 64x64 crop and [-1, 1]
  scaling, its bundled ``emotion_model.hdf5`` loaded by Keras; its default (a quantized
  TFLite model) is measured too, for reference.

Frames/s: whole frames (gray conversion, detection, classification) over the decoded clip;
decoding is left out, it is the same for both. Per-face latency: classifying one face given
its box (crop, preprocessing, network). The clip is written with ``cv2.VideoWriter`` (Motion
JPEG) and read back, so compression artefacts are real. Without ``--model``, our network is
the default ConvolutionalNN trained for a few epochs on the built-in sample: speed does not
depend on accuracy. fer is installed apart, ``pip install --no-deps fer==25.10.3`` (its
metadata pulls torch and opencv-contrib-python). Exit status 1 when our video path is under
3x fer's (hdf5) frames/s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emoflow.components.serving.detection import HAAR_CASCADE, FaceFinder, crop_faces  # noqa: E402 (after the sys.path line above)
from emoflow.components.serving.face_tracking import FrameAnalyser  # noqa: E402 (after the sys.path line above)
from emoflow.components.serving.image_model import EmotionClassifier  # noqa: E402 (after the sys.path line above)
from emoflow.components.settings import MlflowSettings, PredictSettings, ServeSettings  # noqa: E402 (after the sys.path line above)

SIZE = (640, 480)
FACE_PX = 200
FPS = 15.0
WARMUP = 5
TARGET_SPEEDUP = 3.0
VIDEO_PATH = f"ours, video path (whole frame every {PredictSettings().full_scan_every}th)"


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    settings = ServeSettings(detector=args.detector)  # ours; fer keeps its Haar cascade
    with tempfile.TemporaryDirectory(prefix="emoflow-video-bench-") as tmp:
        frames = read_clip(write_clip(Path(tmp) / "clip.avi", args.frames))
        classifier = _our_classifier(args.model, settings, Path(tmp))
    finder = FaceFinder(settings)
    boxes = [finder.boxes(_gray(frame)) for frame in frames]
    print(f"machine: {_machine()}")
    print(
        f"clip: {len(frames)} frames {SIZE[0]}x{SIZE[1]}, one face of ~{FACE_PX} px; found in "
        f"{sum(len(b) == 1 for b in boxes)} frames by the shared detector"
    )
    rows = {
        name: _measure(frames, boxes, *pipeline) for name, pipeline in _ours(classifier).items()
    }
    fer = _fer_pipelines(ServeSettings())
    if fer is None:
        print(
            "fer is not installed: pip install --no-deps fer==25.10.3 (see this file's docstring)"
        )
    else:
        for name, pipeline in fer.items():
            rows[name] = _measure(frames, boxes, *pipeline)
    print(_table(rows))
    if args.json:
        args.json.write_text(
            json.dumps({"machine": _machine(), "frames": len(frames), "results": rows}, indent=2)
        )
    if fer is None:
        return 2
    baseline = rows["fer (hdf5)"]["fps"]
    for name in (name for name in rows if name.startswith("ours")):
        print(f"{name} / fer (hdf5) frames/s: {rows[name]['fps'] / baseline:.1f}x")
    met = rows[VIDEO_PATH]["fps"] >= TARGET_SPEEDUP * baseline
    verdict = "met" if met else "MISSED"
    print(f"target: our video path >= {TARGET_SPEEDUP:.0f}x fer (hdf5) frames/s: {verdict}")
    return 0 if met else 1


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument(
        "--model", help="models:/NAME@ALIAS, an MLflow model folder or a .keras file"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--detector", choices=("haar", "mtcnn"), default="haar", help="our face detector"
    )
    return parser.parse_args(argv)


# --- The clip ------------------------------------------------------------------------------


def write_clip(path: Path, count: int) -> Path:
    """One face drifting over a lit background, as a webcam sees a viewer."""
    face = cv2.resize(_face_crop(), (FACE_PX, FACE_PX), interpolation=cv2.INTER_CUBIC)
    width, height = SIZE
    background = np.clip(
        110 + np.linspace(-40, 40, width)[np.newaxis, :] + np.zeros((height, 1)), 0, 255
    )
    rng = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, SIZE)
    for index in range(count):
        frame = background + rng.normal(0, 3, background.shape)
        x = int((width - FACE_PX) / 2 + 60 * np.sin(index / 15))
        y = int((height - FACE_PX) / 2 + 20 * np.cos(index / 20))
        frame[y : y + FACE_PX, x : x + FACE_PX] = face
        writer.write(cv2.cvtColor(np.clip(frame, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR))
    writer.release()
    return path


def read_clip(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def _face_crop() -> np.ndarray:
    """A real CK+48 face where ``../shared/data`` exists, else a synthetic sample face."""
    shared = (
        Path(os.environ.get("EMOFLOW_SHARED_DATA", ROOT.parent / "shared" / "data")) / "ckplus48"
    )
    if shared.is_dir():
        return cv2.imread(str(min((shared / "happy").glob("*.png"))), cv2.IMREAD_GRAYSCALE)
    from emoflow.components.sample.generate import generate_sample
    from emoflow.components.settings import SampleSettings

    with tempfile.TemporaryDirectory() as tmp:
        files = generate_sample(
            SampleSettings(
                out_dir=Path(tmp) / "s", images_per_class=3, ckplus_subjects=1, ckplus_frames=2
            )
        )
        return cv2.imread(
            str(max((files.ckplus_dir / "happy").glob("*.png"))), cv2.IMREAD_GRAYSCALE
        )


# --- The pipelines -------------------------------------------------------------------------


def _our_classifier(model: str | None, settings: ServeSettings, folder: Path) -> EmotionClassifier:
    if model:
        from emoflow.components.serving.predict import load_classifier

        return load_classifier(model, settings, MlflowSettings())
    return EmotionClassifier.from_keras(_sample_model(folder), _sample_emotions(), settings)


def _sample_emotions() -> list[str]:
    from emoflow.components import labels

    return list(labels.FER2013_CODES.values())


def _sample_model(folder: Path) -> Path:
    """The default ConvolutionalNN after 3 epochs on the built-in sample (a few seconds)."""
    import keras
    import pandas as pd

    from emoflow.components.model_input import to_model_input
    from emoflow.components.sample.generate import generate_sample
    from emoflow.components.settings import SampleSettings
    from emoflow.components.training import architectures

    files = generate_sample(
        SampleSettings(out_dir=folder / "sample", images_per_class=40, ckplus_subjects=1)
    )
    table = pd.read_csv(files.fer2013_csv)
    faces = np.stack([np.asarray(p.split(), np.uint8) for p in table.pixels]).reshape(-1, 48, 48)
    keras.utils.set_random_seed(0)
    network = architectures.build("convnn", len(_sample_emotions()), 64)
    network.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    network.fit(to_model_input(faces), table.emotion.to_numpy(), epochs=3, batch_size=64, verbose=0)
    network.save(folder / "model.keras")
    return folder / "model.keras"


Frame = Callable[[np.ndarray], object]
Face = Callable[[np.ndarray, np.ndarray], object]


def _ours(classifier: EmotionClassifier) -> dict[str, tuple[Frame, Face]]:
    """Every frame searched whole (the image path), and the video path (``FrameAnalyser``)."""
    margin = classifier.settings.margin
    video = FrameAnalyser(classifier, PredictSettings())

    def whole_frame(image: np.ndarray) -> object:
        return classifier.probabilities(classifier.finder.detect(_gray(image)).crops)

    def faces(image: np.ndarray, boxes: np.ndarray) -> object:
        return classifier.probabilities(crop_faces(_gray(image), boxes, margin))

    return {
        VIDEO_PATH: (lambda image: video(_gray(image)), faces),
        "ours, every frame searched whole": (whole_frame, faces),
    }


def _fer_pipelines(settings: ServeSettings) -> dict[str, tuple[Frame, Face]] | None:
    try:
        from fer.fer import FER
    except ImportError:
        return None
    pipelines = {}
    for name, tflite in (("fer (hdf5)", False), ("fer (TFLite, its default)", True)):
        detector = FER(
            cascade_file=str(HAAR_CASCADE),
            scale_factor=settings.scale_factor,
            min_neighbors=settings.min_neighbors,
            min_face_size=settings.min_face_px,
            use_tflite=tflite,
        )
        pipelines[name] = (
            detector.detect_emotions,
            lambda image, boxes, d=detector: d.detect_emotions(image, boxes),
        )
    return pipelines


# --- Measuring -----------------------------------------------------------------------------


def _measure(frames: list[np.ndarray], boxes: list[np.ndarray], frame: Frame, faces: Face) -> dict:
    for image, found in zip(frames[:WARMUP], boxes[:WARMUP]):  # traces, caches, thread pools
        frame(image)
        faces(image, found)
    frame_ms = _timed(lambda image, _: frame(image), frames, boxes)
    face_ms = [
        ms / len(found) for ms, found in zip(_timed(faces, frames, boxes), boxes) if len(found)
    ]
    return {
        "fps": 1000.0 * len(frame_ms) / sum(frame_ms),
        "frame_ms_median": float(np.median(frame_ms)),
        "face_ms_median": float(np.median(face_ms)),
        "face_ms_p95": float(np.percentile(face_ms, 95)),
    }


def _timed(step: Callable, frames: list[np.ndarray], boxes: list[np.ndarray]) -> list[float]:
    elapsed = []
    for image, found in zip(frames, boxes):
        start = time.perf_counter()
        step(image, found)
        elapsed.append(1000.0 * (time.perf_counter() - start))
    return elapsed


def _table(rows: dict[str, dict]) -> str:
    lines = [
        "| pipeline | frames/s | frame ms (median) | per-face ms (median) | per-face ms (p95) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, r in rows.items():
        figures = (r["frame_ms_median"], r["face_ms_median"], r["face_ms_p95"])
        lines.append(
            f"| {name} | {r['fps']:.1f} | " + " | ".join(f"{v:.2f}" for v in figures) + " |"
        )
    return "\n".join(lines)


def _gray(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def _machine() -> str:
    import tensorflow as tf

    info = Path("/proc/cpuinfo")
    names = (
        [
            line.split(":", 1)[1].strip()
            for line in info.read_text().splitlines()
            if line.startswith("model name")
        ]
        if info.exists()
        else []
    )
    cpu = names[0] if names else platform.processor() or "unknown CPU"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{cpu}, {cores} cores available, load {os.getloadavg()[0]:.1f}; "
        f"Python {platform.python_version()}, TensorFlow {tf.__version__}, OpenCV {cv2.__version__}"
    )


if __name__ == "__main__":
    sys.exit(main())
