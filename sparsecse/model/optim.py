"""Learning-rate schedules, built as `_partial_` targets and finished by the LightningModule."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def linear_warmup_decay(
    optimizer: Optimizer, num_training_steps: int, warmup_ratio: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
) -> LambdaLR:
    """Linear warm-up over `warmup_ratio` of the steps, then linear decay to 0 (the HF Trainer
    default that SimCSE trains with, there with no warm-up)."""
    warmup = int(round(warmup_ratio * num_training_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return step / warmup
        return max(0.0, (num_training_steps - step) / max(1, num_training_steps - warmup))

    return LambdaLR(optimizer, factor)
