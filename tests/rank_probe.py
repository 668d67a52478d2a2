"""A callback for multi-process tests (importable by spawned workers): each rank saves its gates
and the importances of the last pruning event."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch


class SaveGatesPerRank(L.Callback):
    def __init__(self, dirpath: str):
        self.dirpath = Path(dirpath)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from callbacks import ScheduledPruning

        pruning = next(c for c in trainer.callbacks if isinstance(c, ScheduledPruning))
        saved = {
            "gates": [g.cpu() for g in pl_module.encoder.gates.tensors()],
            "importance": [
                s.cpu() for s in pruning.last_importance["heads"] + pruning.last_importance["neurons"]
            ],
        }
        torch.save(saved, self.dirpath / f"rank{trainer.global_rank}.pt")
