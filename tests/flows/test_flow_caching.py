"""The Prefect flow's caching, retries and artifacts, on small stand-in stages.

The stand-ins write tiny files, so the rules of flows/caching.py are checked through the real
Prefect engine (marked slow: the Prefect test harness alone takes 10-25 s to start) in
seconds: what a re-run skips, and what makes it run a stage again.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, TEMPORARILY_UNAVAILABLE

from emoflow.components.settings import Params
from emoflow.flows import caching, code_graph, reports, training
from emoflow.flows.stages import DATA_STAGES, MODEL_STAGES, STAGE_FILES, StageFiles, blocks
from tests.conftest import PREFECT_STARTUP_TIMEOUT, write_params

CALLS: Counter[str] = Counter()
FAILURES: list[BaseException] = []  # what the flaky stage raises, in order, before it succeeds


def make(params):
    CALLS["make"] += 1
    Path("out").mkdir(exist_ok=True)
    Path("out/made.txt").write_text(f"seed {params.sample.seed}")


def use(params):
    CALLS["use"] += 1
    Path("out/used.txt").write_text(Path("out/made.txt").read_text().upper())


def fit(params, cell):
    CALLS["fit"] += 1
    Path(f"out/{cell.key}.txt").write_text(Path("out/used.txt").read_text() + cell.key)


def ingest(params):
    CALLS["ingest"] += 1
    if FAILURES:
        raise FAILURES.pop(0)


FILES = {
    "make": StageFiles(
        lambda p, c: blocks(p, "sample"), lambda p, c: (), lambda p, c: (Path("out/made.txt"),)
    ),
    "use": StageFiles(
        lambda p, c: {}, lambda p, c: (Path("out/made.txt"),), lambda p, c: (Path("out/used.txt"),)
    ),
    "fit": StageFiles(
        lambda p, c: {"cell": c.model_dump()},
        lambda p, c: (Path("out/used.txt"),),
        lambda p, c: (Path(f"out/{c.key}.txt"),),
    ),
}
FIT_OUTPUT = Path("out/convnn-fer7.txt")


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=PREFECT_STARTUP_TIMEOUT):
        yield


@pytest.fixture
def project(tmp_path, monkeypatch, harness) -> Path:
    """A folder with params.yaml, and the flow wired to the stand-in stages."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(training, "DATA_STAGES", {"make": make, "use": use})
    monkeypatch.setattr(training, "MODEL_STAGES", {"fit": fit})
    monkeypatch.setattr(training, "STAGE_FILES", FILES)
    CALLS.clear()
    FAILURES.clear()
    write_params(tmp_path, {"flow": {"cache": True, "retries": 1, "retry_delay_seconds": 0}})
    return tmp_path


def run_flow(overrides: dict | None = None) -> Counter[str]:
    """One flow run; the stages it actually ran."""
    if overrides:
        write_params(
            Path.cwd(),
            {"flow": {"cache": True, "retries": 1, "retry_delay_seconds": 0}, **overrides},
        )
    before = Counter(CALLS)
    training.training_flow("params.yaml")
    return CALLS - before


@pytest.mark.slow
def test_a_rerun_skips_what_nothing_touched(project):
    from prefect.artifacts import Artifact

    assert run_flow() == {"make": 1, "use": 1, "fit": 1}
    assert run_flow() == {}
    report = Artifact.get(reports.RUN_KEY).data
    assert "**Completed**" in report and "| `fit/convnn-fer7` | cached |" in report
    assert run_flow({"evaluate": {"batch_size": 7}}) == {}, "no stand-in reads the evaluate block"
    two_sets = {
        "fer7": ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"],
        "riot": ["fear", "angry"],
    }
    assert run_flow({"train": {"emotion_sets": two_sets}}) == {"fit": 1}, (
        "a new grid cell trains only itself"
    )
    assert Path("out/convnn-riot.txt").exists()


@pytest.mark.slow
def test_a_stage_runs_again_when_its_outputs_or_inputs_changed(project):
    run_flow()
    Path("out/used.txt").unlink()
    assert run_flow() == {"use": 1}, "rebuilt with the same content: what reads it stays cached"
    FIT_OUTPUT.write_text("edited by hand")
    assert run_flow() == {"fit": 1}
    assert FIT_OUTPUT.read_text() == "SEED 2018convnn-fer7"
    assert run_flow({"sample": {"seed": 7}}) == {"make": 1, "use": 1, "fit": 1}, (
        "new content flows downstream"
    )


@pytest.mark.slow
def test_with_caching_off_every_stage_runs(project):
    write_params(project, {"flow": {"cache": False}})
    assert run_flow() == {"make": 1, "use": 1, "fit": 1}
    assert run_flow() == {"make": 1, "use": 1, "fit": 1}


