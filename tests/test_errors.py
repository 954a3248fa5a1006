"""Every error a user can act on is an EmoFlowError, the one class the entry points catch."""

from __future__ import annotations

import ast

from typer.testing import CliRunner

from emoflow.flows.cli import app
from emoflow.flows.code_graph import PROJECT_ROOT


def error_classes() -> dict[str, list[str]]:
    """Each ``...Error`` class defined under components/, with the names of its bases."""
    found = {}
    for file in (PROJECT_ROOT / "components").rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ClassDef) and node.name.endswith("Error"):
                found[node.name] = [b.id for b in node.bases if isinstance(b, ast.Name)]
    return found


def test_every_project_error_derives_from_emoflow_error():
    classes = error_classes()
    assert len(classes) >= 9

    def rooted(name: str) -> bool:
        return name == "EmoFlowError" or any(rooted(b) for b in classes.get(name, []))

    assert [name for name in classes if not rooted(name)] == []


def test_the_cli_prints_a_project_error_as_one_line_and_exits_1(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("train:\n  epochs: 0\n")
    result = CliRunner().invoke(app, ["recipes", "--params", str(bad)])
    assert result.exit_code == 1
    assert "emoflow recipes:" in result.output and "train.epochs" in result.output
    assert "Traceback" not in result.output
