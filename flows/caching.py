"""When a re-run of the Prefect flow may skip a stage, and the Prefect cache policy that says so.

A stage is skipped only when a re-run would redo exactly what a cached run did and its
outputs are still there, like ``dvc repro``:

- the key (:class:`StageInputs`) hashes the stage's code (the stage function,
  ``flows/stages.py`` and every project module they import, transitively: Prefect's
  ``TASK_SOURCE`` would see only the thin task wrapper, not the component it calls), the
  settings blocks the stage reads, and the content of the files it reads, at their
  absolute paths (two project folders never share an entry);
- a cached result carries the digest of the stage's outputs as they were written
  (:class:`StageRun`); the flow re-runs the stage when the outputs on disk differ (deleted,
  edited) or, for a stage that logs to MLflow, when the tracking store is another one
  (another URI, or the experiment was deleted and re-created).

Which files and settings a stage reads and writes is declared in :data:`STAGE_FILES`. A
stage missing from it is never cached, and neither is ``promote``: its verdict depends on
the registry (the current champion), which a cache key cannot see. What the key does not
cover: installed library versions (clear the cache, or set ``flow.cache: false``, after an
upgrade).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext

from components.recipes import RECIPES_DIR, cell_recipe
from components.settings import ModelCell, Params

PROJECT_PACKAGES = ("components", "flows")
_CHUNK = 1 << 20


Cell = ModelCell | None  # the grid cell of a model stage; None for a data stage


@dataclass(frozen=True)
class StageFiles:
    """What one stage depends on and produces, as functions of the settings (and grid cell)."""

    settings: Callable[[Params, Cell], dict[str, Any]]  # the settings the stage reads
    reads: Callable[[Params, Cell], Iterable[Path | None]]
    writes: Callable[[Params, Cell], Iterable[Path]]
    tracked: bool = False  # logs to MLflow: the tracking store is one of its outputs


def blocks(params: Params, *names: str) -> dict[str, Any]:
    """Settings blocks by their params.yaml names, as JSON values."""
    dumped = params.model_dump(mode="json", by_alias=True)
    return {name: dumped[name] for name in names}


def _model_settings(params: Params, cell: Cell, *names: str) -> dict[str, Any]:
    """A model stage's blocks and its own grid cell (a new cell re-runs no other)."""
    return {**blocks(params, *names), "cell": cell.model_dump(mode="json")}


def _training_settings(params: Params, cell: Cell) -> dict[str, Any]:
    """Only what the cell's training reads, as DVC sees it (``components.recipes``): another
    cell's emotions or another architecture's override change nothing here."""
    return {**cell_recipe(cell, params.train, params.augment, params.serve), **blocks(params, "mlflow")}


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
        lambda p, c: (p.ingest.out_dir, p.validate_.out_dir),
        lambda p, c: (p.preprocess.out_dir, p.augment.grid_png),
    ),
    "recipes": StageFiles(
        lambda p, c: blocks(p, "train", "augment", "serve"),
        lambda p, c: (),
        lambda p, c: (p.train.out_dir / RECIPES_DIR,),
    ),
    "train": StageFiles(
        _training_settings,
        lambda p, c: (p.preprocess.out_dir / p.train.dataset_for(c.architecture), p.serve.detector_model),
        lambda p, c: (p.train.out_dir / c.key,),
        tracked=True,
    ),
    "evaluate": StageFiles(
        lambda p, c: _model_settings(p, c, "evaluate", "mlflow"),
        lambda p, c: (p.train.out_dir / c.key, p.preprocess.out_dir),
        lambda p, c: tuple(
            folder / c.key
            for folder in (p.evaluate.out_dir, p.evaluate.predictions_dir, p.evaluate.figures_dir)
        ),
        tracked=True,
    ),
}


@dataclass(frozen=True)
class StageRun:
    """A stage's result as the flow caches it, with the digest of the outputs it left."""

    result: Any
    outputs: str


def input_key(
    stage: Callable[..., object], files: StageFiles, params: Params, cell: Cell = None
) -> str:
    """The cache key of ``stage`` on ``params`` (and ``cell``): code, settings, input files."""
    return _digest(
        [
            code_digest(stage),
            json.dumps(files.settings(params, cell), sort_keys=True),
            files_digest(files.reads(params, cell)),
        ]
    )


