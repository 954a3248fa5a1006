"""The ``git_commit`` tag of a registered version names the code it was made from: HEAD, marked
``-dirty`` when tracked files differ from it (dvc.lock aside, which every run rewrites)."""

from __future__ import annotations

import subprocess

import pytest

from emoflow.components.judging.promote import git_commit


def git(folder, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.fixture
def repository(tmp_path, monkeypatch):
    git(tmp_path, "init", "-q")
    for name in ("train.py", "dvc.lock"):
        (tmp_path / name).write_text("v1\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_clean_checkout_is_tagged_with_head(repository):
    (repository / "dvc.lock").write_text("rewritten by the run\n")
    (repository / "untracked.txt").write_text("not code of the model\n")
    assert git_commit() == git(repository, "rev-parse", "HEAD")


def test_uncommitted_changes_mark_the_commit_dirty(repository):
    (repository / "train.py").write_text("v2\n")
    assert git_commit() == git(repository, "rev-parse", "HEAD") + "-dirty"


def test_outside_a_repository_the_commit_is_unknown(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert git_commit() == "unknown"
