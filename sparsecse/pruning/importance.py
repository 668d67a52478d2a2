"""Importance of heads, neurons and weights from alignment and uniformity gradients (METHOD.md 4).

For positive pairs, one forward pass gives l_align and l_uniform; their gradients with respect to
each unit (a gate, or a weight times its gradient) come from the same graph. Removing a unit moves
its gate from 1 to 0, so to first order the loss changes by -g. Every score here is an
*importance*: the units with the lowest importance are removed first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn

from sparsecse.architecture.layout import (
    encoder_layers,
    head_size,
    linear_at,
    unit_layout,
)
from sparsecse.core.errors import ConfigError
from sparsecse.core.validation import check_value
from sparsecse.model.loss import alignment, uniformity

SCORE_MODES = ("magnitude", "signed", "alignment", "uniformity", "random", "weight_magnitude")
ScoreMode = Literal[SCORE_MODES]


def check_score_mode(mode: str) -> str:
    check_value("score", mode, ScoreMode)
    return mode


def pair_losses(encoder: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """(V, B, T) tokens -> (l_align, l_uniform) on the first two views, in one forward pass.

    Views 0 and 1 are the two dropout views (unsupervised) or premise and entailment
    (supervised); uniformity is averaged over both views, as in Wang & Isola's loss. The embedding
    scored is the one evaluated and exported: without SimCSE's training-only MLP (`mlp_only_train`).
    """
    pairs = {k: v[:2].flatten(0, 1) for k, v in batch.items()}  # (2 B, T)
    emb = encoder(**pairs, test_time=True).unflatten(0, (2, -1))  # (2, B, H)
    return alignment(emb[0], emb[1]), (uniformity(emb[0]) + uniformity(emb[1])) / 2


@dataclass
class GradientStats:
    """Running sums over batches, per unit, of |gA|, |gU|, gA and gU (one tensor per unit group)."""

    abs_align: list[Tensor]
    abs_uniform: list[Tensor]
    align: list[Tensor]
    uniform: list[Tensor]
    batches: int = 0

    @classmethod
    def zeros_like(cls, tensors: Sequence[Tensor]) -> GradientStats:
        fresh = lambda: [torch.zeros_like(t, dtype=torch.float32) for t in tensors]  # noqa: E731
        return cls(fresh(), fresh(), fresh(), fresh())

    def add(self, grad_align: Sequence[Tensor], grad_uniform: Sequence[Tensor]) -> None:
        for i, (g_a, g_u) in enumerate(zip(grad_align, grad_uniform)):
            self.abs_align[i] += g_a.abs().float()
            self.abs_uniform[i] += g_u.abs().float()
            self.align[i] += g_a.float()
            self.uniform[i] += g_u.float()
        self.batches += 1

    def joined(self, other: GradientStats) -> GradientStats:
        """These unit groups followed by `other`'s, summed over the same batches."""
        if other.batches != self.batches:
            raise ValueError(f"statistics over {self.batches} and {other.batches} batches do not join")
        return GradientStats(
            self.abs_align + other.abs_align,
            self.abs_uniform + other.abs_uniform,
            self.align + other.align,
            self.uniform + other.uniform,
            self.batches,
        )

    def subset(self, part: slice) -> GradientStats:
        """The statistics of some of the unit groups (e.g. the head gates only)."""
        return GradientStats(self.abs_align[part], self.abs_uniform[part], self.align[part],
                             self.uniform[part], self.batches)  # fmt: skip

    def summed(self) -> GradientStats:
        """These sums over every rank's batches (`all_reduce`); no batch at all is a config error."""
        if self.batches == 0:
            raise ConfigError("num_batches", "no batches to score on: the corpus gave none")
        self.all_reduce()
        return self

    def all_reduce(self) -> None:
        """Sum over ranks, so that every rank ranks the same scores and prunes the same units."""
        if not (dist.is_available() and dist.is_initialized()):
            return
        for group in (self.abs_align, self.abs_uniform, self.align, self.uniform):
            for t in group:
                dist.all_reduce(t)
        count = torch.tensor([self.batches], device=self.align[0].device)
        dist.all_reduce(count)
        self.batches = int(count.item())


def accumulate_gradients(
    encoder: nn.Module,
    batches: Iterable[dict[str, Tensor]],
    units: Sequence[Tensor],
    taylor: bool = False,
) -> GradientStats:
    """Per-batch gradients of l_align and l_uniform w.r.t. `units`, summed on their device.

    `units` are gate tensors (structured) or weights (unstructured, `taylor=True`: the per-weight
    term is w * dl/dw). The encoder runs in training mode: the unsupervised positives are dropout
    views.
    """
    was_training, flags = encoder.training, [u.requires_grad for u in units]
    encoder.train()
    for u in units:
        u.requires_grad_(True)
    stats = GradientStats.zeros_like(units)
    device = units[0].device
    try:
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            l_align, l_uniform = pair_losses(encoder, batch)
            g_align = torch.autograd.grad(l_align, units, retain_graph=True)
            g_uniform = torch.autograd.grad(l_uniform, units)
            if taylor:
                g_align = [g * u.detach() for g, u in zip(g_align, units)]
                g_uniform = [g * u.detach() for g, u in zip(g_uniform, units)]
            stats.add(g_align, g_uniform)
    finally:
        encoder.train(was_training)
        for u, flag in zip(units, flags):
            u.requires_grad_(flag)
    return stats.summed()


