"""What a flow run shows in the Prefect UI: its outcome and the gate's verdicts, as markdown.

Both artifacts have fixed keys, so the UI's Artifacts page shows the latest of each with its
history across runs; both are published whether the run completes or fails, so the latest
always describes the latest run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prefect.artifacts import create_markdown_artifact

from emoflow.components.mlflow_store import tracking_uri
from emoflow.components.settings import Params

if TYPE_CHECKING:
    from emoflow.components.judging.promote import Blessing

RUN_KEY = "emoflow-run"
GATE_KEY = "emoflow-gate"


@dataclass
class Outcome:
    """How each planned step of a flow run ended, in order."""

    planned: list[str]
    params_path: str
    cache: bool
    # step -> (what happened, seconds)
    steps: dict[str, tuple[str, float]] = field(default_factory=dict)

    def record(self, step: str, how: str, seconds: float) -> None:
        self.steps[step] = (how, seconds)

    @property
    def failed_at(self) -> str | None:
        return next(
            (step for step, (how, _) in self.steps.items() if how.startswith("failed")), None
        )

    def markdown(self, mlflow_uri: str, experiment: str) -> str:
        verdict = f"**Failed** at `{self.failed_at}`" if self.failed_at else "**Completed**"
        lines = [
            "# EmoFlow training run",
            "",
            f"{verdict}. Settings: `{self.params_path}`; caching {'on' if self.cache else 'off'}; "
            f"MLflow: `{mlflow_uri}`, experiment `{experiment}`.",
            "",
            "| step | outcome | seconds |",
            "| --- | --- | ---: |",
        ]
        for step in self.planned:
            how, seconds = self.steps.get(step, ("not run", None))
            lines.append(
                f"| `{step}` | {_cell(how)} | {'' if seconds is None else f'{seconds:.1f}'} |"
            )
        return "\n".join(lines) + "\n"


def gate_markdown(blessings: list[Blessing], mlflow_uri: str, failed_at: str | None) -> str:
    """Each model's verdict, registered version and every threshold behind it."""
    lines = ["# EmoFlow gate", ""]
    if not blessings:
        lines.append(
            f"The gate did not run: the flow stopped at `{failed_at}`."
            if failed_at
            else "No model was gated."
        )
    for blessing in blessings:
        lines += [f"## {blessing.model_name}: {_verdict(blessing, mlflow_uri)}", ""]
        lines += [
            "| threshold | metric | value | bound | verdict | reason |",
            "| --- | --- | ---: | ---: | --- | --- |",
        ]
        for check in blessing.checks:
            cells = [
                check.kind,
                f"`{check.metric}`",
                _number(check.value),
                _number(check.bound),
                "pass" if check.passed else "**fail**",
                _cell(check.reason),
            ]
            lines.append(f"| {' | '.join(cells)} |")
        lines.append("")
    return "\n".join(lines)


def publish(outcome: Outcome, blessings: list[Blessing], params: Params) -> None:
    """Create the run and gate artifacts of the current flow run."""
    uri = tracking_uri(params.mlflow)
    create_markdown_artifact(
        markdown=outcome.markdown(uri, params.mlflow.experiment),
        key=RUN_KEY,
        description="Outcome of the flow run, step by step",
    )
    create_markdown_artifact(
        markdown=gate_markdown(blessings, uri, outcome.failed_at),
        key=GATE_KEY,
        description="Gate verdicts and registered versions",
    )


def _verdict(blessing: Blessing, mlflow_uri: str) -> str:
    if blessing.version is None:
        return "**refused**, not registered"
    version = f"version {blessing.version}"
    if mlflow_uri.startswith(("http://", "https://")):
        page = (
            f"{mlflow_uri.rstrip('/')}/#/models/{blessing.model_name}/versions/{blessing.version}"
        )
        version = f"[{version}]({page})"
    role = (
        "**champion**"
        if blessing.passed
        else "**challenger** (the champion stays: a change threshold failed)"
    )
    return f"{role}, registered as {version}"


def _number(value: object) -> str:
    return "" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")
