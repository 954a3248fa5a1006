"""EmoPy's published table, re-run: test accuracy per emotion set on FER2013.

    python bench/seed_table.py EPOCHS [--architectures A ...] [--sets SET ...]
                                      [--recipe KEY=VALUE ...]
                                      [--data DATA] [--work DIR]

EmoPy published ConvolutionalNN's accuracy on seven subsets of FER2013's emotions; this
trains our networks on the same subsets, for EPOCHS epochs each (the budget), and prints
ours beside theirs. The data is ``DATA`` (default ``$EMOFLOW_SHARED_DATA``, else
``../shared/data``) through our own stages: ingest maps Training to train (less a seeded,
stratified validation carve) and, in a copy without PrivateTest rows, PublicTest to test;
ours are accuracies on that test split. Each network trains with its recipe from
``params.yaml`` (``train.overrides``), epochs replaced by the budget; the modern network is
scored with flip test-time augmentation, the others without. Everything is written under
``--work`` (default: a folder in the temp dir, kept so that a rerun reuses the shards and a
killed run resumes from its checkpoints). ``--sets`` picks emotion sets by name; ``fer7``,
all seven classes, is the state-of-the-art comparison (about 0.73 for one network; EmoPy
published no such figure). ``--recipe`` changes the recipe for this run only, as an entry of
``train.overrides`` would (values in YAML; a nested block replaces that block whole), e.g.
``--recipe mixup_alpha=0 'modern={widths: [32, 64, 128, 256]}'`` for a budget that fits a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# EmoPy's README: ConvolutionalNN, FER2013, by emotion set ("calm" is neutral).
PUBLISHED: dict[str, tuple[tuple[str, ...], float]] = {
    "anger_fear_surprise_calm": (("angry", "fear", "surprise", "neutral"), 0.5637),
    "disgust_happiness_surprise": (("disgust", "happy", "surprise"), 0.9045),
    "anger_happiness_calm": (("angry", "happy", "neutral"), 0.7218),
    "anger_fear_surprise": (("angry", "fear", "surprise"), 0.6503),
    "anger_disgust": (("angry", "disgust"), 0.9404),
    "anger_fear": (("angry", "fear"), 0.7029),
    "disgust_surprise": (("disgust", "surprise"), 0.9624),
}
SETS: dict[str, tuple[tuple[str, ...], float | None]] = {
    **PUBLISHED,
    "fer7": (("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"), None),
}
FLIP_TTA = {"modern"}


def main() -> int:
    args = _arguments()
    fer2013, ckplus = args.data / "fer2013" / "fer2013.csv.gz", args.data / "ckplus48"
    if not fer2013.exists():
        print(f"{fer2013}: not found; pass --data, a folder like ../shared/data")
        return 2
    from emoflow.components.settings import load_params

    params = _with_recipe(load_params(ROOT / "params.yaml"), args.architectures, args.recipe)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{_devices()}"
    )
    print(f"budget: {args.epochs} epochs per model; work folder: {args.work}")
    if args.recipe:
        print(f"recipe changes: {' '.join(args.recipe)}")
    shards = _shards(params, fer2013, ckplus, args.work)
    rows = []
    for name in args.sets:
        emotions, published = SETS[name]
        for architecture in args.architectures:
            rows.append(_run(params, architecture, name, emotions, published, args, shards))
            print(json.dumps(rows[-1]), flush=True)
    _print_table(rows, args.architectures)
    (args.work / "seed_table.json").write_text(json.dumps(rows, indent=2) + "\n")
    return 0


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("epochs", type=int, help="epochs per model (the budget)")
    parser.add_argument("--architectures", nargs="+", default=["convnn"], help="default: convnn")
    parser.add_argument(
        "--sets",
        nargs="+",
        choices=list(SETS),
        default=list(PUBLISHED),
        help="default: EmoPy's seven",
    )
    parser.add_argument(
        "--recipe",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="recipe changes for this run, as in train.overrides (YAML values)",
    )
    default_data = os.environ.get("EMOFLOW_SHARED_DATA", ROOT.parent / "shared" / "data")
    parser.add_argument("--data", type=Path, default=Path(default_data))
    parser.add_argument(
        "--work", type=Path, default=Path(tempfile.gettempdir()) / "emoflow-seed-table"
    )
    return parser.parse_args()


def _with_recipe(params, architectures: list[str], assignments: list[str]):
    """``params`` with ``assignments`` (``key=yaml``) added to each architecture's overrides."""
    import yaml

    from emoflow.components.settings import Params

    changes = {}
    for assignment in assignments:
        key, separator, value = assignment.partition("=")
        if not separator:
            raise SystemExit(f"--recipe {assignment}: expected KEY=VALUE")
        changes[key] = yaml.safe_load(value)
    if not changes:
        return params
    document = params.model_dump(mode="json", by_alias=True)
    overrides = document["train"]["overrides"]
    for architecture in architectures:
        overrides[architecture] = {**overrides.get(architecture, {}), **changes}
    return Params.model_validate(document)


