"""The tiny project the training tests train in."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from emoflow.components.settings import load_params
from emoflow.flows import stages
from tests.conftest import TINY_OVERRIDES, write_params


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Iterator[Path]:
    """Tiny data for every network (FER2013-like faces and CK+-like sequences, as shards) and
    one MLflow store for the module: creating a sqlite store costs seconds. The data stages
    read no train settings: each test writes its own into the folder's params.yaml."""
    folder = tmp_path_factory.mktemp("training-project")
    previous = Path.cwd()
    os.chdir(folder)
    try:
        params = load_params(write_params(folder, TINY_OVERRIDES))
        for stage in (stages.sample, stages.ingest, stages.preprocess):
            stage(params)
    finally:
        os.chdir(previous)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
        yield folder
