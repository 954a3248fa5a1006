"""Face detectors compared on faces no one here made: recall, false positives, ms per frame.

    python bench/detectors.py [--yunet FACE_DETECTION_YUNET.onnx] [--json OUT]

Every frame is 640x480 and goes through ``FaceFinder`` with the serve settings' defaults
(48 px smallest face, score threshold 0.8), as the registry model would search it:

- photos: Eileen Collins (``astronaut.png``, NASA, public domain) and the cameraman
  (``camera.png``, a face in three-quarter profile, CC0 by Lav Varshney) from scikit-image's
  bundled data, when scikit-image is installed (``pip install scikit-image``; not a project
  dependency), and Grace Hopper (``grace_hopper.jpg``, U.S. Navy, public domain) from
  matplotlib's sample data. Each face was boxed by hand (``PHOTOS``); each photo is rotated by
  0, +-15 and +-30 degrees about the face and scaled so that the face is 200, 120 or 64 px,
  then placed at a seeded position in the frame;
- CK+: 48x48 crops from ``../shared/data/ckplus48`` (seeded, across its classes), upscaled to
  160 or 96 px and pasted at a seeded position on a scikit-image texture or photo without
  faces (else a gray gradient);
- negatives: scikit-image's bundled photos and textures without a face (a cat, coffee, a
  rocket, gravel...), letterboxed to 640x480.

A face counts as found when a detection's centre lies inside its box and the detection's
larger side is 0.5 to 2 times the box's (detectors frame a face differently: Haar's square
takes in the forehead, MTCNN's box is tight); every other detection is a false positive.
ms per frame: the median of ``FaceFinder.detect`` (detection and cropping) over all frames,
after a warm-up. YuNet needs OpenCV's ``face_detection_yunet_*.onnx``, which no installed
package ships: it is measured only when ``--yunet`` names one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emoflow.components.serving.detection import FaceFinder  # noqa: E402 (after the sys.path line above)
from emoflow.components.settings import ServeSettings  # noqa: E402 (after the sys.path line above)

SIZE = (640, 480)
ANGLES = (0, -15, 15, -30, 30)
FACE_SIDES = (200, 120, 64)
CKPLUS_SIDES = (160, 96)
CKPLUS_FACES = 30
WARMUP = 3
# (where the photo comes from, its file, the face's box x, y, w, h, boxed by hand)
PHOTOS = {
    "astronaut": ("skimage", "astronaut.png", (178, 62, 92, 104)),
    "cameraman": ("skimage", "camera.png", (192, 108, 64, 86)),
    "grace_hopper": ("matplotlib", "grace_hopper.jpg", (170, 110, 190, 220)),
}
NEGATIVES = (
    "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "horse.png", "brick.png",
    "grass.png", "gravel.png", "moon.png", "coins.png", "hubble_deep_field.jpg", "retina.jpg",
    "text.png", "page.png", "cell.png", "clock_motion.png", "logo.png", "color.png", "ihc.png",
    "chessboard_RGB.png",
)  # fmt: skip


@dataclass(frozen=True)
class Frame:
    group: str  # what the frame tests, e.g. "photo 15deg" or "ck+ 96px" or "negative"
    image: np.ndarray  # gray, 480x640
    faces: tuple[tuple[float, float, float, float], ...]  # true boxes


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    frames = list(_frames())
    detectors = {
        "haar": ServeSettings(),
        "mtcnn": ServeSettings(detector="mtcnn"),
        "mtcnn, score >= 0.95": ServeSettings(detector="mtcnn", score_threshold=0.95),
    }
    if args.yunet:
        detectors["yunet"] = ServeSettings(detector="yunet", detector_model=args.yunet)
    print(f"machine: {_machine()}")
    groups = sorted({f.group for f in frames}, key=[f.group for f in frames].index)
    counts = {g: sum(len(f.faces) or 1 for f in frames if f.group == g) for g in groups}
    print(f"frames: {len(frames)} ({', '.join(f'{g}: {n}' for g, n in counts.items())})")
    if not args.yunet:
        print("yunet: skipped, no .onnx given (--yunet PATH)")
    results = {name: _measure(FaceFinder(settings), frames) for name, settings in detectors.items()}
    print(_table(results, groups))
    if args.json:
        args.json.write_text(json.dumps({"machine": _machine(), "results": results}, indent=2))
    return 0


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--yunet", type=Path, help="OpenCV's YuNet .onnx, to measure it too")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args(argv)


# --- Frames --------------------------------------------------------------------------------


def _frames() -> Iterator[Frame]:
    rng = np.random.default_rng(0)
    backgrounds = [_letterbox(image) for _, image in _negatives()]
    for name, (source, file, box) in PHOTOS.items():
        path = _sample_file(source, file)
        if path is None:
            print(f"{name}: skipped, {source} is not installed", file=sys.stderr)
            continue
        photo = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        for angle in ANGLES:
            for side in FACE_SIDES:
                image, face = _placed(photo, box, angle, side, rng)
                yield Frame(f"photos, {abs(angle)} deg", image, (face,))
    for side in CKPLUS_SIDES:
        for index, crop in enumerate(_ckplus_crops(rng)):
            background = backgrounds[index % len(backgrounds)] if backgrounds else _gradient()
            image, face = _pasted(crop, side, background, rng)
            yield Frame(f"ck+ crops, {side} px", image, (face,))
    for _, image in _negatives():
        yield Frame("no face", _letterbox(image), ())


def _placed(photo: np.ndarray, box, angle: float, side: int, rng) -> tuple[np.ndarray, tuple]:
    """The photo turned by ``angle`` about the face and scaled to a ``side``-px face, with the
    face at a seeded place in the frame; the face's new box (same centre, scaled size)."""
    x, y, w, h = box
    scale = side / max(w, h)
    width, height = SIZE
    target = (
        rng.uniform(side / 2 + 8, width - side / 2 - 8),
        rng.uniform(side / 2 + 8, height - side / 2 - 8),
    )
    matrix = cv2.getRotationMatrix2D((x + w / 2, y + h / 2), angle, scale)
    matrix[:, 2] += np.subtract(target, (x + w / 2, y + h / 2))
    image = cv2.warpAffine(photo, matrix, SIZE, flags=cv2.INTER_AREA, borderValue=128)
    return image, (target[0] - w * scale / 2, target[1] - h * scale / 2, w * scale, h * scale)


