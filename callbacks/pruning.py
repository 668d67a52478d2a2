"""Scheduled sparsification during training: thin Lightning glue over `sparsecse.pruning`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn

from sparsecse.importance import ScoreMode
from sparsecse.pruning import (
    Granularity,
    PruningEvent,
    ScheduleEvent,
    Sparsifier,
    build_schedule,
    check_schedule_fits,
    pruned_any,
    remove_pruned_units,
    sparsity_summary,
)
from sparsecse.validation import Fraction, PositiveInt, checked

BEFORE_FINAL_PRUNING = "before-final-pruning"  # suffix of the best checkpoints an event made obsolete


def scoring_batches(trainer: L.Trainer, seed: int):
    """Positive pairs for scoring: this rank's shard of a fresh, seeded pass over the corpus."""
    return iter(trainer.datamodule.scoring_dataloader(seed, trainer.global_rank, trainer.world_size))


def log_metrics(trainer: L.Trainer, metrics: Mapping[str, float]) -> None:
    """Straight to the loggers: `self.log` is not allowed in every hook these run from."""
    for logger in trainer.loggers:
        logger.log_metrics(dict(metrics), step=trainer.global_step)
    trainer.callback_metrics.update({k: torch.tensor(v) for k, v in metrics.items()})


def forget_best_checkpoints(trainer: L.Trainer) -> list[str]:
    """After the last event, only checkpoints at the final sparsity may be "best": a denser one
    scores higher on STS-B dev and would otherwise undo the pruning when it is reloaded. The earlier
    best files are renamed `<name>-before-final-pruning.ckpt`, so that the final best takes the name
    users reach for (`best.ckpt`); returns their new paths."""
    renamed = []
    for callback in trainer.checkpoint_callbacks:
        for path in map(Path, callback.best_k_models):
            earlier = path.with_name(f"{path.stem}-{BEFORE_FINAL_PRUNING}{path.suffix}")
            if trainer.is_global_zero and path.is_file():
                path.replace(earlier)
            renamed.append(str(earlier))
        callback.best_k_models = {}
        callback.best_model_path = callback.kth_best_model_path = ""
        callback.best_model_score = None
        callback.kth_value = torch.tensor(float("inf") if callback.mode == "min" else float("-inf"))
    trainer.strategy.barrier("forget_best_checkpoints")  # no rank saves before the renames are done
    return renamed


class ScheduledPruning(L.Callback):
    """Sparsify the encoder at scheduled epochs or steps (METHOD.md section 5): heads and FFN neurons
    (`granularity: structured`) or single weights (`unstructured`).

    `schedule` holds cumulative events, `{epoch: E}` or `{step: S}`, each optionally with its own
    targets; without them, event k of K reaches k/K of `head_sparsity`/`ffn_sparsity` (or
    `weight_sparsity` for `granularity: unstructured`). Scores are computed on the current model
    just before each event; between events the gates stay fixed. An event at the last epoch (or
    step) runs when training ends.
    """

    @checked
    def __init__(
        self,
        schedule: Sequence[ScheduleEvent],
        head_sparsity: Fraction = 0.0,
        ffn_sparsity: Fraction = 0.0,
        weight_sparsity: Fraction = 0.0,
        granularity: Granularity = "structured",
        score: ScoreMode = "magnitude",
        uniformity_weight: float = 1.0,
        num_batches: PositiveInt = 8,
        min_heads_per_layer: PositiveInt = 1,
        normalize_head_scores: bool = False,
        seed: int = 0,
    ):
        self.sparsifier = Sparsifier(granularity, score, uniformity_weight, num_batches,
                                     min_heads_per_layer, normalize_head_scores, seed)  # fmt: skip
        targets = {
            "head_sparsity": head_sparsity,
            "ffn_sparsity": ffn_sparsity,
            "weight_sparsity": weight_sparsity,
        }
        self.events = build_schedule(schedule, granularity, **targets)
        self.seed = seed
        self.done = 0  # events carried out; saved in checkpoints
        self.earlier_best: list[str] = []  # best checkpoints from before the last event, renamed
        self.last_importance: dict[str, list[torch.Tensor]] = {}

    def check(self, model_config, max_epochs: int | None, max_steps: int | None) -> None:
        """Before any compute: settings against the model's config and the training length."""
        self.sparsifier.check_model(model_config)
        check_schedule_fits(self.events, max_epochs, max_steps)
        self.sparsifier.check_reachable(model_config, self.events[-1])

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Before a checkpoint is restored, so that its gate and mask buffers have somewhere to go.
        self.sparsifier.attach(pl_module.encoder)

    def attach(self, encoder) -> None:
        """Gates or masks on the encoder before training starts: DDP spawn returns rank 0's model,
        and the dense parameter count is taken through them."""
        self.sparsifier.attach(encoder)

    def finalize(self, encoder) -> dict[str, float] | None:
        """After training, once the best checkpoint is reloaded: the sparsity reached (None if nothing
        was removed), then the gated-off units sliced out of the encoder (METHOD.md section 5), so that
        it is evaluated and exported smaller and faster."""
        summary = sparsity_summary(encoder) if pruned_any(encoder) else None
        remove_pruned_units(encoder)
        return summary

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._run_due(trainer, pl_module, "epoch", trainer.current_epoch)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self._run_due(trainer, pl_module, "step", trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if pl_module.encoder.masks is not None:
            pl_module.encoder.masks.apply_masks()  # undo what the optimizer step put back

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        now = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        self._run_due(trainer, pl_module, self.events[0].unit, now[self.events[0].unit])
        if self.done < len(self.events):
            rank_zero_warn(f"training ended before pruning event {self.events[self.done]} could run")

    def _run_due(self, trainer, pl_module, unit: str, now: int) -> None:
        while self.done < len(self.events) and self.events[self.done].unit == unit:
            if self.events[self.done].at > now:
                return
            self._run(trainer, pl_module, self.events[self.done])

    def _run(self, trainer: L.Trainer, pl_module: L.LightningModule, event: PruningEvent) -> None:
        encoder, index = pl_module.encoder, self.done
        self.done += 1
        if not any(self.sparsifier.removals(encoder, event).values()):
            return  # a no-op: nothing scored, and the best checkpoint stands (a sparsity-0 baseline)
        batches = scoring_batches(trainer, self.seed + index)
        importance = self.sparsifier.importance(encoder, batches, index, trainer.global_rank)
        self.last_importance = importance  # for inspection and tests
        log_metrics(trainer, self.sparsifier.apply(encoder, event, importance))
        if event.targets == self.events[-1].targets:  # the final sparsity is reached
            self.earlier_best = forget_best_checkpoints(trainer)

    def state_dict(self) -> dict:
        return {"done": self.done, "earlier_best": self.earlier_best}

    def load_state_dict(self, state_dict: dict) -> None:
        self.done = state_dict["done"]
        self.earlier_best = list(state_dict.get("earlier_best", []))
