"""Callbacks that inject faults into a training run (importable by the `train.py` subprocesses)."""

from __future__ import annotations

import errno
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


class DiskFullAt(L.Callback):
    """From optimizer step `step` on, every checkpoint write fails as torch reports a full disk: a
    RuntimeError raised while handling the file's OSError, after part of the file was written."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step != self.step:
            return
        import callbacks.checkpointing

        def full_disk(obj, f):
            f.write(b"partial bytes")
            try:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            except OSError:
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")  # noqa: B904

        callbacks.checkpointing.torch.save = full_disk
