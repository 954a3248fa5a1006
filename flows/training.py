"""The training pipeline as a Prefect flow: the same stage functions, run as tasks.

Stages run one after another (each reads what the previous wrote on disk); Prefect adds
retries on the stages that touch the filesystem or the registry, run history and logs.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task

from components.settings import load_params
from flows.stages import STAGES

RETRIED = {"ingest", "promote"}

TASKS = {
    name: task(stage, name=name, retries=2 if name in RETRIED else 0, retry_delay_seconds=5)
    for name, stage in STAGES.items()
}


@flow(name="emoflow-training", log_prints=True)
def training_flow(params_path: str = "params.yaml") -> dict[str, object]:
    """Run every stage in order on the settings in ``params_path``; return each stage's result."""
    params = load_params(Path(params_path))
    return {name: run(params) for name, run in TASKS.items()}
