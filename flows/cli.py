"""The ``emoflow`` command: one subcommand per stage (what DVC runs), plus the pipeline, the
registry and the consumers (predict, export, demo, serve).

Expected failures (``components.errors.EmoFlowError``: bad input data, bad settings, a failed
validation, an unreachable registry; a missing file; MLflow's answers) print one readable
message and exit 1; a traceback is kept for real bugs. Settings, arguments and input files
are checked before a command imports TensorFlow or MLflow, which take half a minute, so a
mistake is reported at once. Each command ends with one line saying what it read, wrote and
found (with ``--json``, a JSON document instead); third-party chatter is silenced
(``components.quiet_logs``) unless ``emoflow --verbose``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, TypeVar

import typer

from emoflow.components import quiet_logs
from emoflow.components.errors import EmoFlowError
from emoflow.components.settings import ModelCell, Params, load_params
from emoflow.components.store_location import require_store, tracking_uri
from emoflow.flows.stages import (
    DATA_STAGES,
    MODEL_STAGES,
    STAGE_FILES,
    missing_inputs,
    select_cells,
    summarise,
)

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

T = TypeVar("T")

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
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Show every library's log lines and warnings."
    ),
) -> None:
    """EmoFlow: a reproducible facial expression recognition pipeline."""
    if not verbose:
        quiet_logs.quiet()


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
JsonOption = typer.Option(False, "--json", help="The summary as one JSON document, for scripts.")


# Which extra of the distribution a command needs (pyproject.toml); the rest need `pipeline`.
EXTRA_OF = {
    "predict": "serve",
    "serve": "serve",
    "demo": "serve",
    "registry": "serve",
    "rollback": "serve",
    "export": "export",
}


def _guarded(name: str, action: Callable[[], T]) -> T:
    try:
        return action()
    except ModuleNotFoundError as err:
        extra = EXTRA_OF.get(name, "pipeline")
        _fail(name, f"{err.name} is not installed: pip install 'emoflow[{extra}]'")
    except Exception as err:
        if not _expected(err):
            raise
        _fail(name, str(err))


def _expected(error: Exception) -> bool:
    """A failure a user can act on: the project's errors, a missing file, MLflow's answers
    (a model URI the registry does not know). MLflow's can only come once it is imported, so
    asking does not import it."""
    mlflow_errors = sys.modules.get("mlflow.exceptions")
    answers = (mlflow_errors.MlflowException,) if mlflow_errors else ()
    return isinstance(error, (EmoFlowError, FileNotFoundError, *answers))


def _fail(name: str, message: str) -> NoReturn:
    typer.secho(f"emoflow {name}: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(1)


def _report(name: str, line: str, document: dict, as_json: bool, err: bool = False) -> None:
    """A command's last word: one line in plain words, or one JSON document."""
    typer.echo(json.dumps(document) if as_json else f"emoflow {name}: {line}", err=err)


def _missing(
    name: str, settings: Params, cells: list[ModelCell | None], raw_only: bool = False
) -> list[str]:
    """The inputs stage ``name`` declares that are not there, for every cell; ``raw_only``:
    only those no stage writes (a raw dataset, a file a setting names)."""
    return [
        f"{path}: no such file or folder" + (f" (emoflow {writer} writes it)" if writer else "")
        for cell in cells
        for path, writer in missing_inputs(name, settings, cell).items()
        if writer is None or not raw_only
    ]


def _run_stage(name: str, stage, settings: Params, cells: list[ModelCell | None], as_json: bool):
    problems = _missing(name, settings, cells)  # for every cell, before any runs
    if problems:
        _fail(name, "; ".join(problems))
    for cell in cells:
        result = _guarded(name, lambda: stage(settings) if cell is None else stage(settings, cell))
        summary = summarise(name, settings, cell, result)
        title = name if cell is None else f"{name} {cell.key}"
        _report(title, summary.line(), summary.document(), as_json)


def _register_data_stage(name: str, stage) -> None:
    def command(
        params: Path = ParamsOption,
        profile: list[str] = ProfileOption,
        data: Path | None = DataOption,
        as_json: bool = JsonOption,
    ) -> None:
        settings = _guarded(name, lambda: load_params(params, profile, data))
        _run_stage(name, stage, settings, [None], as_json)

    app.command(name=name, help=(stage.__doc__ or "").strip())(command)


def _register_model_stage(name: str, stage) -> None:
    def command(
        params: Path = ParamsOption,
        architecture: str | None = ArchitectureOption,
        emotion_set: str | None = EmotionSetOption,
        profile: list[str] = ProfileOption,
        data: Path | None = DataOption,
        as_json: bool = JsonOption,
    ) -> None:
        settings = _guarded(name, lambda: load_params(params, profile, data))
        cells = _guarded(name, lambda: select_cells(settings, architecture, emotion_set))
        _run_stage(name, stage, settings, cells, as_json)

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
    # Fails fast, before Prefect starts: bad settings, or an input no stage writes (raw data).
    settings = _guarded("pipeline", lambda: load_params(params, profile, data))
    for name in STAGE_FILES:  # in order: raw data missing fails before later stages are asked
        cells = settings.train.grid() if name in MODEL_STAGES else [None]
        problems = _missing(name, settings, cells, raw_only=True)
        if problems:
            _fail("pipeline", "; ".join(problems))
    folder = None if data is None else str(data)
    _guarded("pipeline", lambda: _flow().run_pipeline(str(params), profile, folder))


def _flow():
    """The Prefect flow's module (imported only by the command that runs it: Prefect is the
    pipeline extra's)."""
    from emoflow.flows import training

    return training


