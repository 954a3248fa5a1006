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

Which files and settings a stage reads and writes is declared beside the stage, in
``flows/stages.py`` (the same declaration ``dvc.yaml`` is checked against). ``promote`` is
never cached: its verdict depends on the registry (the current champion), which a cache key
cannot see. What the key does not
cover: installed library versions (clear the cache, or set ``flow.cache: false``, after an
upgrade).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext

from emoflow.components.settings import Params
from emoflow.flows import code_graph
from emoflow.flows.stages import Cell, StageFiles

_CHUNK = 1 << 20


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

    from emoflow.components.mlflow_store import tracking_uri

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
    roots = code_graph.function_imports(stage) | code_graph.module_imports(
        module, top_level_only=True
    )
    modules = code_graph.closure(roots - {module}) | {module}
    return _digest([f"{name}\0{code_graph.source(name)}" for name in sorted(modules)])


def _hash_file(h: Any, path: Path) -> None:
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)


def _digest(parts: Iterable[str]) -> str:
    return hashlib.blake2b("\0\0".join(parts).encode(), digest_size=20).hexdigest()
