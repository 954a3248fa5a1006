"""Quiet logs: the known chatter of TensorFlow, Keras and MLflow is gone from every stage, one
line says what the stage did, and ``emoflow --verbose`` brings the chatter back.

Each check runs in a process of its own: this one imported TensorFlow long ago.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from emoflow.components.quiet_logs import NOISE_LINES
from tests.conftest import TINY_OVERRIDES, write_params

EMOFLOW = str(Path(sys.executable).parent / "emoflow")
STAGES = ("sample", "ingest", "validate", "preprocess", "recipes", "train", "evaluate", "promote")
# What the stages printed on stderr before (2026-12-02), beside progress bars: each a sign of
# chatter that must not come back.
CHATTER = (
    "absl::InitializeLog",
    "cudart_stub",
    "cuInit",
    "UserWarning",
    "WARNING:tensorflow",
    "INFO mlflow",
    "Downloading artifacts",
)


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``command`` as a user runs it: TensorFlow's log level is not set in the environment."""
    unset = ("TF_CPP_MIN_LOG_LEVEL", "MLFLOW_TRACKING_URI")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def noise(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if NOISE_LINES.match(line.encode())]


def test_known_lines_are_dropped_at_the_file_descriptor_and_others_pass(tmp_path):
    child = textwrap.dedent(
        """
        import os
        from emoflow.components.quiet_logs import filtered_stderr
        with filtered_stderr():
            os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called "
                        b"are written to STDERR\\nkept 1\\n")
            os.write(2, b"I0000 00:00:1796235610.432795    9827 cudart_stub.cc:31] Could not "
                        b"find cuda drivers on your machine, GPU will not be used.\\nkept 2")
        os.write(2, b"\\nafter\\n")
        """
    )
    done = run([sys.executable, "-c", child], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "kept 1\nkept 2\nafter\n"


def test_tensorflow_and_mlflow_load_quietly_and_other_warnings_show(tmp_path):
    child = textwrap.dedent(
        """
        import warnings
        from emoflow.components.quiet_logs import quiet
        quiet()
        import tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(1)  # the runtime is not started
        import mlflow.pyfunc

        class Model(mlflow.pyfunc.PythonModel):  # MLflow warns: no type hints
            def predict(self, context, model_input, params=None):
                return model_input

        warnings.warn("a warning no one knows")
        print(int(tf.reduce_sum(tf.ones(3))))
        """
    )
    done = run([sys.executable, "-c", child], tmp_path)
    assert done.returncode == 0 and done.stdout == "3\n", done.stderr
    assert noise(done.stderr) == [] and "Add type hints" not in done.stderr
    assert "UserWarning: a warning no one knows" in done.stderr


def test_known_warnings_are_dropped_when_logging_captures_them_as_a_flow_run_does(tmp_path):
    child = textwrap.dedent(
        """
        import logging, warnings
        from emoflow.components.quiet_logs import quiet
        quiet()
        logging.basicConfig(format="logged %(message)s")
        logging.captureWarnings(True)
        warnings.warn("`shuffle=True` was passed, but will be ignored since the data is a dataset")
        warnings.warn("a warning no one knows")
        """
    )
    done = run([sys.executable, "-c", child], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "a warning no one knows" in done.stderr and "shuffle=True" not in done.stderr
    assert done.stderr.startswith("logged "), "through logging, as in a flow run"


@pytest.mark.slow
def test_every_stage_says_what_it_did_in_one_line_without_chatter(tmp_path):
    """The tiny pipeline, stage by stage as DVC runs it; evaluate once more with --verbose."""
    write_params(tmp_path, TINY_OVERRIDES)
    runs = {}
    for stage in STAGES:
        done = runs[stage] = run([EMOFLOW, stage], tmp_path)
        assert done.returncode == 0, f"{stage}:\n{done.stdout}\n{done.stderr}"
        last = done.stdout.splitlines()[-1]
        assert last.startswith(f"emoflow {stage}") and "wrote " in last, done.stdout
        assert "done:" not in done.stdout and "Outputs(" not in done.stdout
        assert [c for c in CHATTER if c in done.stderr] == [], f"{stage}:\n{done.stderr}"
    assert "Epoch 2/2" in runs["train"].stdout, "Keras' progress is kept"
    verbose = run([EMOFLOW, "--verbose", "evaluate"], tmp_path)
    assert verbose.returncode == 0, verbose.stderr
    assert len(verbose.stderr.splitlines()) > len(runs["evaluate"].stderr.splitlines())
