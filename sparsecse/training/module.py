"""The LightningModule: SimCSE training with STS-B dev validation (Spearman, alignment, uniformity)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import lightning as L
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor
from torch.optim import Optimizer
from torchmetrics import SpearmanCorrCoef

from sparsecse.core.errors import TrainingDiverged
from sparsecse.core.seeding import step_seed
from sparsecse.model.encoder import CHECKPOINT_KEY, SentenceEncoder
from sparsecse.model.loss import TEMPERATURE, simcse_loss
from sparsecse.model.metrics import Alignment, Uniformity

ALIGN_GOLD_THRESHOLD = 4.0  # SimCSE, Sec. 5 / Fig. 2: STS-B pairs scored above 4 are positives
HISTORY_KEY = "sparsecse_val_history"  # validation metrics so far, so a resumed run keeps its path


class SimCSEModule(L.LightningModule):
    def __init__(
        self,
        encoder: SentenceEncoder,
        optimizer: Callable[..., Optimizer],
        scheduler: Callable | None = None,
        temperature: Annotated[float, Field(gt=0.0)] = TEMPERATURE,
        hard_negative_weight: float = 0.0,
        gather_negatives: bool = True,
        seed: int = 0,
        compile: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["encoder", "optimizer", "scheduler"])
        # from_pretrained returns the backbone in eval mode, and Lightning keeps modules in the mode
        # it finds them: without this, dropout is off and the two SimCSE views are identical.
        self.encoder = encoder.train()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.val_spearman = SpearmanCorrCoef()
        self.val_align = Alignment()
        self.val_uniform = Uniformity()
        # one entry per validation: the path through the alignment-uniformity plane (SimCSE Fig. 2)
        self.val_history: list[dict[str, float]] = []
        self.compiled_loss: Callable[[dict[str, Tensor]], Tensor] | None = None  # made at the first step

    def embed_views(self, batch: dict[str, Tensor]) -> Tensor:
        """(V, B, T) tokens -> (V, B, H): all views in one forward pass, each with its own dropout."""
        views, size = batch["input_ids"].shape[:2]
        flat = {k: v.flatten(0, 1) for k, v in batch.items()}  # (V * B, T)
        return self.encoder(**flat).view(views, size, -1)

    def on_train_batch_start(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        # Dropout (SimCSE's only augmentation) is the one random draw of a step. Seeding it from
        # (seed, step, rank) makes a resumed run draw what the uninterrupted run drew, whatever else
        # consumed random numbers in between (validation, data-loader iterators, scoring).
        hp, trainer = self.hparams, self.trainer
        torch.manual_seed(step_seed(hp.seed, self.global_step, trainer.world_size, self.global_rank))

    def views_loss(self, batch: dict[str, Tensor]) -> Tensor:
        """(V, B, T) tokens -> the SimCSE loss of their views."""
        emb, hp = self.embed_views(batch), self.hparams  # (V, B, H)
        return simcse_loss(emb, hp.temperature, hp.hard_negative_weight, hp.gather_negatives)

    def compile_loss(self) -> Callable[[dict[str, Tensor]], Tensor]:
        """`views_loss` compiled for fixed shapes (the DataModule's `static_shapes`). On a GPU its
        mode is reduce-overhead: the step is captured as a CUDA graph, since a small or pruned encoder's
        step is bound by kernel launches, not arithmetic. A pruning event that removes units changes
        the shapes, and the step compiles once more."""
        mode = "reduce-overhead" if self.device.type == "cuda" else None
        return torch.compile(self.views_loss, dynamic=False, mode=mode)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        if self.hparams.compile:
            self.compiled_loss = self.compiled_loss or self.compile_loss()
            torch.compiler.cudagraph_mark_step_begin()  # a new step: the last graph's outputs are consumed
            loss = self.compiled_loss(batch)
        else:
            loss = self.views_loss(batch)
        # Stop before backward and the optimizer step: the weights and every checkpoint stay finite.
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"train/loss is {loss.item()} at step {self.global_step}; training stopped"
            )
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        # float32 whatever the training precision, as SimCSE's in-training STS-B evaluation: the best
        # checkpoint is chosen on the same numbers under fp16, bf16 and fp32 training
        with torch.autocast(self.device.type, enabled=False):
            emb1, emb2 = self.encoder(**batch["sent1"]), self.encoder(**batch["sent2"])
        gold = batch["gold"].float()
        self.val_spearman.update(F.cosine_similarity(emb1.float(), emb2.float()), gold)
        positive = gold > ALIGN_GOLD_THRESHOLD
        self.val_align.update(emb1[positive], emb2[positive])
        self.val_uniform.update(torch.cat([emb1, emb2]))

    def on_validation_epoch_end(self) -> None:
        values = {
            "val/stsb_spearman": self.val_spearman.compute() * 100,
            "val/align": self.val_align.compute(),
            "val/uniform": self.val_uniform.compute(),
        }
        for name, value in values.items():
            self.log(name, value, prog_bar=name == "val/stsb_spearman")
        if not self.trainer.sanity_checking:
            self.val_history.append({"step": self.global_step, **{k: float(v) for k, v in values.items()}})
        for metric in (self.val_spearman, self.val_align, self.val_uniform):
            metric.reset()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = self.encoder.describe()
        checkpoint[HISTORY_KEY] = list(self.val_history)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.val_history = list(checkpoint.get(HISTORY_KEY, []))

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        steps = int(self.trainer.estimated_stepping_batches)
        scheduler = self.scheduler_factory(optimizer, num_training_steps=steps)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