def outputs_digest(files: StageFiles, params: Params, cell: Cell = None) -> str:
    """The digest of what the stage wrote (and of the tracking store it wrote to)."""
    parts = [files_digest(files.writes(params, cell))]
    if files.tracked:
        parts.append(tracking_store_identity(params))
    return _digest(parts)


@dataclass
class StageInputs(CachePolicy):
    """Prefect cache policy: the key of :func:`input_key` for the task's ``params`` and ``cell``."""

    stage: Callable[..., object] | None = None
    files: StageFiles | None = None

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        if self.stage is None or self.files is None:
            return None
        return input_key(self.stage, self.files, inputs["params"], inputs.get("cell"))


def files_digest(paths: Iterable[Path | None]) -> str:
    """Content digest of files and folders (recursively), by absolute path; absent ones count."""
    h = hashlib.blake2b(digest_size=20)
    for path in sorted({Path(p).resolve() for p in paths if p is not None}):
        h.update(f"\0{path}\0".encode())
        if path.is_file():
            _hash_file(h, path)
        elif path.is_dir():
            for file in sorted(f for f in path.rglob("*") if f.is_file()):
                h.update(f"\0{file.relative_to(path).as_posix()}\0".encode())
                _hash_file(h, file)
        else:
            h.update(b"\0missing\0")
    return h.hexdigest()


def tracking_store_identity(params: Params) -> str:
    """The tracking URI in effect and the identity of the experiment in it.

    A re-created store (or experiment) has a new creation time, so a cached run whose
    MLflow run lives in a deleted store is not reused.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from components.tracking import tracking_uri

    uri = tracking_uri(params.mlflow)
    try:
        experiment = MlflowClient(tracking_uri=uri).get_experiment_by_name(params.mlflow.experiment)
    except (MlflowException, OSError) as err:  # an unreachable store: no cached result is valid
        return f"{uri} unreachable: {type(err).__name__}"
    if experiment is None:
        return f"{uri} no experiment"
    return f"{uri} {experiment.experiment_id} {experiment.creation_time}"


def code_digest(stage: Callable[..., object]) -> str:
    """Digest of the stage function's module and every project module it imports, transitively."""
    module = stage.__module__
    # The stage's own module is hashed whole but followed only through its top-level
    # imports and the stage's: flows/stages.py imports every component, each in one stage.
    roots = _imports(ast.parse(inspect.getsource(stage))) | _imports_at_module_level(module)
    modules = _closure(roots - {module}) | {module}
    return _digest([f"{name}\0{_source(name)}" for name in sorted(modules)])


def _closure(roots: set[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen or _origin(name) is None:
            continue
        seen.add(name)
        todo.extend(_imports(_parse(name)))
    return seen


def _parse(module: str) -> ast.Module:
    """The module's syntax tree; one that does not parse still counts, by its text, as a leaf."""
    try:
        return ast.parse(_source(module))
    except SyntaxError:
        return ast.Module(body=[], type_ignores=[])


def _imports(tree: ast.AST) -> set[str]:
    """Project modules named by the import statements anywhere in ``tree``."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            # `from components import labels` imports the module components.labels
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {n for n in names if n.split(".")[0] in PROJECT_PACKAGES and _origin(n) is not None}


def _imports_at_module_level(module: str) -> set[str]:
    top_level = [
        node for node in _parse(module).body if isinstance(node, (ast.Import, ast.ImportFrom))
    ]
    return _imports(ast.Module(body=top_level, type_ignores=[]))


@cache
def _origin(module: str) -> Path | None:
    """The source file of a project module, found without importing it (nor TensorFlow with it)."""
    top, *rest = module.split(".")
    spec = importlib.util.find_spec(top)
    if spec is None:
        return None
    if not rest:
        return Path(spec.origin) if spec.origin and spec.origin.endswith(".py") else None
    if not spec.submodule_search_locations:
        return None
    base = Path(next(iter(spec.submodule_search_locations))).joinpath(*rest)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _source(module: str) -> str:
    # Read on every key: an edited file must change the key within one long-lived worker.
    return _origin(module).read_text()


def _hash_file(h: Any, path: Path) -> None:
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)


def _digest(parts: Iterable[str]) -> str:
    return hashlib.blake2b("\0\0".join(parts).encode(), digest_size=20).hexdigest()
