"""Checkpoints a preempted or killed job can resume from: atomic writes, `last.ckpt` on an interval
and on SLURM's preemption signal; and the best checkpoint and early stopping started afresh after a
pruning event, so that a denser model's score does not undo the pruning."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from sparsecse.core.errors import CheckpointWriteError, OutputWriteError, Preempted
from sparsecse.core.validation import NonNegativeInt, checked, passes_options_to
from sparsecse.core.writing import written_whole
from sparsecse.model.loading import load_checkpoint_file

# what a job may be told to stop by: SLURM's time-limit warning, preemption, a user's kill or Ctrl-C
StopSignal = Literal["SIGUSR1", "SIGUSR2", "SIGTERM", "SIGINT"]
# The warning before a time limit, one signal end to end: submitit's preemption signal (its default;
# $SUBMITIT_PREEMPT_SIGNAL overrides it), the `--signal=USR2@<signal_delay_s>` it asks SLURM for,
# and what LastCheckpoint listens to. submitit avoids USR1, which NCCL may catch.
WARNING_SIGNAL = "SIGUSR2"
WARNINGS = (signal.SIGUSR1, signal.SIGUSR2)  # what a plain sbatch job may ask for with --signal


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temporary file beside the target, flush it to disk, then rename it over the target:
    a job killed mid-write, a full disk or a read-only folder leaves the previous checkpoint intact.
    Reading goes through `load_checkpoint_file`: tensors and containers only (weights_only)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        path = Path(path)
        try:
            with written_whole(path) as temporary:
                with open(temporary, "wb") as f:  # a file object: torch keeps the OSError of a failed write
                    torch.save(checkpoint, f)
                    f.flush()
                    os.fsync(f.fileno())
        except OutputWriteError as err:
            kept = "the previous checkpoint is intact" if path.exists() else "no earlier checkpoint there"
            raise CheckpointWriteError(path, err.reason, kept, what="checkpoint ") from None

    def load_checkpoint(
        self, path, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict:
        return load_checkpoint_file(path, "ckpt_path")


class BestCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, with a window: only validations after optimizer step `after_step`
    compete for best. A study that compares a dense arm with arms pruned at step S sets
    `after_step: S`, so that every arm selects among the same steps (the pruned arms cannot keep a
    checkpoint from before their event, see `ScheduledPruning`)."""

    @checked
    @passes_options_to(ModelCheckpoint)
    def __init__(self, after_step: NonNegativeInt = 0, **options):
        super().__init__(**options)
        self.after_step = after_step

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step > self.after_step:
            super().on_validation_end(trainer, pl_module)


def reset_best(callback: ModelCheckpoint) -> list[Path]:
    """Forget every best checkpoint of `callback` (a BestCheckpoint, or a user's own ModelCheckpoint),
    so that only later validations compete (after the last pruning event: a denser model scores higher
    and would undo the pruning); returns their files."""
    kept = [Path(path) for path in callback.best_k_models]
    # Lightning has no public reset: these are the attributes its state_dict saves and restores
    callback.best_k_models = {}
    callback.best_model_path = callback.kth_best_model_path = ""
    callback.best_model_score = None
    callback.kth_value = torch.tensor(float("inf") if callback.mode == "min" else float("-inf"))
    return kept


def settle_batch_progress(checkpoint: dict) -> None:
    """Lightning has already counted the starting batch as fetched ("ready"); a run resumed from
    this checkpoint must not count it twice, or its validations shift by a step."""
    # no public hook edits the loop state a checkpoint saves: on_save_checkpoint gets the dict itself
    progress = checkpoint["loops"]["fit_loop"]["epoch_loop.batch_progress"]
    for counts in (progress["current"], progress["total"]):
        counts["ready"] = counts["started"] = counts["processed"] = counts["completed"]


def requeues(handler: Any) -> bool:
    """A handler that was there before training and is not Lightning's (e.g. submitit's requeue)."""
    return callable(handler) and not getattr(handler, "__module__", "").startswith("lightning")


