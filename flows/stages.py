"""The pipeline as stages: each adapts ``Params`` to one component call.

This is the single place that knows which output folder feeds which stage: each stage's
function, and what it reads and writes (:data:`STAGE_FILES`). The CLI (and so DVC) and the
Prefect flow both run these functions, so no step exists twice; the flow's cache keys read
the declarations, and a test holds ``dvc.yaml`` to them and to the imports of each stage's
code. Data stages run once; model stages run once per cell of the training grid
(architecture x emotion set). The same declarations let the CLI check a stage's inputs before
its code is imported and say, in one line, what a run read, wrote and scored
(:func:`summarise`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from emoflow.components.artifacts import read_json
from emoflow.components.model_files import HISTORY_FILE
from emoflow.components.settings import ModelCell, Params, ParamsError
from emoflow.components.store_location import tracking_uri

DATASETS = ("fer2013", "ckplus")


def interim_folders(params: Params) -> dict[str, Path]:
    return {name: params.ingest.out_dir / name for name in DATASETS}


# Imports stay inside the functions: `emoflow ingest` should not pay for TensorFlow.


def sample(params: Params):
    """Generate the built-in synthetic FER2013 csv and CK+48 folders."""
    from emoflow.components.sample.generate import generate_sample

    return generate_sample(params.sample)


def ingest(params: Params):
    """Read the raw datasets into manifests and pixel arrays."""
    from emoflow.components.ingest.stage import ingest as run

    return run(params.ingest)


def validate(params: Params):
    """Check the ingested data with Great Expectations."""
    from emoflow.components.validate.stage import validate as run

    return run(interim_folders(params), params.validate_)


def preprocess(params: Params):
    """Write TFRecord shards and the augmentation grid."""
    from emoflow.components.records.preprocess import preprocess as run

    return run(interim_folders(params), params.preprocess, params.augment)


def recipes(params: Params):
    """Write each model's recipe, the file its DVC train stage depends on."""
    from emoflow.components.training.recipes import write_recipes

    return write_recipes(params.train, params.augment, params.serve)


def train(params: Params, cell: ModelCell):
    """Train a model of the grid and log it to MLflow."""
    from emoflow.components.training.train import train as run

    shards = params.preprocess.out_dir / params.train.dataset_for(cell.architecture)
    return run(shards, cell, params.train, params.augment, params.mlflow, params.serve)


def evaluate(params: Params, cell: ModelCell):
    """Score a model in-dataset and across datasets."""
    from emoflow.components.judging.evaluate import evaluate as run

    return run(
        params.train.out_dir / cell.key,
        params.preprocess.out_dir,
        params.train.sequence_dataset,
        params.evaluate,
        params.mlflow,
    )


def promote(params: Params, cell: ModelCell):
    """Gate a model against thresholds and the champion; register it on a pass."""
    from emoflow.components.judging.promote import promote as run

    return run(
        params.train.out_dir / cell.key,
        params.preprocess.out_dir,
        params.train.sequence_dataset,
        params.evaluate,
        params.promote,
        params.mlflow,
    )


DATA_STAGES: dict[str, Callable[[Params], object]] = {
    stage.__name__: stage for stage in (sample, ingest, validate, preprocess, recipes)
}
MODEL_STAGES: dict[str, Callable[[Params, ModelCell], object]] = {
    stage.__name__: stage for stage in (train, evaluate, promote)
}


def select_cells(
    params: Params, architecture: str | None = None, emotion_set: str | None = None
) -> list[ModelCell]:
    """Grid cells matching the filters; an unknown filter value is an error, not a no-op."""
    grid = params.train.grid()
    cells = [
        c
        for c in grid
        if architecture in (None, c.architecture) and emotion_set in (None, c.emotion_set)
    ]
    if not cells:
        known = ", ".join(c.key for c in grid)
        raise ParamsError(
            f"no model in the grid matches architecture={architecture} emotion_set={emotion_set} "
            f"(grid: {known})"
        )
    return cells


Cell = ModelCell | None  # the grid cell of a model stage; None for a data stage


@dataclass(frozen=True)
class StageFiles:
    """What one stage depends on and produces, as functions of the settings (and grid cell)."""

    settings: Callable[[Params, Cell], dict[str, Any]]  # the settings the stage reads
    reads: Callable[[Params, Cell], Iterable[Path | None]]
    writes: Callable[[Params, Cell], Iterable[Path]]
    tracked: bool = False  # logs to MLflow: the tracking store is one of its outputs
    cached: bool = True  # a flow run may skip it when its inputs and outputs are unchanged


