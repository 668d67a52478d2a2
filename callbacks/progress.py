"""The progress bar: Lightning's, with the total a run will really take."""

from __future__ import annotations

from lightning.pytorch.callbacks import TQDMProgressBar


class StepProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar, whose epoch total is the batches the epoch will run: when
    `trainer.max_steps` ends the run inside the epoch (the embedded default stops at step 160 of an
    epoch of 403 batches), the bar counts to there, with gradient accumulation's batches per step
    and the batches a resumed run has already done in this epoch."""

    @property
    def total_train_batches(self) -> int | float:
        trainer = self.trainer
        total = trainer.num_training_batches
        if trainer.max_steps is None or trainer.max_steps < 0:
            return total
        done = trainer.fit_loop.epoch_loop.batch_progress.current.ready  # this epoch's, before a resume
        left = (trainer.max_steps - trainer.global_step) * trainer.accumulate_grad_batches
        return min(total, done + left)
