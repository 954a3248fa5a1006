"""A wall-clock budget for fitting: stop before an epoch that would overrun it.

A CPU recipe is judged by what it reaches in a fixed time (e.g. 2.5 hours on 2 cores), not in
a fixed number of epochs, whose duration depends on the machine and its load. The run stops
cleanly after a whole epoch, its checkpoint kept, so running train again adds another budget.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import keras


class TimeBudget(keras.callbacks.Callback):
    """Stops fitting once the next epoch, at the mean epoch time so far, would end past the
    budget. One instance spans every phase of a run.

    ``agreed`` turns this process's verdict into the cluster's: workers of one model must
    stop after the same epoch, so under a multi-worker strategy one over budget stops all.
    """

    def __init__(self, minutes: float, agreed: Callable[[bool], bool] = bool) -> None:
        super().__init__()
        self.seconds = minutes * 60
        self.agreed = agreed
        self.started: float | None = None
        self.epochs = 0
        self.exhausted = False

    def on_train_begin(self, logs=None) -> None:
        if self.started is None:
            self.started = time.monotonic()

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        self.epochs += 1
        spent = time.monotonic() - self.started
        over = spent + spent / self.epochs > self.seconds
        if self.agreed(over):
            print(
                f"time budget: {spent / 60:.1f} of {self.seconds / 60:.0f} minutes spent"
                if over
                else "time budget: another worker's is spent"
            )
            self.exhausted = True
            self.model.stop_training = True
