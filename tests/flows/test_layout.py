"""The layout holds: parts of components/ import one way, and dvc.yaml follows the code.

Each check is a function that returns what is wrong, so the tests can also feed it a broken
tree or a broken dvc.yaml and see that it notices.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from emoflow.components.settings import load_params
from emoflow.flows import code_graph
from emoflow.flows.stages import DATA_STAGES, MODEL_STAGES, STAGE_FILES

ROOT = code_graph.PROJECT_ROOT
STAGES = {**DATA_STAGES, **MODEL_STAGES}
CODE_PREFIXES = ("components/", "flows/")


def resolved_dvc_stages(project: Path) -> dict[str, dict[str, list[str]]]:
    """dvc.yaml's stages as DVC resolves them (templating, matrix): deps and outs by path."""
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        return {
            stage.name: {
                "deps": [str(d.def_path) for d in stage.deps if not d.def_path.endswith(".yaml")],
                "outs": [str(o.def_path) for o in stage.outs],
            }
            for stage in repo.index.stages
        }


def code_dep_drift(dvc_stages: dict[str, dict[str, list[str]]]) -> list[str]:
    """Stages whose code deps differ from the files their code imports."""
    problems = []
    for address, stage in dvc_stages.items():
        name = address.split("@")[0]
        listed = sorted(d for d in stage["deps"] if d.startswith(CODE_PREFIXES))
        wanted = code_graph.stage_code_files(STAGES[name])
        if listed != wanted:
            missing, extra = sorted(set(wanted) - set(listed)), sorted(set(listed) - set(wanted))
            problems.append(f"{address}: missing {missing}, not imported {extra}")
    return problems


def _in_project(path: Path, project: Path) -> Path:
    """A path of the settings, anchored at the project's params.yaml, as dvc.yaml names it."""
    return Path(os.path.relpath(path, project))


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def file_drift(dvc_stages: dict[str, dict[str, list[str]]], project: Path) -> list[str]:
    """Stages whose data deps or outs disagree with flows/stages.py's declarations."""
    params = load_params(project / "params.yaml")
    cells = {cell.key: cell for cell in params.train.grid()}
    problems = []
    for address, stage in dvc_stages.items():
        name, _, key = address.partition("@")
        files, cell = STAGE_FILES[name], cells.get(key)
        reads = [_in_project(p, project) for p in files.reads(params, cell) if p is not None]
        writes = [_in_project(p, project) for p in files.writes(params, cell)]
        deps = [Path(d) for d in stage["deps"] if not d.startswith(CODE_PREFIXES)]
        outs = [Path(o) for o in stage["outs"]]
        for read in reads:
            if not any(_inside(read, d) or _inside(d, read) for d in deps):
                problems.append(f"{address}: reads {read}, which dvc.yaml does not list in deps")
        for out in outs:
            if not any(_inside(out, w) for w in writes):
                problems.append(
                    f"{address}: dvc.yaml declares out {out}, which the stage does not write"
                )
        for write in writes:
            if not any(_inside(o, write) for o in outs):
                problems.append(
                    f"{address}: writes {write}, which dvc.yaml does not declare in outs"
                )
    return problems


@pytest.fixture(scope="module")
def dvc_stages() -> dict[str, dict[str, list[str]]]:
    return resolved_dvc_stages(ROOT)


def test_parts_of_components_import_only_what_the_layering_allows():
    assert code_graph.layer_violations(ROOT / "components") == []


def test_serving_importing_training_is_reported(tmp_path):
    broken = tmp_path / "components"
    shutil.copytree(ROOT / "components", broken, ignore=shutil.ignore_patterns("__pycache__"))
    predict = broken / "serving" / "predict.py"
    training = "emoflow.components.training.train"
    predict.write_text(predict.read_text() + f"\nfrom {training} import train\n")
    [violation] = code_graph.layer_violations(broken)
    assert f"serving imports {training}" in violation and "predict.py" in violation


def test_every_stage_of_dvc_yaml_is_a_stage_of_the_flow(dvc_stages):
    assert {address.split("@")[0] for address in dvc_stages} == set(STAGES)


def test_dvc_code_deps_are_the_files_each_stage_imports(dvc_stages):
    assert code_dep_drift(dvc_stages) == []


def test_a_code_dep_left_out_of_dvc_yaml_is_reported(dvc_stages):
    evaluate = next(a for a in dvc_stages if a.startswith("evaluate@"))
    broken = {**dvc_stages, evaluate: dict(dvc_stages[evaluate])}
    broken[evaluate]["deps"] = [
        d for d in broken[evaluate]["deps"] if d != "components/judging/scores.py"
    ]
    assert code_dep_drift(broken) == [
        f"{evaluate}: missing ['components/judging/scores.py'], not imported []"
    ]


def test_dvc_data_deps_and_outs_are_what_each_stage_reads_and_writes(dvc_stages):
    assert file_drift(dvc_stages, ROOT) == []


def test_an_out_missing_from_dvc_yaml_is_reported(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config").write_text("[core]\n    no_scm = true\n")
    dvc_yaml = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    dvc_yaml["stages"]["preprocess"]["outs"] = dvc_yaml["stages"]["preprocess"]["outs"][:1]
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml))
    problems = file_drift(resolved_dvc_stages(tmp_path), tmp_path)
    assert problems == [
        "preprocess: writes reports/augmentation_grid.png, which dvc.yaml does not declare in outs"
    ]
