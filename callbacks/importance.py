"""Importance scores as pictures: a layers x heads heatmap and a neuron-score histogram."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger

from callbacks.pruning import scoring_batches
from sparsecse.core.errors import ConfigError
from sparsecse.core.validation import checked, passes_options_to
from sparsecse.pruning.schedule import EventTime
from sparsecse.pruning.sparsifier import Sparsifier
from sparsecse.report.plots import head_heatmap, neuron_histogram


class ImportanceScoring(L.Callback):
    """Compute importance scores at chosen epochs or steps and log them (wandb and PNG files).

    `at` is a list of `{epoch: E}` or `{step: S}`, and `at_end` adds the model as training leaves
    it; the scores use the same options as pruning.
    """

    @checked
    @passes_options_to(Sparsifier)  # score, lambda, batches, ... (Sparsifier's arguments)
    def __init__(self, at: Sequence[EventTime], output_dir: str | Path, at_end: bool = False, **options):
        self.sparsifier = Sparsifier(**options)
        if self.sparsifier.granularity != "structured":
            raise ConfigError("granularity", "importance pictures show heads and neurons: use structured")
        self.at = {(unit, entry[unit]) for entry in at for unit in ("epoch", "step") if unit in entry}
        self.at_end = at_end
        self.output_dir = Path(output_dir)
        self.written: list[Path] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.sparsifier.attach(pl_module.encoder)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if ("epoch", trainer.current_epoch) in self.at:
            self.score(trainer, pl_module, f"epoch{trainer.current_epoch}")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if ("step", trainer.global_step) in self.at:
            self.score(trainer, pl_module, f"step{trainer.global_step}")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.at_end:
            self.score(trainer, pl_module, "final")

    def score(
        self, trainer: L.Trainer, pl_module: L.LightningModule, tag: str
    ) -> dict[str, list[torch.Tensor]]:
        batches = scoring_batches(trainer, self.sparsifier.seed)
        scores = self.sparsifier.importance(
            pl_module.encoder, batches, scoring=trainer.global_step, rank=trainer.global_rank
        )
        if trainer.is_global_zero:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            heads = head_heatmap(scores["heads"], self.output_dir / f"importance_heads_{tag}.png")
            neurons = neuron_histogram(scores["neurons"], self.output_dir / f"importance_neurons_{tag}.png")
            self.written += [heads, neurons]
            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger):
                    logger.log_image("importance/heads", [str(heads)], step=trainer.global_step)
                    logger.log_image("importance/neurons", [str(neurons)], step=trainer.global_step)
        return scores
