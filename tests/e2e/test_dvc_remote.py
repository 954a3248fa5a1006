"""The project's DVC remote: data pushed from one checkout comes back byte-identical.

The test runs the `dvc` command a user runs, in a fresh git + DVC repository that uses the
project's own `.dvc/config`, so it checks both the round trip and that the configured
remote resolves next to the checkout (where a clone beside it finds it too).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT

REMOTE_FOLDER = "emoflow-dvc-remote"  # the configured remote's url, relative to the checkout


def run(cwd: Path, env: dict[str, str], *command: str) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture
def checkout(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """An empty git + DVC repository with the project's DVC config, isolated from the user's."""
    env = {
        **os.environ,
        "DVC_NO_ANALYTICS": "1",
        "DVC_SITE_CACHE_DIR": str(tmp_path / "dvc-site-cache"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),  # no global or user DVC/git settings
    }
    repo = tmp_path / "emoflow"
    repo.mkdir()
    run(repo, env, "git", "init", "-q")
    run(repo, env, sys.executable, "-m", "dvc", "init", "-q")
    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")
    return repo, env


def test_push_then_pull_restores_tracked_files_and_stage_outputs(
    checkout: tuple[Path, dict[str, str]],
) -> None:
    repo, env = checkout
    dvc = (sys.executable, "-m", "dvc")
    assert run(repo, env, *dvc, "remote", "default").strip() == "local"
    remote = repo.parent / REMOTE_FOLDER
    # dvc wraps long lines to the terminal width: compare without whitespace
    assert str(remote) in "".join(run(repo, env, *dvc, "remote", "list").split())

    raw = repo / "data" / "raw.bin"
    raw.parent.mkdir()
    raw.write_bytes(np.random.default_rng(3).bytes(64 * 1024))
    run(repo, env, *dvc, "add", "-q", "data/raw.bin")
    copy = repo / "data" / "copy.bin"
    stage = (
        "-n",
        "copy",
        "-d",
        "data/raw.bin",
        "-o",
        "data/copy.bin",
        "cp data/raw.bin data/copy.bin",
    )
    run(repo, env, *dvc, "stage", "add", "-q", *stage)
    run(repo, env, *dvc, "repro", "-q")
    expected = raw.read_bytes()
    assert copy.read_bytes() == expected

    run(repo, env, *dvc, "push", "-q")
    assert sorted(p.name for p in (remote / "files" / "md5").rglob("*") if p.is_file())
    shutil.rmtree(repo / ".dvc" / "cache")
    raw.unlink()
    copy.unlink()
    run(repo, env, *dvc, "pull", "-q")

    assert raw.read_bytes() == expected
    assert copy.read_bytes() == expected
    assert "up to date" in run(repo, env, *dvc, "status")
