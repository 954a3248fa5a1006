"""The run fails when a test leaves a process behind (tests/leftovers.py), also under xdist,
and the process is stopped; a run that stops what it starts passes."""

from __future__ import annotations

import subprocess
import sys
import uuid

import psutil
import pytest

from tests.conftest import ROOT

LEAKING = """
import subprocess

def test_starts_a_server_and_forgets_it():
    subprocess.Popen(["sleep", "{seconds}"], start_new_session=True)
"""
TIDY = """
import subprocess

def test_starts_and_stops():
    process = subprocess.Popen(["sleep", "{seconds}"])
    process.kill()
    process.wait()
"""


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one-process", "xdist"])
@pytest.mark.parametrize(("suite", "status"), [(LEAKING, 1), (TIDY, 0)], ids=["leak", "tidy"])
def test_a_process_left_behind_fails_the_run_and_is_stopped(tmp_path, workers, suite, status):
    seconds = 300 + uuid.uuid4().int % 1000  # a command line no other test's process has
    (tmp_path / "test_suite.py").write_text(suite.format(seconds=seconds))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.leftovers", "-p", "no:cacheprovider"]
        + [*workers, "-c", "/dev/null", "--rootdir", str(tmp_path), str(tmp_path)],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == status, done.stdout + done.stderr
    if status:
        assert f"sleep {seconds}" in done.stdout and "outlived the run" in done.stdout
    left = [
        p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", str(seconds)]
    ]
    assert left == []