def blocks(params: Params, *names: str) -> dict[str, Any]:
    """Settings blocks by their params.yaml names, as JSON values."""
    dumped = params.model_dump(mode="json", by_alias=True)
    return {name: dumped[name] for name in names}


def _model_settings(params: Params, cell: Cell, *names: str) -> dict[str, Any]:
    """A model stage's blocks and its own grid cell (a new cell re-runs no other)."""
    return {**blocks(params, *names), "cell": cell.model_dump(mode="json")}


def _training_settings(params: Params, cell: Cell) -> dict[str, Any]:
    """Only what the cell's training reads, as DVC sees it (``components.training.recipes``):
    another cell's emotions or another architecture's override change nothing here."""
    from emoflow.components.training.recipes import cell_recipe

    return {
        **cell_recipe(cell, params.train, params.augment, params.serve),
        **blocks(params, "mlflow"),
    }


def _card(params: Params, cell: Cell) -> Path:
    from emoflow.components.judging.promote import card_path

    return card_path(params.promote.out_dir, cell.key)


def _validation_result(params: Params) -> Path:
    """The validate stage's verdict, the one file of its output that preprocess needs."""
    from emoflow.components.validate.outputs import RESULT_JSON

    return params.validate_.out_dir / RESULT_JSON


def _recipes_folder(params: Params) -> Path:
    from emoflow.components.training.recipes import RECIPES_DIR

    return params.train.out_dir / RECIPES_DIR


# What each stage reads and writes: the flow's cache keys use it, and a test holds dvc.yaml's
# deps and outs to it, so the stage graph is declared once.
STAGE_FILES: dict[str, StageFiles] = {
    "sample": StageFiles(
        lambda p, c: blocks(p, "sample"),
        lambda p, c: (),
        lambda p, c: (p.sample.out_dir,),
    ),
    "ingest": StageFiles(
        lambda p, c: blocks(p, "ingest"),
        lambda p, c: (p.ingest.fer2013, p.ingest.ckplus, p.ingest.ferplus),
        lambda p, c: (p.ingest.out_dir,),
    ),
    "validate": StageFiles(
        lambda p, c: blocks(p, "validate"),
        lambda p, c: (p.ingest.out_dir, p.validate_.reference),
        lambda p, c: (p.validate_.out_dir,),
    ),
    "preprocess": StageFiles(
        lambda p, c: blocks(p, "preprocess", "augment"),
        lambda p, c: (p.ingest.out_dir, _validation_result(p)),
        lambda p, c: (p.preprocess.out_dir, p.augment.grid_png),
    ),
    "recipes": StageFiles(
        lambda p, c: blocks(p, "train", "augment", "serve"),
        lambda p, c: (),
        lambda p, c: (_recipes_folder(p),),
    ),
    "train": StageFiles(
        _training_settings,
        lambda p, c: (
            p.preprocess.out_dir / p.train.dataset_for(c.architecture),
            p.serve.detector_model,
        ),
        lambda p, c: (p.train.out_dir / c.key,),
        tracked=True,
    ),
    "evaluate": StageFiles(
        lambda p, c: _model_settings(p, c, "evaluate", "mlflow"),
        lambda p, c: (p.train.out_dir / c.key, p.preprocess.out_dir),
        lambda p, c: (
            p.evaluate.out_dir / c.key,
            p.evaluate.predictions_dir / f"{c.key}.csv",
            p.evaluate.figures_dir / c.key,
        ),
        tracked=True,
    ),
    # Never cached: its verdict depends on the registry's champion, which no key can see.
    "promote": StageFiles(
        lambda p, c: _model_settings(p, c, "evaluate", "promote", "mlflow"),
        lambda p, c: (
            p.train.out_dir / c.key,
            p.preprocess.out_dir,
            p.evaluate.out_dir / c.key,
        ),
        lambda p, c: (p.promote.out_dir / f"{c.key}.json", _card(p, c)),
        tracked=True,
        cached=False,
    ),
}


