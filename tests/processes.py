"""Processes a test starts (servers, workers): free loopback ports, and stopping every one.

Each process leads its own process group, so stopping it stops what it started too; the
group is killed when the test ends, passed or failed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that were free a moment ago."""
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]


def stop(process: subprocess.Popen, grace: float = 10) -> None:
    """TERM the process's group, then KILL it (and whatever outlived the leader)."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=wait)
            break
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


@contextlib.contextmanager
def started(
    commands: dict[str, list[str]], cwd: Path, envs: dict[str, dict[str, str]], logs: Path
) -> Iterator[dict[str, subprocess.Popen]]:
    """Start each named command in its own process group, output to ``logs/<name>.log``;
    stop them all on the way out, the last started first."""
    logs.mkdir(parents=True, exist_ok=True)
    processes: dict[str, subprocess.Popen] = {}
    try:
        for name, command in commands.items():
            with (logs / f"{name}.log").open("w") as output:
                processes[name] = subprocess.Popen(
                    command,
                    cwd=cwd,
                    env=envs[name],
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        yield processes
    finally:
        for process in reversed(processes.values()):  # the last started may lean on the first
            stop(process)


def log_tail(logs: Path, name: str, chars: int = 4000) -> str:
    return f"--- {name} ---\n{(logs / f'{name}.log').read_text()[-chars:]}"
