"""Checkpoints: a training run killed at any point resumes from its last finished epoch.

After every epoch the whole model (weights and optimizer state) goes to
``<folder>/epoch-NNNN/`` with a state file: the epoch, the training phase, the MLflow run,
the history so far and the early-stopping state (best weights included); then older
checkpoints are deleted. A checkpoint folder appears whole (``artifacts.atomic_dir``), so a
kill mid-write leaves the previous one in place. A checkpoint is resumed only by a run with
the same fingerprint (cell, settings, data): a changed recipe starts afresh rather than
mixing two recipes in one model.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from emoflow.components.artifacts import atomic_dir, read_json, write_json
from emoflow.components.face_views import load_network
from emoflow.components.model_files import MODEL_FILE

CHECKPOINTS_DIR = ".checkpoints"  # under train.out_dir, beside (not inside) the DVC outputs
STATE_FILE = "state.json"
BEST_WEIGHTS_FILE = "best_weights.npz"


def checkpoint_folder(out_dir: Path, key: str) -> Path:
    return out_dir / CHECKPOINTS_DIR / key


@dataclass(frozen=True)
class Resumed:
    """What a checkpoint gives back: the compiled network and where training stood."""

    network: keras.Model
    epoch: int  # epochs finished
    phase: str
    run_id: str
    history: dict[str, list[float]]
    stopping: dict[str, float | int | None] | None  # ResumableEarlyStopping.state()
    best_weights: list[np.ndarray] | None
    plateau: dict[str, float | int | None] | None = None  # ResumablePlateau.state()


def latest(folder: Path, fingerprint: str) -> Resumed | None:
    """The newest checkpoint in ``folder`` written by a run with this fingerprint, or None.

    A checkpoint that cannot be read (written by another Keras version, say) is reported
    and training starts afresh: a checkpoint saves time, it must never block a run.
    Call it inside the distribution strategy's scope: the network is built there.
    """
    saved = sorted(folder.glob("epoch-*"))
    if not saved:
        return None
    newest = saved[-1]
    try:
        state = read_json(newest / STATE_FILE)
        if state["fingerprint"] != fingerprint:
            print(f"{newest}: written with other settings or data; training starts afresh")
            return None
        best = None
        if (newest / BEST_WEIGHTS_FILE).exists():
            with np.load(newest / BEST_WEIGHTS_FILE) as arrays:
                best = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
        network = load_network(newest / MODEL_FILE, compile=True)
    except (OSError, ValueError, KeyError, TypeError) as err:
        print(
            f"{newest}: cannot resume from it ({type(err).__name__}: {err}); training starts afresh"
        )
        return None
    return Resumed(
        network=network,
        epoch=state["epoch"],
        phase=state["phase"],
        run_id=state["run_id"],
        history=state["history"],
        stopping=state["stopping"],
        best_weights=best,
        plateau=state.get("plateau"),
    )


def discard(folder: Path) -> None:
    """Delete a cell's checkpoints (after its outputs are written, or to start afresh)."""
    shutil.rmtree(folder, ignore_errors=True)


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """Early stopping on ``val_loss`` that keeps the best weights and survives a restart."""

    def __init__(self, patience: int, resumed: Resumed | None = None) -> None:
        super().__init__(monitor="val_loss", patience=patience, restore_best_weights=True)
        self._resumed = resumed

    def on_train_begin(self, logs=None) -> None:
        super().on_train_begin(logs)
        if self._resumed is not None and self._resumed.stopping is not None:
            for name, value in self._resumed.stopping.items():
                setattr(self, name, value)
            self.best_weights = self._resumed.best_weights
            self._resumed = None

    def state(self) -> dict[str, float | int | None]:
        return {
            "wait": int(self.wait),
            "best": None if self.best is None else float(self.best),
            "best_epoch": int(self.best_epoch),
            "stopped_epoch": int(self.stopped_epoch),
        }


class ResumablePlateau(keras.callbacks.ReduceLROnPlateau):
    """Lowers the learning rate when val_accuracy stalls, and survives a restart.

    The rate itself is optimizer state, saved with the checkpoint's model; what is kept here
    is the callback's count of stalled epochs and the best accuracy so far.
    """

    def __init__(self, factor: float, patience: int, resumed: Resumed | None = None) -> None:
        super().__init__(monitor="val_accuracy", mode="max", factor=factor, patience=patience)
        self._resumed = resumed

    def on_train_begin(self, logs=None) -> None:
        super().on_train_begin(logs)
        if self._resumed is not None and self._resumed.plateau is not None:
            for name, value in self._resumed.plateau.items():
                setattr(self, name, value)
        self._resumed = None

    def state(self) -> dict[str, float | int | None]:
        return {"wait": int(self.wait), "best": float(self.best), "cooldown_counter": 0}


class Checkpoint(keras.callbacks.Callback):
    """Keeps the run's history across restarts and, given a folder, checkpoints every epoch.

    Put it after the early-stopping and plateau callbacks, so that each checkpoint holds that
    epoch's verdicts.
    """

    def __init__(
        self, folder: Path | None, fingerprint: str, run_id: str, resumed: Resumed | None
    ) -> None:
        super().__init__()
        self.folder = folder
        self.fingerprint = fingerprint
        self.run_id = run_id
        self.history: dict[str, list[float]] = {
            k: list(v) for k, v in (resumed.history if resumed else {}).items()
        }
        self.phase = ""
        self.stopping: ResumableEarlyStopping | None = None
        self.plateau: ResumablePlateau | None = None

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        if self.folder is not None:
            self._save(epoch + 1)

    def _save(self, epochs_done: int) -> None:
        target = self.folder / f"epoch-{epochs_done:04d}"
        for stale in self.folder.glob(".*.tmp"):  # left by a run killed mid-write
            shutil.rmtree(stale, ignore_errors=True)
        with atomic_dir(target) as tmp:
            self.model.save(tmp / MODEL_FILE)
            stopping = self.stopping
            if stopping is not None and stopping.best_weights is not None:
                np.savez(tmp / BEST_WEIGHTS_FILE, *stopping.best_weights)
            write_json(
                tmp / STATE_FILE,
                {
                    "fingerprint": self.fingerprint,
                    "epoch": epochs_done,
                    "phase": self.phase,
                    "run_id": self.run_id,
                    "history": self.history,
                    "stopping": None if stopping is None else stopping.state(),
                    "plateau": None if self.plateau is None else self.plateau.state(),
                },
            )
        for older in self.folder.glob("epoch-*"):
            if older != target:
                shutil.rmtree(older, ignore_errors=True)
