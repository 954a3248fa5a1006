"""The ``emoflow`` command: one subcommand per stage (what DVC runs), plus the pipeline and
the registry.

Expected failures (``components.errors.EmoFlowError``: bad input data, bad settings, a failed
validation, an unreachable registry) print one readable message and exit 1; a traceback is
kept for real bugs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import typer

from components.errors import EmoFlowError
from components.settings import load_params
from flows.stages import DATA_STAGES, MODEL_STAGES, select_cells

# An entry point may set the process's defaults: TensorFlow's C++ info chatter hides progress.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

app = typer.Typer(
    help="EmoFlow: a reproducible facial expression recognition pipeline.", no_args_is_help=True
)


def _version(shown: bool) -> None:
    if shown:
        from importlib.metadata import version

        typer.echo(f"emoflow {version('emoflow')}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """EmoFlow: a reproducible facial expression recognition pipeline."""


ParamsOption = typer.Option(Path("params.yaml"), "--params", "-p", help="Settings file.")
ArchitectureOption = typer.Option(
    None, "--architecture", "-a", help="Only models of this architecture."
)
EmotionSetOption = typer.Option(
    None, "--emotion-set", "-e", help="Only models of this emotion set."
)
ProfileOption = typer.Option(
    [], "--profile", help="Apply this entry of the params profiles block (repeatable, in order)."
)
DataOption = typer.Option(
    None, "--data", help="Folder of the real datasets, {data} in profiles (../shared/data)."
)


def _guarded(name: str, action: Callable[[], object]) -> object:
    try:
        return action()
    except (EmoFlowError, FileNotFoundError) as err:
        typer.secho(f"emoflow {name}: {err}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from None


def _register_data_stage(name: str, stage) -> None:
    def command(
        params: Path = ParamsOption,
        profile: list[str] = ProfileOption,
        data: Path | None = DataOption,
    ) -> None:
        result = _guarded(name, lambda: stage(load_params(params, profile, data)))
        typer.echo(f"emoflow {name}: done: {result}")

    app.command(name=name, help=(stage.__doc__ or "").strip())(command)


def _register_model_stage(name: str, stage) -> None:
    def command(
        params: Path = ParamsOption,
        architecture: str | None = ArchitectureOption,
        emotion_set: str | None = EmotionSetOption,
        profile: list[str] = ProfileOption,
        data: Path | None = DataOption,
    ) -> None:
        settings = _guarded(name, lambda: load_params(params, profile, data))
        for cell in _guarded(name, lambda: select_cells(settings, architecture, emotion_set)):
            result = _guarded(name, lambda: stage(settings, cell))
            typer.echo(f"emoflow {name} {cell.key}: done: {result}")

    app.command(
        name=name, help=f"{(stage.__doc__ or '').strip()} (every grid cell unless filtered)"
    )(command)


for _name, _stage in DATA_STAGES.items():
    _register_data_stage(_name, _stage)
for _name, _stage in MODEL_STAGES.items():
    _register_model_stage(_name, _stage)


@app.command()
def pipeline(
    params: Path = ParamsOption,
    profile: list[str] = ProfileOption,
    data: Path | None = DataOption,
) -> None:
    """Run every stage as one Prefect flow run (the same functions DVC runs)."""
    from flows.training import run_pipeline

    _guarded("pipeline", lambda: load_params(params, profile, data))  # fails fast, before Prefect
    folder = None if data is None else str(data)
    _guarded("pipeline", lambda: run_pipeline(str(params), profile, folder))


@app.command()
def reference(
    out: Path = typer.Argument(..., help="JSON file to write; then name it in validate.reference."),
    params: Path = ParamsOption,
) -> None:
    """Record the ingested data's pixel statistics as the ranges later runs are checked against."""
    from components.validate.stage import write_reference
    from flows.stages import interim_folders

    settings = _guarded("reference", lambda: load_params(params))
    margin = settings.validate_.reference_margin
    written = _guarded("reference", lambda: write_reference(interim_folders(settings), out, margin))
    typer.echo(
        f"emoflow reference: wrote {written} (ranges widened by {margin}); set validate.reference "
        "to use it"
    )


@app.command(name="registry")
def registry_list(
    params: Path = ParamsOption,
    as_json: bool = typer.Option(False, "--json", help="One JSON document, for scripts."),
) -> None:
    """List registered models, their versions, aliases and blessings."""
    from components import mlflow_store
    from components.judging import registry

    settings = _guarded("registry", lambda: load_params(params))

    def listing() -> list[tuple[str, list]]:
        client = mlflow_store.connect(settings.mlflow)
        return mlflow_store.retried(
            lambda: [
                (name, registry.versions(client, name)) for name in registry.model_names(client)
            ],
            "listing the registered models",
            settings.mlflow,
        )

    models = _guarded("registry", listing)
    if as_json:
        document = {
            name: [
                {
                    "version": v.version,
                    "aliases": list(v.aliases),
                    "blessing": v.tags.get(registry.BLESSING_TAG),
                    "run_id": v.run_id,
                    "tags": v.tags,
                }
                for v in versions
            ]
            for name, versions in models
        }
        typer.echo(json.dumps(document, indent=2))
        return
    for name, versions in models:
        typer.echo(name)
        for v in versions:
            aliases = ",".join(v.aliases) or "-"
            typer.echo(
                f"  v{v.version:<4} aliases={aliases:<22} "
                f"blessing={v.tags.get(registry.BLESSING_TAG, '-'):<7} "
                f"{v.tags.get('architecture', '?')}/{v.tags.get('emotion_set', '?')} run={v.run_id}"
            )


