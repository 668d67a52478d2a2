"""Callbacks that inject faults into a training run (importable by the `train.py` subprocesses)."""

from __future__ import annotations

import os
import signal

import lightning as L
import torch


class SignalAt(L.Callback):
    """Send this process a signal once an optimizer step is done (and, being listed after
    LastCheckpoint, once its checkpoint for that step is written): `$SIGNAL_AT`, as `STEP:SIGNAL`.
    Read from the environment, not the config, so that the restart runs the very same config."""

    def __init__(self):
        step, _, name = os.environ.get("SIGNAL_AT", "-1:SIGKILL").partition(":")
        self.step, self.signum = int(step), signal.Signals[name]

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


class PoisonAt(L.Callback):
    """Fill one weight matrix with NaN before the batch of optimizer step `step + 1`."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                next(pl_module.encoder.parameters()).fill_(float("nan"))
