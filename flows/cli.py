"""The ``emoflow`` command: one subcommand per stage (what DVC runs), plus ``pipeline``.

Expected failures (bad input data, bad settings, a failed validation) print one readable
message and exit 1; a traceback is kept for real bugs.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from components.settings import ParamsError, load_params
from flows.stages import STAGES

# An entry point may set the process's defaults: TensorFlow's C++ info chatter hides progress.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

app = typer.Typer(help="EmoFlow: a reproducible facial expression recognition pipeline.", no_args_is_help=True)

ParamsOption = typer.Option(Path("params.yaml"), "--params", "-p", help="Settings file.", exists=False)


def _user_errors() -> tuple[type[Exception], ...]:
    from components.evaluate import EvaluationError
    from components.ingest import IngestError
    from components.validate import DataValidationError

    return ParamsError, IngestError, DataValidationError, EvaluationError, FileNotFoundError


def _run_stage(name: str, params_path: Path) -> object:
    try:
        result = STAGES[name](load_params(params_path))
    except _user_errors() as err:
        typer.secho(f"emoflow {name}: {err}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from None
    typer.echo(f"emoflow {name}: done: {result}")
    return result


def _register(name: str, help_text: str) -> None:
    def command(params: Path = ParamsOption) -> None:
        _run_stage(name, params)

    app.command(name=name, help=help_text)(command)


for _name, _stage in STAGES.items():
    _register(_name, (_stage.__doc__ or "").strip() or f"Run the {_name} stage.")


@app.command()
def pipeline(params: Path = ParamsOption) -> None:
    """Run every stage as one Prefect flow run (the same functions DVC runs)."""
    from flows.training import training_flow

    try:
        training_flow(str(params))
    except _user_errors() as err:
        typer.secho(f"emoflow pipeline: {err}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from None


if __name__ == "__main__":
    app()