@dataclass
class Scorer:
    """Turns gradient statistics into importances for one score mode (METHOD.md section 4)."""

    mode: ScoreMode = "magnitude"
    uniformity_weight: float = 1.0  # lambda

    def __post_init__(self):
        check_score_mode(self.mode)

    def needs_gradients(self) -> bool:
        return self.mode not in ("random", "weight_magnitude")

    def scores(
        self,
        groups: Mapping[str, Sequence[Tensor]],
        gradients: Callable[[], GradientStats],
        generator: torch.Generator | None = None,
        magnitudes: Callable[[], Mapping[str, list[Tensor]]] | None = None,
    ) -> dict[str, list[Tensor]]:
        """Importance per unit of each group of units (`{"heads": gates, "neurons": gates}`, or one
        group), whatever the mode: gradient modes read `gradients()` (statistics over every group's
        tensors, in order) and score each group on its own; `weight_magnitude` reads `magnitudes()`
        (the same groups' weight norms), `random` draws from `generator`. Only what the mode needs is
        computed."""
        if self.mode == "weight_magnitude":
            if magnitudes is None:
                why = "has no score for a whole layer; use a gradient score or random"
                raise ConfigError("score", f"weight_magnitude {why}")
            return dict(magnitudes())
        stats = gradients() if self.needs_gradients() else None
        scores, start = {}, 0
        for name, like in groups.items():
            part = None if stats is None else stats.subset(slice(start, start + len(like)))
            scores[name] = self(part, like, generator)
            start += len(like)
        return scores

    def __call__(
        self, stats: GradientStats | None, like: Sequence[Tensor], generator: torch.Generator | None = None
    ) -> list[Tensor]:
        """Importance per unit, for one kind of unit (all heads, all neurons, or all weights):
        `magnitude` normalises each criterion by its mean over this kind, so that lambda weighs
        comparable quantities. `random` draws from `generator`."""
        if self.mode == "random":
            if generator is None:
                raise ValueError("random scores need a generator")
            return [torch.rand(t.shape, generator=generator).to(t.device) for t in like]
        if self.mode == "weight_magnitude":
            raise ValueError("weight_magnitude scores weights, not gradients: call scores()")
        n, lam = stats.batches, self.uniformity_weight
        if self.mode == "signed":
            # d = mean_b (gA + lambda gU): the predicted drop of l_align + lambda l_uniform when the
            # unit is removed; the largest drop goes first, so importance is -d.
            return [-(a + lam * u) / n for a, u in zip(stats.align, stats.uniform)]
        mean_a = [a / n for a in stats.abs_align]
        mean_u = [u / n for u in stats.abs_uniform]
        if self.mode == "alignment":
            return mean_a
        if self.mode == "uniformity":
            return mean_u
        norm_a = torch.cat([a.flatten() for a in mean_a]).mean().clamp_min(1e-30)
        norm_u = torch.cat([u.flatten() for u in mean_u]).mean().clamp_min(1e-30)
        return [a / norm_a + lam * u / norm_u for a, u in zip(mean_a, mean_u)]


def weight_magnitude_scores(backbone: nn.Module) -> dict[str, list[Tensor]]:
    """Baseline importances from the weights alone: a head's or neuron's L2 norm over every
    weight it owns (its q/k/v rows and output-projection columns; its FFN rows and column)."""
    heads, neurons = [], []
    for layer in encoder_layers(backbone):
        size, layout = head_size(layer), unit_layout(layer)
        squares = {
            path: linear_at(layer, path).weight.detach().float().pow(2)
            for path in (*layout.head_rows, layout.head_columns, layout.neuron_rows, layout.neuron_columns)
        }
        blocks = (layout.head_blocks, -1, size)
        rows = sum(squares[path].unflatten(0, blocks).sum((0, 2, 3)) for path in layout.head_rows)  # (H,)
        columns = squares[layout.head_columns].unflatten(1, (-1, size)).sum((0, 2))  # (H,)
        heads.append((rows + columns).sqrt())
        ffn_rows = squares[layout.neuron_rows].unflatten(0, (layout.neuron_blocks, -1)).sum((0, 2))  # (F,)
        neurons.append((ffn_rows + squares[layout.neuron_columns].sum(0)).sqrt())
    return {"heads": heads, "neurons": neurons}


def normalize_per_layer(scores: Sequence[Tensor]) -> list[Tensor]:
    """Divide each layer's head scores by their L2 norm (Michel et al., NeurIPS 2019)."""
    return [s / s.norm().clamp_min(1e-30) for s in scores]
