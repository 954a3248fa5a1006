"""The training pipeline as a Prefect flow: the same stage functions, run as tasks.

The data stages run once, then train, evaluate and promote run for each cell of the grid;
each stage reads what the previous wrote on disk. Prefect adds:

- retries with exponential backoff on the stages that touch files or the registry
  (:data:`RETRIED`), for transient errors only: bad data or bad settings fail at once;
- caching (``flow.cache`` in params.yaml): a stage whose code, settings and input files
  are those of a cached run, and whose outputs are still as that run left them, is
  skipped (the rules are in :mod:`emoflow.flows.caching`);
- markdown artifacts in the Prefect UI: the run's outcome stage by stage, and the gate's
  verdicts with the registered versions (:mod:`emoflow.flows.reports`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.futures import PrefectFuture
from prefect.states import State
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import Task, exponential_backoff

from emoflow.components.settings import FlowSettings, ModelCell, Params, load_params
from emoflow.flows import reports
from emoflow.flows.caching import StageInputs, StageRun, outputs_digest
from emoflow.flows.stages import DATA_STAGES, MODEL_STAGES, STAGE_FILES, StageFiles

RETRIED = {"ingest", "promote"}

# MLflow error codes a second try may not meet (a server restarting, a busy database).
TRANSIENT_MLFLOW_CODES = {"TEMPORARILY_UNAVAILABLE", "INTERNAL_ERROR", "REQUEST_LIMIT_EXCEEDED"}
# OSErrors that say the input itself is wrong: retrying cannot help.
PERMANENT_OS_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def is_transient(error: BaseException) -> bool:
    """An error worth a retry: I/O and network failures, a store that is briefly away."""
    from mlflow.exceptions import MlflowException

    if isinstance(error, MlflowException):
        return error.error_code in TRANSIENT_MLFLOW_CODES
    return isinstance(error, OSError) and not isinstance(error, PERMANENT_OS_ERRORS)


def _retry_transient(task_: Task, task_run: TaskRun, state: State) -> bool:
    error = state.result(raise_on_failure=False)
    return isinstance(error, BaseException) and is_transient(error)


def stage_task(
    name: str, stage: Callable[..., object], settings: FlowSettings, cell: ModelCell | None = None
) -> Task:
    """One stage (of one grid cell) as a Prefect task, cached and retried as ``settings`` allow."""
    files = _declared(name, settings)

    def stage_run(params: Params, cell: ModelCell | None = None) -> StageRun:
        result = stage(params) if cell is None else stage(params, cell)
        return StageRun(result, outputs_digest(files, params, cell) if files else "")

    return task(
        stage_run,
        name=name,
        task_run_name=_key(name, cell),
        cache_policy=StageInputs(stage=stage, files=files) if files else NO_CACHE,
        retries=settings.retries if name in RETRIED else 0,
        retry_delay_seconds=exponential_backoff(backoff_factor=settings.retry_delay_seconds),
        retry_condition_fn=_retry_transient,
    )


def run_stage(
    name: str, stage: Callable[..., object], params: Params, cell: ModelCell | None = None
) -> tuple[object, str]:
    """Run one stage as a task; return its result and what happened (ran, cached, re-ran)."""
    return finish_stage(name, stage, params, cell, submit_stage(name, stage, params, cell))


def submit_stage(
    name: str, stage: Callable[..., object], params: Params, cell: ModelCell | None = None
) -> PrefectFuture:
    """Start one stage on the flow's task runner (threads, or a Dask cluster)."""
    return stage_task(name, stage, params.flow, cell).submit(params, cell)