def _shards(params, fer2013: Path, ckplus: Path, work: Path) -> Path:
    """FER2013 as TFRecord shards, through ingest and preprocess; reused when already there."""
    from emoflow.components.ingest.stage import ingest
    from emoflow.components.records.preprocess import preprocess

    target = work / "processed" / "fer2013"
    if target.is_dir():
        return target
    started = time.perf_counter()
    interim = ingest(
        params.ingest.model_copy(
            update={"fer2013": fer2013, "ckplus": ckplus, "out_dir": work / "interim"}
        )
    )
    preprocess(
        {"fer2013": interim.fer2013},
        params.preprocess.model_copy(update={"out_dir": work / "processed"}),
        params.augment.model_copy(update={"grid_png": work / "augmentation_grid.png"}),
    )
    print(f"ingest + preprocess: {time.perf_counter() - started:.0f} s")
    return target


def _run(
    params, architecture: str, name: str, emotions, published: float | None, args, shards: Path
) -> dict:
    from emoflow.components.settings import MlflowSettings, ModelCell
    from emoflow.components.training.train import train

    recipe = params.train.recipe(architecture).model_copy(
        update={"epochs": args.epochs, "out_dir": args.work / "models"}
    )
    cell = ModelCell(architecture=architecture, emotion_set=name, emotions=emotions)
    store = MlflowSettings(
        tracking_uri=f"sqlite:///{(args.work / 'mlflow.db').resolve()}", experiment="seed-table"
    )
    started = time.perf_counter()
    trained = train(shards, cell, recipe, params.augment, store)
    seconds = time.perf_counter() - started
    history = json.loads((trained.folder / "history.json").read_text())
    accuracy, count = _test_accuracy(trained.model, shards, emotions, architecture in FLIP_TTA)
    return {
        "emotion_set": name,
        "architecture": architecture,
        "published": published,
        "ours": round(accuracy, 4),
        "test_images": count,
        "epochs_run": len(history["loss"]),
        "best_val_accuracy": round(max(history["val_accuracy"]), 4),
        "train_seconds": round(seconds, 1),
    }


def _test_accuracy(model_file: Path, shards: Path, emotions, flip: bool) -> tuple[float, int]:
    import keras

    from emoflow.components.records.input_pipelines import scoring_batches

    network = keras.models.load_model(model_file, compile=False)
    pairs = [(x.numpy(), y.numpy()) for x, y in scoring_batches(shards, ["test"], emotions, 256)]
    faces, truth = np.concatenate([x for x, _ in pairs]), np.concatenate([y for _, y in pairs])
    probabilities = network.predict(faces, batch_size=256, verbose=0)
    if flip:
        probabilities = probabilities + network.predict(
            faces[:, :, ::-1], batch_size=256, verbose=0
        )
    return float((probabilities.argmax(axis=1) == truth).mean()), len(truth)


def _print_table(rows: list[dict], architectures: list[str]) -> None:
    header = (
        "| emotion set | EmoPy (published) | "
        + " | ".join(f"ours: {a}" for a in architectures)
        + " |"
    )
    print(header)
    print("| --- | ---: |" + " ---: |" * len(architectures))
    for name in dict.fromkeys(r["emotion_set"] for r in rows):
        published = next(r["published"] for r in rows if r["emotion_set"] == name)
        ours = {r["architecture"]: r["ours"] for r in rows if r["emotion_set"] == name}
        cells = " | ".join(_versus(ours.get(a), published) for a in architectures)
        print(f"| {name} | {'-' if published is None else f'{published:.4f}'} | {cells} |")


def _versus(ours: float | None, published: float | None) -> str:
    if ours is None:
        return ""
    return f"{ours:.4f}" if published is None else f"{ours:.4f} ({ours - published:+.4f})"


def _devices() -> str:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return f"{len(gpus)} GPU(s)" if gpus else "no GPU"


if __name__ == "__main__":
    raise SystemExit(main())
