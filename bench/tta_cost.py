"""What test-time averaging costs per face in the served model: none, flip and ten crops.

    python bench/tta_cost.py [--model PATH.keras] [--repeats 200]

Times ``EmotionClassifier.probabilities`` (the registry model's classification step, after
detection) for one face at a time, as a webcam stream calls it, and for a batch of 32 faces,
with each ``serve.tta`` setting. The network is the modern CPU recipe of ``params.yaml``
(random weights unless ``--model`` names a trained ``.keras`` file: speed does not depend on
the weights). Prints the median and 95th percentile in ms per face.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    args = _arguments()
    from emoflow.components.serving.image_model import EmotionClassifier
    from emoflow.components.settings import ServeSettings, load_params

    keras_path = args.model or _random_network(load_params(ROOT / "params.yaml"))
    emotions = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    rng = np.random.default_rng(0)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print("| tta | batch | median ms/face | p95 ms/face |")
    print("| --- | ---: | ---: | ---: |")
    for tta in ("none", "flip", "ten_crop"):
        classifier = EmotionClassifier.from_keras(keras_path, emotions, ServeSettings(tta=tta))
        for batch in (1, 32):
            faces = rng.integers(0, 256, (batch, 48, 48), dtype=np.uint8)
            classifier.probabilities(faces)  # traces the function
            times = []
            for _ in range(args.repeats if batch == 1 else max(1, args.repeats // 10)):
                started = time.perf_counter()
                classifier.probabilities(faces)
                times.append((time.perf_counter() - started) * 1000 / batch)
            median, p95 = np.percentile(times, [50, 95])
            print(f"| {tta} | {batch} | {median:.2f} | {p95:.2f} |")
    return 0


def _random_network(params) -> Path:
    import tempfile

    from emoflow.components.training import architectures

    recipe = params.train.recipe("modern")
    network = architectures.build("modern", 7, recipe.dense_units, recipe)
    path = Path(tempfile.mkdtemp()) / "modern.keras"
    network.save(path)
    return path


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="a trained .keras file")
    parser.add_argument("--repeats", type=int, default=200)
    return parser.parse_args()


if __name__ == "__main__":
    raise SystemExit(main())
