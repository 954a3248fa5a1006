"""A pytest plugin that fails the run when a process a test started outlives the run.

Servers and workers that tests start (MLflow, Prefect's API server, Dask, TensorFlow workers)
must be stopped even when a test fails; one left behind holds ports and cores on a shared CI
machine. Every process of a run inherits a marker in its environment; when the run ends, any
other process that still carries it is reported, stopped, and turns the exit status into a
failure. Loaded by tests/conftest.py; ``pytest -p tests.leftovers`` loads it alone.
"""

from __future__ import annotations

import os
import uuid

import psutil
import pytest

MARKER = "EMOFLOW_TEST_RUN"


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault(MARKER, uuid.uuid4().hex)  # xdist workers keep their controller's


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if hasattr(session.config, "workerinput"):
        return  # an xdist worker: the controller checks once every worker is done
    left = leftovers(os.environ[MARKER])
    if not left:
        return
    lines = [f"  pid {p.pid}: {' '.join(_command(p))[:200]}" for p in left]
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    message = f"{len(left)} process(es) started by tests outlived the run (now stopped):"
    if reporter is not None:
        reporter.write_line("\n".join([message, *lines]), red=True)
    for process in left:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


def leftovers(marker: str) -> list[psutil.Process]:
    """Live processes other than this one (and its xdist workers on their way out) whose
    environment carries ``marker``."""
    own = psutil.Process()
    workers = [p for p in own.children() if _is_xdist_worker(p)]
    _, still = psutil.wait_procs(workers, timeout=30)
    exiting = {p.pid for p in still}
    found = []
    for process in psutil.process_iter():
        if process.pid == own.pid or process.pid in exiting:
            continue
        try:
            if process.environ().get(MARKER) == marker and process.status() != "zombie":
                found.append(process)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def _is_xdist_worker(process: psutil.Process) -> bool:
    """execnet starts xdist's workers with a bootstrap that reads its code from stdin."""
    try:
        command = " ".join(process.cmdline())
    except psutil.Error:
        return False
    return "execnet" in command or "sys.stdin.readline" in command


def _command(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return ["?"]