def _pasted(crop: np.ndarray, side: int, background: np.ndarray, rng) -> tuple[np.ndarray, tuple]:
    image = background.copy()
    x = int(rng.integers(8, SIZE[0] - side - 8))
    y = int(rng.integers(8, SIZE[1] - side - 8))
    image[y : y + side, x : x + side] = cv2.resize(
        crop, (side, side), interpolation=cv2.INTER_CUBIC
    )
    return image, (x, y, side, side)


def _ckplus_crops(rng) -> list[np.ndarray]:
    shared = Path(os.environ.get("EMOFLOW_SHARED_DATA", ROOT.parent / "shared" / "data"))
    files = sorted((shared / "ckplus48").glob("*/*.png"))
    if not files:
        print(f"ck+ crops: skipped, none under {shared / 'ckplus48'}", file=sys.stderr)
        return []
    chosen = rng.choice(len(files), size=min(CKPLUS_FACES, len(files)), replace=False)
    return [cv2.imread(str(files[i]), cv2.IMREAD_GRAYSCALE) for i in sorted(chosen)]


def _negatives() -> list[tuple[str, np.ndarray]]:
    found = []
    for file in NEGATIVES:
        path = _sample_file("skimage", file)
        if path is not None:
            found.append((file, cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)))
    return found


def _sample_file(source: str, file: str) -> Path | None:
    """A sample file shipped inside an installed package, or None."""
    if source == "matplotlib":
        from matplotlib import cbook

        return Path(cbook.get_sample_data(file, asfileobj=False))
    from importlib.util import find_spec

    spec = find_spec("skimage")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "data" / file
    return path if path.is_file() else None


def _letterbox(image: np.ndarray) -> np.ndarray:
    width, height = SIZE
    scale = min(width / image.shape[1], height / image.shape[0])
    resized = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    frame = np.full((height, width), 128, np.uint8)
    top, left = (height - resized.shape[0]) // 2, (width - resized.shape[1]) // 2
    frame[top : top + resized.shape[0], left : left + resized.shape[1]] = resized
    return frame


def _gradient() -> np.ndarray:
    width, height = SIZE
    row = np.clip(120 + np.linspace(-30, 30, width), 0, 255)
    return np.tile(row, (height, 1)).astype(np.uint8)


# --- Measuring -----------------------------------------------------------------------------


def _found(detection, face) -> bool:
    dx, dy, dw, dh = detection
    x, y, w, h = face
    centre_inside = x <= dx + dw / 2 <= x + w and y <= dy + dh / 2 <= y + h
    return centre_inside and 0.5 <= max(dw, dh) / max(w, h) <= 2.0


def _measure(finder: FaceFinder, frames: list[Frame]) -> dict:
    for frame in frames[:WARMUP]:
        finder.detect(frame.image)
    seconds, per_group = [], {}
    for frame in frames:
        start = time.perf_counter()
        boxes = finder.detect(frame.image).boxes
        seconds.append(time.perf_counter() - start)
        hits = [any(_found(b, face) for b in boxes) for face in frame.faces]
        false = sum(not any(_found(b, face) for face in frame.faces) for b in boxes)
        group = per_group.setdefault(frame.group, {"faces": 0, "found": 0, "false_positives": 0})
        group["faces"] += len(frame.faces)
        group["found"] += sum(hits)
        group["false_positives"] += false
    faces = sum(g["faces"] for g in per_group.values())
    return {
        "recall": sum(g["found"] for g in per_group.values()) / faces,
        "false_positives": sum(g["false_positives"] for g in per_group.values()),
        "frames": len(frames),
        "ms_per_frame_median": 1000 * statistics.median(seconds),
        "ms_per_frame_p95": 1000 * float(np.percentile(seconds, 95)),
        "groups": per_group,
    }


def _table(results: dict, groups: list[str]) -> str:
    header = ["detector", "recall", "false pos.", "ms/frame (p95)", *groups]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for name, r in results.items():
        cells = [
            name,
            f"{r['recall']:.2f}",
            str(r["false_positives"]),
            f"{r['ms_per_frame_median']:.0f} ({r['ms_per_frame_p95']:.0f})",
        ]
        for group in groups:
            g = r["groups"][group]
            cells.append(
                f"{g['found']}/{g['faces']}, {g['false_positives']} fp"
                if g["faces"]
                else f"{g['false_positives']} fp"
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _machine() -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return f"{cores} cores, load average {load}, OpenCV {cv2.__version__}"


if __name__ == "__main__":
    sys.exit(main())