def finish_stage(
    name: str,
    stage: Callable[..., object],
    params: Params,
    cell: ModelCell | None,
    future: PrefectFuture,
) -> tuple[object, str]:
    """Wait for a submitted stage; a cached result whose outputs no longer match the disk
    (deleted, edited, another tracking store) is computed again, and the cache entry replaced.
    """
    future.wait()
    state = future.state
    run: StageRun = state.result()
    if state.name != "Cached":
        return run.result, "ran"
    files = _declared(name, params.flow)
    if files is not None and outputs_digest(files, params, cell) == run.outputs:
        return run.result, "cached"
    get_run_logger().info("%s: its outputs changed since the cached run; running it again", name)
    run = stage_task(name, stage, params.flow, cell).with_options(refresh_cache=True)(params, cell)
    return run.result, "ran again: its outputs had changed"


def task_runner(settings: FlowSettings):
    """Threads on this machine, or a Dask cluster: the grid's cells fan out over either."""
    if settings.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        if settings.dask_address:
            return DaskTaskRunner(address=settings.dask_address)
        return DaskTaskRunner(
            cluster_kwargs={"n_workers": settings.dask_workers, "threads_per_worker": 1}
        )
    return ThreadPoolTaskRunner(max_workers=settings.max_parallel_models)


# One model at a time unless the settings say otherwise (run_pipeline): TensorFlow already
# spreads one model's training over every core.
@flow(name="emoflow-training", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=1))
def training_flow(
    params_path: str = "params.yaml", profiles: list[str] | None = None, data: str | None = None
) -> dict[str, object]:
    """Run every stage on the settings in ``params_path``, with ``profiles`` of its profiles
    block applied (``data``: their datasets' folder); return each stage's result.

    Results are keyed by stage (``ingest``) and, for model stages, cell (``train/convnn-fer7``).
    Relative paths in the settings are relative to the working directory, the project
    folder; a deployment of prefect.yaml runs in the folder it was deployed from.
    """
    params = load_params(Path(params_path), profiles or [], data)
    steps = list(DATA_STAGES) + [
        _key(name, cell) for name in MODEL_STAGES for cell in params.train.grid()
    ]
    described = " + ".join([params_path, *(f"profile {name}" for name in profiles or [])])
    outcome = reports.Outcome(steps, described, params.flow.cache)
    results: dict[str, object] = {}
    try:
        for name, stage in DATA_STAGES.items():
            _record(outcome, results, name, lambda: run_stage(name, stage, params))
        # Cells of the grid fan out: every cell's stage runs side by side, stage after stage.
        for name, stage in MODEL_STAGES.items():
            futures = {
                cell.key: (cell, submit_stage(name, stage, params, cell))
                for cell in params.train.grid()
            }
            for cell, future in futures.values():
                _record(
                    outcome,
                    results,
                    _key(name, cell),
                    lambda: finish_stage(name, stage, params, cell, future),
                )
    finally:
        blessings = [r for key, r in results.items() if key.startswith("promote/")]
        reports.publish(outcome, blessings, params)
    return results


def _record(
    outcome: reports.Outcome, results: dict, key: str, step: Callable[[], tuple[object, str]]
) -> None:
    started = time.monotonic()
    try:
        results[key], how = step()
    except Exception as err:
        outcome.record(key, f"failed: {type(err).__name__}: {err}", time.monotonic() - started)
        raise
    outcome.record(key, how, time.monotonic() - started)


def _declared(name: str, settings: FlowSettings) -> StageFiles | None:
    """What the stage reads and writes, when caching is on and the stage may be cached."""
    files = STAGE_FILES.get(name)
    return files if settings.cache and files is not None and files.cached else None


def _key(name: str, cell: ModelCell | None) -> str:
    return name if cell is None else f"{name}/{cell.key}"


def run_pipeline(
    params_path: str = "params.yaml", profiles: list[str] | None = None, data: str | None = None
) -> dict[str, object]:
    """The flow on the task runner ``flow.task_runner`` names (deployments use threads)."""
    settings = load_params(Path(params_path), profiles or [], data).flow
    return training_flow.with_options(task_runner=task_runner(settings))(
        params_path, profiles, data
    )
