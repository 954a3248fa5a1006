"""A consumer installs ``emoflow[serve]``: the model's own requirements, none of the pipeline's
tools. Here every package that only the pipeline extras bring is made unimportable in a child
process, which then predicts with a registered model through ``emoflow predict``, as such an
install would. (Its size, measured in a fresh venv, is in bench/README.md.)"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, packages_distributions, requires

import pandas as pd
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from emoflow.components.serving.image_model import pip_requirements
from emoflow.components.settings import ServeSettings
from tests.conftest import ROOT
from tests.consumers import canvas_with_faces, detectable_crops, png, write_params_for
from tests.serving.demo_models import register_sample_trained

# The child: imports of the blocked top-level modules fail as they would where they are not
# installed; then the emoflow command runs with the remaining arguments.
CONSUMER = """
import importlib.abc, sys
blocked = set(sys.argv[1].split(","))
class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ModuleNotFoundError(f"{name!r} is not in emoflow[serve]", name=name)
sys.meta_path.insert(0, NotInstalled())
from emoflow.flows.cli import app
app(sys.argv[2:], prog_name="emoflow")
"""


def declared(extra: str | None) -> list[Requirement]:
    """pyproject's dependencies (``extra`` None) or one extra's, with ``emoflow[...]`` expanded."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    requirements = []
    for requirement in map(Requirement, listed):
        if canonicalize_name(requirement.name) == "emoflow":
            requirements += [r for e in sorted(requirement.extras) for r in declared(e)]
        else:
            requirements.append(requirement)
    return requirements


def installed_closure(requirements: list[Requirement]) -> set[str]:
    """The distributions those requirements pull in, as installed here (extras' markers off)."""
    seen: set[str] = set()
    todo = [r for r in requirements if r.marker is None or r.marker.evaluate({"extra": ""})]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            below = [Requirement(text) for text in requires(name) or []]
        except PackageNotFoundError:
            continue
        todo += [r for r in below if r.marker is None or r.marker.evaluate({"extra": ""})]
    return seen


def pipeline_only_modules() -> set[str]:
    """Top-level modules whose distributions the pipeline extras bring and serving does not."""
    serving = installed_closure(declared(None) + declared("serve"))
    only = installed_closure(declared("pipeline")) - serving
    return {
        module
        for module, distributions in packages_distributions().items()
        if all(canonicalize_name(d) in only for d in distributions)
    }


def test_the_serve_extra_holds_what_a_logged_model_requires():
    logged = pip_requirements(ServeSettings(detector="mtcnn"))
    serving = installed_closure(declared(None) + declared("serve"))
    assert {canonicalize_name(Requirement(r).name) for r in logged} <= serving


@pytest.mark.slow
def test_serving_a_registered_model_needs_only_the_serve_extra(tmp_path):
    blocked = pipeline_only_modules()
    assert {"dvc", "prefect", "great_expectations", "dask", "tensorflow_datasets"} <= blocked
    assert not {"tensorflow", "keras", "mlflow", "cv2"} & blocked
    model = register_sample_trained(tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}")
    photo = tmp_path / "one face.png"
    photo.write_bytes(png(canvas_with_faces(detectable_crops(1))[0]))
    out = tmp_path / "faces.csv"
    params = write_params_for(tmp_path)

    def emoflow(*arguments: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", CONSUMER, ",".join(sorted(blocked)), *arguments],
            cwd=ROOT,
            env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
            capture_output=True,
            text=True,
            timeout=600,
        )

    predicted = emoflow("predict", str(photo), "-m", model, "-o", str(out), "-p", str(params))
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert len(pd.read_csv(out)) == 1
    refused = emoflow("pipeline", "-p", str(params))
    assert refused.returncode == 1
    assert "prefect is not installed: pip install 'emoflow[pipeline]'" in refused.stderr
