"""Epoch ends from a trainer's callback events, whichever events the trainer fires (see
:class:`EpochBoundaryTracker`); :class:`~calrl.callbacks.calibration_eval.CalibrationEvalCallback` evaluates at them."""

from __future__ import annotations

import math

_EPS = 1e-6


class EpochBoundaryTracker:
    """Turns a trainer's callback events into "epoch k has ended" exactly once per epoch.

    A trainer that fires ``on_epoch_begin`` (every ``transformers.Trainer``) is read only from
    ``on_epoch_end``; one that never does (e.g. TRL 1.12's PPOTrainer) is read from ``on_step_end`` (an epoch ends
    when ``int(state.epoch)`` increases) and ``on_train_end`` (the final partial epoch, once).
    """

    def __init__(self) -> None:
        self.fires_epoch_events = False
        self.last_epoch = 0  # the highest epoch already reported as ended

    def train_begin(self, epoch: float | None) -> None:
        """Start (or resume) at ``epoch``: epochs already completed are not reported again."""
        self.last_epoch = math.floor((epoch or 0.0) + _EPS)

    def epoch_begin(self) -> None:
        self.fires_epoch_events = True

    def epoch_end(self, epoch: float | None) -> int | None:
        self.fires_epoch_events = True
        return self._report(math.ceil((epoch or 0.0) - _EPS))

    def step_end(self, epoch: float | None) -> int | None:
        if self.fires_epoch_events or epoch is None:
            return None
        return self._report(math.floor(epoch + _EPS))

    def train_end(self, epoch: float | None) -> int | None:
        if epoch is None:
            return None
        return self._report(math.ceil(epoch - _EPS))

    def _report(self, k: int) -> int | None:
        if k <= self.last_epoch:
            return None
        self.last_epoch = k
        return k