@app.command()
def reference(
    out: Path = typer.Argument(..., help="JSON file to write; then name it in validate.reference."),
    params: Path = ParamsOption,
    as_json: bool = JsonOption,
) -> None:
    """Record the ingested data's pixel statistics as the ranges later runs are checked against."""
    from emoflow.components.validate.stage import write_reference
    from emoflow.flows.stages import interim_folders

    settings = _guarded("reference", lambda: load_params(params))
    margin = settings.validate_.reference_margin
    written = _guarded("reference", lambda: write_reference(interim_folders(settings), out, margin))
    _report(
        "reference",
        f"wrote {written} (ranges widened by {margin}); set validate.reference to use it",
        {"wrote": str(written), "margin": margin},
        as_json,
    )


@app.command(name="registry")
def registry_list(
    params: Path = ParamsOption,
    as_json: bool = typer.Option(False, "--json", help="One JSON document, for scripts."),
) -> None:
    """List registered models, their versions, aliases and blessings."""
    settings = _guarded("registry", lambda: load_params(params))
    _guarded("registry", lambda: require_store(tracking_uri(settings.mlflow)))
    from emoflow.components import mlflow_store
    from emoflow.components.judging import registry

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
def rollback(name: str, params: Path = ParamsOption, as_json: bool = JsonOption) -> None:
    """Move NAME's champion alias back to the previous blessed version (MLflow only: no
    TensorFlow is loaded)."""
    settings = _guarded("rollback", lambda: load_params(params))
    _guarded("rollback", lambda: require_store(tracking_uri(settings.mlflow)))
    from emoflow.components import mlflow_store
    from emoflow.components.judging import registry

    def moved() -> tuple[str, str]:
        return registry.rollback(mlflow_store.connect(settings.mlflow), name, settings.mlflow)

    before, after = _guarded("rollback", moved)
    _report(
        "rollback",
        f"{name}: champion moved from v{before} back to v{after}",
        {"model": name, "champion_before": before, "champion_after": after},
        as_json,
    )


def _consumer_settings(name: str, params: Path, model: str | None) -> tuple[Params, str]:
    """The settings and the model a consumer uses, the model checked before it is loaded:
    ``--model`` is relative to the working folder, predict.model to the params file's."""
    from emoflow.components.serving.predict import check_model

    settings = _guarded(name, lambda: load_params(params))
    chosen = model or settings.predict.model
    _guarded(name, lambda: check_model(chosen, settings.mlflow))
    return settings, chosen


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
AllowNoFaceOption = typer.Option(
    False, "--allow-no-face", help="An image in which no face is found is not a failure."
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
    allow_no_face: bool = AllowNoFaceOption,
    params: Path = ParamsOption,
    as_json: bool = JsonOption,
) -> None:
    """Emotions per face: images to a table; videos and webcams to smoothed JSON lines. Exits 1
    when an input failed (not an image, over a limit, no face found), after the others."""
    from emoflow.components.serving import predict as consumer

    job = _guarded(
        "predict", lambda: consumer.plan(sources or [], out, annotate, mode, webcam, max_frames)
    )
    settings, chosen = _consumer_settings("predict", params, model)
    classifier = _guarded(
        "predict", lambda: consumer.load_classifier(chosen, settings.serve, settings.mlflow)
    )
    warn = (lambda message: None) if as_json else (lambda message: typer.echo(message, err=True))
    summary = _guarded(
        "predict", lambda: consumer.run(classifier, job, settings.predict, allow_no_face, warn)
    )
    # stdout carries the predictions unless they went to a file
    _report("predict", summary.line(), summary.document(), as_json, err=not as_json or not out)
    if summary.failed:
        raise typer.Exit(1)


@app.command()
def export(
    model: str | None = ModelOption,
    out: Path = ExportOutOption,
    params: Path = ParamsOption,
    as_json: bool = JsonOption,
) -> None:
    """Export a model's network to ONNX and TFLite, each checked against Keras."""
    settings, chosen = _consumer_settings("export", params, model)
    from emoflow.components.serving import export as exporter
    from emoflow.components.serving.predict import load_classifier

    classifier = _guarded(
        "export", lambda: load_classifier(chosen, settings.serve, settings.mlflow)
    )
    with quiet_logs.library_messages_hidden():
        outputs = _guarded(
            "export", lambda: exporter.export(classifier.network, classifier.emotions, out)
        )
    largest = max(outputs.max_difference.values())
    _report(
        "export",
        f"read {chosen}; wrote {outputs.onnx}, {outputs.tflite}; largest difference from "
        f"Keras {largest:.1e}",
        {
            "model": chosen,
            "onnx": str(outputs.onnx),
            "tflite": str(outputs.tflite),
            "max_difference": outputs.max_difference,
        },
        as_json,
        err=not as_json,
    )


@app.command()
def demo(
    model: str | None = ModelOption,
    port: int = typer.Option(8765, "--port", help="Port on 127.0.0.1 for the page."),
    params: Path = ParamsOption,
) -> None:
    """A web page on 127.0.0.1 to try a model: drop a photo or start the webcam, see each
    face's box and emotions, and what the model was trained on."""
    settings, chosen = _consumer_settings("demo", params, model)
    from emoflow.components.serving import demo as page

    _guarded("demo", lambda: page.serve(chosen, settings.serve, settings.mlflow, port))
    typer.echo("emoflow demo: stopped", err=True)


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
    settings, chosen = _consumer_settings("serve", params, model)
    from emoflow.components.serving import rest_server

    _guarded(
        "serve", lambda: rest_server.serve(chosen, settings.serve, settings.mlflow, host, port)
    )
    typer.echo("emoflow serve: stopped", err=True)


if __name__ == "__main__":
    app()