@pytest.mark.slow
def test_a_transient_error_is_retried(project, monkeypatch):
    monkeypatch.setattr(training, "DATA_STAGES", {"ingest": ingest})
    monkeypatch.setattr(training, "MODEL_STAGES", {})
    FAILURES.append(ConnectionResetError("peer went away"))
    assert run_flow() == {"ingest": 2}


@pytest.mark.slow
def test_bad_input_fails_at_once_and_the_outcome_says_where(project, monkeypatch):
    from prefect.artifacts import Artifact

    monkeypatch.setattr(training, "DATA_STAGES", {"ingest": ingest, "make": make})
    FAILURES.append(FileNotFoundError("data/raw/fer2013.csv"))
    with pytest.raises(FileNotFoundError):
        training.training_flow("params.yaml")
    assert CALLS == {"ingest": 1}
    report = Artifact.get(reports.RUN_KEY).data
    assert "**Failed** at `ingest`" in report and "| `make` | not run |" in report
    assert "the flow stopped at `ingest`" in Artifact.get(reports.GATE_KEY).data


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (ConnectionRefusedError(), True),
        (TimeoutError(), True),
        (OSError("disk I/O error"), True),
        (FileNotFoundError("x"), False),
        (PermissionError("x"), False),
        (ValueError("row 12: 2303 pixels"), False),
        (MlflowException("busy", error_code=TEMPORARILY_UNAVAILABLE), True),
        (
            MlflowException("API request failed: connection refused"),
            True,
        ),  # the client's default code
        (MlflowException("no such model", error_code=RESOURCE_DOES_NOT_EXIST), False),
    ],
)
def test_which_errors_are_retried(error, transient):
    assert training.is_transient(error) is transient


def test_a_stage_code_key_covers_the_components_it_imports_and_only_those(monkeypatch):
    stages = {**DATA_STAGES, **MODEL_STAGES}
    digests = {name: caching.code_digest(stage) for name, stage in stages.items()}
    assert len(set(digests.values())) == len(digests)

    source = code_graph.source
    for edited, touched in (
        ("emoflow.components.training.train", {"train"}),
        ("emoflow.components.judging.scores", {"evaluate", "promote"}),
        (
            "emoflow.components.model_kinds",  # settings imports it, and every stage reads settings
            set(stages),
        ),
    ):
        monkeypatch.setattr(
            code_graph, "source", lambda m, e=edited: source(m) + ("\n# edited" if m == e else "")
        )
        changed = {
            name for name, stage in stages.items() if caching.code_digest(stage) != digests[name]
        }
        assert changed == touched, edited


def test_a_model_stage_key_holds_its_own_cell_not_the_whole_grid():
    one = Params.model_validate({"train": {"emotion_sets": {"fer7": ["angry", "happy"]}}})
    two = Params.model_validate(
        {"train": {"emotion_sets": {"fer7": ["angry", "happy"], "riot": ["fear", "calm"]}}}
    )
    cell = one.train.grid()[0]
    for name in ("train", "evaluate"):
        files = STAGE_FILES[name]
        assert files.settings(one, cell) == files.settings(two, cell)
        assert files.settings(two, two.train.grid()[1]) != files.settings(two, cell)
    tuned = Params.model_validate(
        {
            "train": {
                "emotion_sets": {"fer7": ["angry", "happy"]},
                "overrides": {"modern": {"epochs": 3}},
            }
        }
    )
    files = STAGE_FILES["train"]
    assert files.settings(tuned, cell) == files.settings(one, cell), "another architecture's recipe"
    assert files.settings(
        one.model_copy(update={"train": one.train.model_copy(update={"epochs": 3})}), cell
    ) != files.settings(one, cell)


def test_files_digest_follows_content_and_place(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a/x.txt").write_text("1")
    first = caching.files_digest([tmp_path / "a"])
    assert caching.files_digest([tmp_path / "a"]) == first
    (tmp_path / "a/x.txt").write_text("2")
    assert caching.files_digest([tmp_path / "a"]) != first
    (tmp_path / "b").mkdir()
    (tmp_path / "b/x.txt").write_text("2")
    assert caching.files_digest([tmp_path / "b"]) != caching.files_digest([tmp_path / "a"])
    assert caching.files_digest([tmp_path / "missing"]) != caching.files_digest([])


def test_every_stage_is_declared_and_only_promote_is_never_cached():
    """A stage added without a declaration would run uncached: this says so at once."""
    stages = {**DATA_STAGES, **MODEL_STAGES}
    assert set(STAGE_FILES) == set(stages)
    assert {name for name, files in STAGE_FILES.items() if not files.cached} == {"promote"}
    params = Params()
    [cell] = params.train.grid()
    for name, files in STAGE_FILES.items():
        c = cell if name in MODEL_STAGES else None
        assert list(files.writes(params, c)), name
        assert caching.input_key(stages[name], files, params, c), name  # every setting named exists
