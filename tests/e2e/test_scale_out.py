"""The training grid on a Dask cluster (prefect-dask) gives the models of a local run."""

from __future__ import annotations

import pytest

from tests.e2e.pipeline_runs import CELLS, blessing, metrics, pipeline_in

pytestmark = pytest.mark.slow


def test_grid_on_a_local_dask_cluster_matches_the_local_run(tmp_path):
    pipeline_in(tmp_path / "local", {"task_runner": "thread"})
    pipeline_in(tmp_path / "dask", {"task_runner": "dask", "dask_workers": 2})
    for cell in CELLS:
        assert metrics(tmp_path / "dask", cell) == metrics(tmp_path / "local", cell), (
            f"{cell}: the same seeded model, wherever it trains"
        )
        assert blessing(tmp_path / "dask", cell)["passed"] is True