@app.command()
def rollback(name: str, params: Path = ParamsOption) -> None:
    """Move NAME's champion alias back to the previous blessed version."""
    from components import mlflow_store
    from components.judging import registry

    settings = _guarded("rollback", lambda: load_params(params))

    def moved() -> tuple[str, str]:
        return registry.rollback(mlflow_store.connect(settings.mlflow), name, settings.mlflow)

    before, after = _guarded("rollback", moved)
    typer.echo(f"{name}: champion moved from v{before} back to v{after}")


def _consumer(name: str, action: Callable[[], str]) -> None:
    from mlflow.exceptions import MlflowException  # a model URI the registry does not know

    try:
        summary = action()
    except (EmoFlowError, FileNotFoundError, MlflowException) as err:
        typer.secho(f"emoflow {name}: {err}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from None
    typer.echo(f"emoflow {name}: done: {summary}", err=True)  # stdout may carry the results


ModelOption = typer.Option(
    None,
    "--model",
    "-m",
    help="models:/NAME@ALIAS, an MLflow model folder, or a .keras file (default: predict.model).",
)
SourcesArgument = typer.Argument(None, help="Image files, folders of images, or video files.")
OutOption = typer.Option(
    None, "--out", "-o", help="Images: a .csv or .json table. Videos: .jsonl. Default: stdout."
)
AnnotateOption = typer.Option(None, help="Folder for copies with boxes and labels drawn.")
ModeOption = typer.Option("detect", help="detect: find the faces; faces: each image is a face.")
WebcamOption = typer.Option(None, help="Read this camera (OpenCV index); Ctrl-C stops.")
MaxFramesOption = typer.Option(None, help="Stop each video or the webcam after this many frames.")
ExportOutOption = typer.Option(
    Path("models/export"), "--out", "-o", help="Folder for model.onnx, model.tflite, parity.json."
)


@app.command()
def predict(
    sources: list[Path] | None = SourcesArgument,
    model: str | None = ModelOption,
    out: Path | None = OutOption,
    annotate: Path | None = AnnotateOption,
    mode: str = ModeOption,
    webcam: int | None = WebcamOption,
    max_frames: int | None = MaxFramesOption,
    params: Path = ParamsOption,
) -> None:
    """Emotions per face: images to a table; videos and webcams to smoothed JSON lines."""
    from components.serving import predict as consumer

    def action() -> str:
        settings = load_params(params)
        classifier = consumer.load_classifier(
            model or settings.predict.model, settings.serve, settings.mlflow
        )
        return consumer.run(
            classifier, sources or [], settings.predict, out, annotate, mode, webcam, max_frames
        )

    _consumer("predict", action)


@app.command()
def export(
    model: str | None = ModelOption, out: Path = ExportOutOption, params: Path = ParamsOption
) -> None:
    """Export a model's network to ONNX and TFLite, each checked against Keras."""
    from components.serving import export as exporter
    from components.serving.predict import load_classifier

    def action() -> str:
        settings = load_params(params)
        classifier = load_classifier(
            model or settings.predict.model, settings.serve, settings.mlflow
        )
        outputs = exporter.export(classifier.network, classifier.emotions, out)
        return f"{outputs.folder}, largest difference from Keras: {outputs.max_difference}"

    _consumer("export", action)


@app.command()
def demo(
    model: str | None = ModelOption,
    port: int = typer.Option(8765, "--port", help="Port on 127.0.0.1 for the page."),
    params: Path = ParamsOption,
) -> None:
    """A web page on 127.0.0.1 to try a model: drop a photo or start the webcam, see each
    face's box and emotions, and what the model was trained on."""
    from components.serving import demo as page

    def action() -> str:
        settings = load_params(params)
        page.serve(model or settings.predict.model, settings.serve, settings.mlflow, port)
        return "stopped"

    _consumer("demo", action)


@app.command()
def serve(
    model: str | None = ModelOption,
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to listen on; another than loopback exposes the model."
    ),
    port: int = typer.Option(5001, "--port", help="Port for the REST server."),
    params: Path = ParamsOption,
) -> None:
    """MLflow's REST scoring server for a model (models:/NAME@ALIAS or a model folder), behind
    EmoFlow's limits: request body size, and requests read and predicted at once (503 past them)."""
    from components.serving import rest_server

    def action() -> str:
        settings = load_params(params)
        rest_server.serve(
            model or settings.predict.model, settings.serve, settings.mlflow, host, port
        )
        return "stopped"

    _consumer("serve", action)


if __name__ == "__main__":
    app()
