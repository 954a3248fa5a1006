"""Writing outputs so that a failure never leaves a half-written artifact behind.

Every stage writes into a temporary sibling and renames it into place only once the whole
output is complete; a rename on one filesystem is atomic, so readers (and DVC) see either
the old artifact or the new one, never a mix.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_file(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path to write; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: Path | str) -> Iterator[Path]:
    """Yield an empty temporary folder; it replaces the folder ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the artifact is an ordinary shared folder
    try:
        yield tmp
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: Path | str, payload: Any) -> None:
    """Write ``payload`` as indented, key-sorted JSON (stable for DVC and git diffs)."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def write_text(path: Path | str, text: str) -> None:
    """Write ``text`` whole or not at all."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)


def read_json(path: Path | str) -> Any:
    """Read a JSON artifact written by :func:`write_json`."""
    return json.loads(Path(path).read_text())