class LastCheckpoint(L.Callback):
    """`last.ckpt` every `every_n_steps` optimizer steps, at the end of training, and on `signals`
    (SLURM sends SIGUSR2 before a time limit with `--signal=USR2@120`, which submitit asks for, and
    SIGTERM on preemption and `scontrol requeue`).

    A signal only raises a flag; the checkpoint is written between two steps, so it never holds a
    half-applied optimizer step. Then the job requeues itself under SLURM (through
    submitit's handler when submitit launched it, else `scontrol requeue`) and stops.
    """

    @checked
    def __init__(
        self,
        dirpath: str | Path,
        every_n_steps: NonNegativeInt = 200,  # 0: only on signals and at the end
        signals: Sequence[StopSignal] = (WARNING_SIGNAL, "SIGTERM"),
    ):
        self.path = Path(dirpath) / "last.ckpt"
        self.every_n_steps = every_n_steps
        self.signals = [signal.Signals[name] for name in signals]
        self.received: signal.Signals | None = None
        self.previous: dict[signal.Signals, Any] = {}
        self.pending = self.stopping = self.between_batches = False
        self.saved_step = 0  # the step last.ckpt holds (0: none yet, or the run's start)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after Lightning has installed its own handlers, which ours replace while training runs
        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                self.previous[signum] = signal.signal(signum, self._flag)

    def _flag(self, signum: int, frame) -> None:
        self.received = signal.Signals(signum)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.stopping = trainer.strategy.reduce_boolean_decision(self.received is not None, all=False)
        step = trainer.global_step
        # with gradient accumulation, several batches end at one step: that step is saved once, and
        # step 0 (no update yet) never
        due = self.every_n_steps and step > self.saved_step and step % self.every_n_steps == 0
        self.pending = self.pending or self.stopping or bool(due and not trainer.fast_dev_run)

    # A step's checkpoint is written when the next batch starts: after the step's validation, if one
    # was due (Lightning resumes as if it had run), and before anything of the next step happens.
    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx: int) -> None:
        if self.pending:
            self.between_batches = True
            self._save(trainer)
            self.between_batches = self.pending = False
        if self.stopping:
            self._stop(trainer)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module, checkpoint: dict) -> None:
        if self.between_batches:
            settle_batch_progress(checkpoint)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.fast_dev_run:  # a wiring check is no state to resume from
            self._save(trainer)

    def _save(self, trainer: L.Trainer) -> None:
        # everything a resumed run needs: optimizer, schedulers and loops (read back weights-only)
        trainer.save_checkpoint(self.path, weights_only=False)
        self.saved_step = trainer.global_step

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}

    def _stop(self, trainer: L.Trainer) -> None:
        signum = self.received or signal.SIGTERM
        message = f"stopped by {signum.name} at step {trainer.global_step}; saved {self.path}"
        previous = self.previous.get(signum)
        self.teardown(trainer, trainer.lightning_module, "fit")
        if requeues(previous):  # e.g. submitit's: it requeues the job with the same config
            # said first: submitit's time-limit handler exits the process once it has requeued the job
            print(f"{message}; the job's own handler requeues it", file=sys.stderr, flush=True)
            previous(signum, None)
        elif signum in WARNINGS and os.environ.get("SLURM_JOB_ID") and trainer.is_global_zero:
            subprocess.run(["scontrol", "requeue", os.environ["SLURM_JOB_ID"]], check=False)
            message += "; requeued"
        raise Preempted(f"{message}; run the same command again to resume", signum)


BEFORE_FINAL_PRUNING = "before-final-pruning"  # suffix of the best checkpoints an event made obsolete


def forget_best_checkpoints(trainer: L.Trainer) -> list[str]:
    """After the last event, only checkpoints at the final sparsity may be "best": a denser one
    scores higher on STS-B dev and would otherwise undo the pruning when it is reloaded. The earlier
    best files are renamed `<name>-before-final-pruning.ckpt`, so that the final best takes the name
    users reach for (`best.ckpt`); returns their new paths."""
    renamed = []
    for callback in trainer.checkpoint_callbacks:
        for path in reset_best(callback):
            before = path.with_name(f"{path.stem}-{BEFORE_FINAL_PRUNING}{path.suffix}")
            if trainer.is_global_zero and path.is_file():
                path.replace(before)
            renamed.append(str(before))
    trainer.strategy.barrier("forget_best_checkpoints")  # no rank saves before the renames are done
    return renamed


def restart_early_stopping(trainer: L.Trainer) -> None:
    """After an event, early stopping compares the pruned model with pruned models only, as the best
    checkpoint does: a denser model's score would otherwise end training a few validations later."""
    for callback in trainer.early_stopping_callbacks:  # no public reset either: its state_dict's attributes
        callback.wait_count = 0
        callback.best_score = torch.tensor(float("inf") if callback.mode == "min" else float("-inf"))
