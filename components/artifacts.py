"""Writing outputs so that a failure never leaves a half-written artifact behind.

Every stage writes into a temporary sibling and renames it into place only once the whole
output is complete; a rename on one filesystem is atomic, so readers (and DVC) see either
the old artifact or the new one, never a mix. A stage that writes several datasets into one
folder stages them all and publishes them together (:func:`staged_dir`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from emoflow.components.errors import EmoFlowError

log = logging.getLogger(__name__)


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
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
        _replace_dir(tmp, path, old / path.name)
        old.rmdir()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class ForeignFilesError(EmoFlowError):
    """A stage's output folder holds files the stage did not write, so it is not replaced."""


@contextmanager
def staged_dir(path: Path | str, owns: Collection[str]) -> Iterator[Path]:
    """Yield an empty staging folder beside ``path``; on success it replaces ``path`` whole.

    For a stage that writes several datasets into one folder: building them all in one
    staging folder and publishing it with two renames means a kill leaves the complete old
    folder or the complete new one, never new FER2013 beside old CK+. (In the instant
    between the renames the old folder waits under its retired name, and the next start puts
    it back.) Leftovers of killed runs are cleared first (:func:`clear_leftovers`); the names
    ``.<name>.staging-<pid>-<token>`` and ``.<name>.old-<pid>-<token>`` say whose they are.

    ``owns`` names what the stage writes in ``path``: a folder holding anything else (such
    as ``data`` given by mistake as the output folder) is refused rather than wiped.
    Hidden ``*.tmp``/``*.old`` entries, left by killed :func:`atomic_dir` writes, go with it.
    """
    path = Path(path)
    _check_owned(path, owns)
    clear_leftovers(path)
    staging = _leftover_name(path, "staging")
    staging.mkdir(parents=True)
    try:
        yield staging
        _replace_dir(staging, path, _leftover_name(path, "old"))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def clear_leftovers(path: Path | str) -> None:
    """Delete the staging and retired folders that killed :func:`staged_dir` runs left
    beside ``path``, each with a log line; a retired folder is put back if ``path`` is gone.

    Those of a process still running (another run, or a thread of this one) are left alone.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(staging|old)-(\d+)-[0-9a-f]+")
    for leftover in sorted(path.parent.iterdir()):
        match = pattern.fullmatch(leftover.name)
        if match is None or _running(int(match[2])):
            continue
        if match[1] == "old" and not path.exists():
            os.replace(leftover, path)
            log.warning("put back %s as %s: a run was killed while publishing it", leftover, path)
        else:
            shutil.rmtree(leftover)
            log.warning("removed %s, left by a killed run (pid %s)", leftover, match[2])


def _check_owned(path: Path, owns: Collection[str]) -> None:
    """Refuse to replace a folder holding more than the stage's own outputs and leftovers."""
    if not path.is_dir():
        return
    foreign = sorted(
        entry.name
        for entry in path.iterdir()
        if entry.name not in owns
        and not (entry.name.startswith(".") and entry.name.endswith((".tmp", ".old")))
    )
    if foreign:
        raise ForeignFilesError(
            f"{path} holds {', '.join(foreign)}, which this stage does not write; it replaces "
            "the folder whole, so give it an output folder of its own"
        )


def _leftover_name(path: Path, kind: str) -> Path:
    """A fresh name beside ``path`` that :func:`clear_leftovers` recognises as ours."""
    return path.parent / f".{path.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists (this one included: its threads may be staging)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _replace_dir(new: Path, path: Path, aside: Path) -> None:
    """Rename folder ``new`` to ``path``; the folder there before is renamed to ``aside``
    (a free name on the same filesystem) first, and deleted last."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        os.replace(new, path)
        return
    os.replace(path, aside)
    os.replace(new, path)
    shutil.rmtree(aside)


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
