"""What a run shows while it trains: Lightning's progress bar, with the total a run will really take,
and the model's size in one line."""

from __future__ import annotations

from lightning.pytorch.callbacks import ModelSummary, TQDMProgressBar

from sparsecse.core.console import say


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


class ParameterSummary(ModelSummary):
    """The model's size in one line, in place of Lightning's summary table: its FLOPs column needs an
    `example_input_array`, which a module taking batches of sentence pairs has none of, so it read 0."""

    def __init__(self):
        super().__init__(max_depth=1)

    @staticmethod
    def summarize(summary_data, total_parameters: int, trainable_parameters: int, model_size: float,
                  total_training_modes, **kwargs) -> None:  # fmt: skip
        total, trained = total_parameters / 1e6, trainable_parameters / 1e6
        say(f"sparsecse-train: {total:.1f}M parameters, {trained:.1f}M of them trained ({model_size:.1f} MB)")