def missing_inputs(name: str, params: Params, cell: Cell = None) -> dict[Path, str | None]:
    """The declared inputs of stage ``name`` that do not exist, each with the earlier stage
    that writes it (None: none does; a raw dataset or a file a setting names). The CLI checks
    them before the stage's code is imported (TensorFlow takes half a minute), as DVC checks
    a stage's deps."""
    stages = list(STAGE_FILES)
    earlier = stages[: stages.index(name)]  # a stage reads only what earlier ones write
    missing = {}
    for path in STAGE_FILES[name].reads(params, cell):
        if path is None or path.exists():
            continue
        writers = [
            other
            for other in earlier
            if (cell is not None or other in DATA_STAGES)
            and any(_inside(path, out) for out in STAGE_FILES[other].writes(params, cell))
        ]
        missing[path] = writers[0] if writers else None
    return missing


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


# --- What a run did, in one line ------------------------------------------------------------


@dataclass(frozen=True)
class StageSummary:
    """What one run of a stage read and wrote (its declared files) and its key figures: a line
    in plain words for people, a JSON document for scripts."""

    stage: str
    model: str | None  # the grid cell of a model stage
    read: list[str]
    wrote: list[str]
    figures: dict[str, Any]

    def line(self) -> str:
        figures = ", ".join(f"{key} {_plain(value)}" for key, value in self.figures.items())
        parts = (
            f"read {', '.join(self.read)}" if self.read else "",
            f"wrote {', '.join(self.wrote)}" if self.wrote else "",
            figures,
        )
        return "; ".join(part for part in parts if part)

    def document(self) -> dict[str, Any]:
        return asdict(self)


def summarise(name: str, params: Params, cell: Cell, result: object) -> StageSummary:
    """The summary of stage ``name``'s run that returned ``result``; None from train is a
    cluster worker's run, whose outputs the chief wrote."""
    files = STAGE_FILES[name]
    wrote = [str(path) for path in files.writes(params, cell)]
    if files.tracked:
        wrote.append(f"MLflow {tracking_uri(params.mlflow)}")
    return StageSummary(
        stage=name,
        model=None if cell is None else cell.key,
        read=[str(path) for path in files.reads(params, cell) if path is not None],
        wrote=[] if result is None else wrote,
        figures={"outputs": "written by the chief"} if result is None else FIGURES[name](result),
    )


def _plain(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, list):
        return "+".join(str(item) for item in value) or "none"
    return str(value)


def _sample_figures(files) -> dict[str, Any]:
    with files.fer2013_csv.open() as rows:
        fer2013 = sum(1 for _ in rows) - 1  # the header
    return {"fer2013.images": fer2013, "ckplus.images": len(list(files.ckplus_dir.rglob("*.png")))}


def _ingest_figures(outputs) -> dict[str, Any]:
    import pyarrow.parquet as parquet

    from emoflow.components.manifest import MANIFEST

    figures: dict[str, Any] = {
        f"{name}.images": parquet.ParquetFile(folder / MANIFEST).metadata.num_rows
        for name, folder in (("fer2013", outputs.fer2013), ("ckplus", outputs.ckplus))
    }
    if outputs.quarantine is not None:
        figures["skipped_records"] = read_json(outputs.quarantine)["count"]
    return figures


def _preprocess_figures(outputs) -> dict[str, Any]:
    return {
        f"{name}.shards": len(list(folder.glob("*.tfrecord.gz")))
        for name, folder in outputs.shards.items()
    }


def _train_figures(outputs) -> dict[str, Any]:
    history = read_json(outputs.folder / HISTORY_FILE)
    figures = {
        "epochs": len(history["loss"]),
        "val_accuracy": history["val_accuracy"][-1],
        "run": outputs.run_id,
    }
    if outputs.resumed_from is not None:
        figures["resumed_after_epoch"] = outputs.resumed_from
    return figures


def _evaluate_figures(outputs) -> dict[str, Any]:
    return {
        f"{dataset}.accuracy": scores["accuracy"]
        for dataset, scores in read_json(outputs.metrics).items()
    }


def _promote_figures(blessing) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "blessing": "passed" if blessing.passed else "refused",
        "failed_checks": [check.metric for check in blessing.checks if not check.passed],
    }
    if blessing.version is not None:
        figures["registered"] = f"{blessing.model_name} v{blessing.version}"
    figures["champion"] = f"v{read_json(blessing.report).get('champion_after') or '-'}"
    return figures


FIGURES: dict[str, Callable[[Any], dict[str, Any]]] = {
    "sample": _sample_figures,
    "ingest": _ingest_figures,
    "validate": lambda report: {"warnings": report.warnings},
    "preprocess": _preprocess_figures,
    "recipes": lambda folder: {"models": len(list(folder.glob("*.json")))},
    "train": _train_figures,
    "evaluate": _evaluate_figures,
    "promote": _promote_figures,
}
