"""Ingest publishes its datasets all at once or not at all, even when killed half-way."""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_ingest import ckplus_tree, fer_csv, rows_for

from emoflow.components.artifacts import ForeignFilesError
from emoflow.components.ingest.bad_records import IngestError
from emoflow.components.ingest.stage import ingest
from emoflow.components.manifest import read_dataset
from emoflow.components.settings import IngestSettings

ROOT = Path(__file__).resolve().parents[2]

# Ingest in a process of its own that stalls once both datasets are written, FER2013 first:
# the test kills it there, as it would a run killed between its datasets.
STALLING_INGEST = """
import sys, time
from pathlib import Path
from emoflow.components.ingest import stage
from emoflow.components.settings import IngestSettings

fer2013, ckplus, out_dir, stalled = map(Path, sys.argv[1:])
write_dataset = stage.write_dataset
def stalling_write_dataset(*args, **kwargs):  # writes CK+
    write_dataset(*args, **kwargs)
    stalled.touch()
    time.sleep(600)
stage.write_dataset = stalling_write_dataset
stage.ingest(IngestSettings(fer2013=fer2013, ckplus=ckplus, out_dir=out_dir))
"""


@pytest.fixture
def settings(tmp_path: Path) -> IngestSettings:
    ck = ckplus_tree(tmp_path / "ck", {("S005", 1, 4): "happy", ("S006", 1, 4): "anger"})
    rows = rows_for({"Training": 3, "PublicTest": 1, "PrivateTest": 1})
    return IngestSettings(
        fer2013=fer_csv(tmp_path / "fer.csv", rows), ckplus=ck, out_dir=tmp_path / "interim"
    )


def hashes(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` by relative path, with its content hash."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def beside(out_dir: Path) -> list[str]:
    """What lies next to the output folder, the folder itself aside."""
    return sorted(p.name for p in out_dir.parent.iterdir() if p.name.startswith(f".{out_dir.name}"))


def kill_while_staging(settings: IngestSettings, tmp_path: Path) -> int:
    """Run ingest in a subprocess, SIGKILL it once its datasets are written; return its pid."""
    script = tmp_path / "stalling_ingest.py"
    script.write_text(STALLING_INGEST)
    stalled = tmp_path / "stalled"
    arguments = [settings.fer2013, settings.ckplus, settings.out_dir, stalled]
    run = subprocess.Popen(
        [sys.executable, str(script), *map(str, arguments)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not stalled.exists():
        assert run.poll() is None, f"ingest ended unkilled:\n{run.communicate()[0][-3000:]}"
        assert time.monotonic() < deadline, "the datasets were not written in time"
        time.sleep(0.1)
    run.send_signal(signal.SIGKILL)
    run.communicate(timeout=60)
    assert run.returncode == -signal.SIGKILL
    return run.pid


def test_a_run_killed_between_datasets_publishes_nothing_and_the_next_cleans_up(
    settings, tmp_path, caplog
):
    ingest(settings)
    previous = hashes(settings.out_dir)
    fer_csv(settings.fer2013, rows_for({"Training": 4, "PublicTest": 1, "PrivateTest": 1}))
    ckplus_tree(settings.ckplus, {("S008", 1, 4): "fear"})

    pid = kill_while_staging(settings, tmp_path)
    assert hashes(settings.out_dir) == previous, "none of the killed run's datasets is published"
    [staging] = beside(settings.out_dir)
    assert staging.startswith(f".interim.staging-{pid}-")
    built = settings.out_dir.parent / staging
    assert (built / "fer2013" / "pixels.npy").is_file() and (built / "ckplus").is_dir(), (
        "killed once both datasets were built"
    )

    with caplog.at_level(logging.WARNING, logger="emoflow.components.artifacts"):
        outputs = ingest(settings)
    assert f"left by a killed run (pid {pid})" in caplog.text
    assert beside(settings.out_dir) == []
    assert len(read_dataset(outputs.fer2013).manifest) == 42, "the new csv's 6 x 7 rows"
    assert len(read_dataset(outputs.ckplus).manifest) == 12, "and its 3 x 4 CK+ frames"
    assert sorted(p.name for p in settings.out_dir.iterdir()) == ["ckplus", "fer2013"]


def test_a_run_killed_between_the_two_renames_gets_the_old_folder_back(settings):
    """The old folder, renamed aside just before the new one took its place, is put back
    by the next start (here a run that fails, so what is published is what was put back)."""
    ingest(settings)
    previous = hashes(settings.out_dir)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    parent = settings.out_dir.parent
    settings.out_dir.rename(parent / f".interim.old-{dead.pid}-0123abcd")
    (parent / f".interim.staging-{dead.pid}-0123abcd" / "fer2013").mkdir(parents=True)

    fer_csv(settings.fer2013, [("9", "1 2", "Training")])
    with pytest.raises(IngestError):
        ingest(settings)
    assert hashes(settings.out_dir) == previous
    assert beside(settings.out_dir) == []


def test_an_output_folder_holding_other_files_is_refused_not_replaced(settings):
    (settings.out_dir / "raw").mkdir(parents=True)
    (settings.out_dir / "raw" / "keep.txt").write_text("mine")
    with pytest.raises(ForeignFilesError, match=r"interim holds raw, which this stage"):
        ingest(settings)
    assert (settings.out_dir / "raw" / "keep.txt").read_text() == "mine"
    assert beside(settings.out_dir) == []
