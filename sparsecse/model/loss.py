"""InfoNCE (SimCSE) and the alignment/uniformity criteria (Wang & Isola 2020)."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

TEMPERATURE = 0.05  # SimCSE, Sec. 3 and Table D.1


def info_nce(
    anchors: Tensor,
    positives: Tensor,
    hard_negatives: Tensor | None = None,
    temperature: float = TEMPERATURE,
    hard_negative_weight: float = 0.0,
    offset: int = 0,
) -> Tensor:
    """SimCSE's contrastive loss with in-batch negatives.

    anchors: (B, H). positives: (B', H), B' >= B, anchor i's positive at row `offset + i` (the
    rows of other ranks are extra negatives); hard_negatives: (B', H), laid out the same way.
    `hard_negative_weight` is added to the logit of each anchor's own hard negative (SimCSE's
    `hard_negative_weight`, applied to the log-space logit).
    """
    candidates = positives if hard_negatives is None else torch.cat([positives, hard_negatives])
    # Logits in float32 even under bf16 autocast: a 0.05 temperature amplifies rounding 20x.
    with torch.autocast(anchors.device.type, enabled=False):
        sim = F.cosine_similarity(anchors.float().unsqueeze(1), candidates.float().unsqueeze(0), dim=-1)
    logits = sim / temperature  # (B, B') or (B, 2B')
    rows = torch.arange(anchors.shape[0], device=anchors.device)
    labels = rows + offset
    if hard_negatives is not None and hard_negative_weight != 0.0:
        own_hard_negative = labels + positives.shape[0]
        bonus = torch.full(rows.shape, hard_negative_weight, dtype=logits.dtype, device=logits.device)
        logits = logits.index_put((rows, own_hard_negative), bonus, accumulate=True)
    return F.cross_entropy(logits, labels)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class GatherWithGrad(torch.autograd.Function):
    """All ranks' tensors concatenated along dim 1, this rank's own slice carrying its gradient.

    SimCSE puts the local slice back into a gradient-free all_gather; the gradients other ranks'
    losses send to this rank's rows are then lost. Here the backward sums each slice's gradient
    over ranks, so with DDP's gradient averaging, W ranks at batch B get exactly the gradient of
    one process at batch W * B. Assumes the same B on every rank (Lightning's DistributedSampler
    gives every rank the same number of examples).
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # (V, B, H) -> (V, W * B, H)
        ctx.rank, ctx.size = dist.get_rank(), x.shape[1]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=1)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # (V, W * B, H) -> (V, B, H)
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[:, ctx.rank * ctx.size : (ctx.rank + 1) * ctx.size]


def gather_with_grad(x: Tensor) -> tuple[Tensor, int]:
    """(V, B, H) -> (V, W * B, H) over all ranks, and the offset of this rank's rows."""
    if not is_distributed():
        return x, 0
    return GatherWithGrad.apply(x), dist.get_rank() * x.shape[1]


def simcse_loss(
    views: Tensor,
    temperature: float = TEMPERATURE,
    hard_negative_weight: float = 0.0,
    gather_negatives: bool = True,
) -> Tensor:
    """(V, B, H) embeddings -> InfoNCE of this rank's anchors (view 0) against the positives
    (view 1) and hard negatives (view 2, supervised) of every rank, or of this rank only when
    `gather_negatives` is off. The mean over ranks is the loss of the whole global batch."""
    anchors, others, offset = views[0], views[1:], 0
    if gather_negatives:
        others, offset = gather_with_grad(others)
    hard_negatives = others[1] if others.shape[0] == 2 else None
    return info_nce(anchors, others[0], hard_negatives, temperature, hard_negative_weight, offset)


def alignment(x: Tensor, y: Tensor, alpha: float = 2.0) -> Tensor:
    """E ||f(x) - f(y)||^alpha over positive pairs; x, y: (N, H), normalised here."""
    x, y = F.normalize(x.float(), dim=-1), F.normalize(y.float(), dim=-1)
    return (x - y).norm(dim=-1).pow(alpha).mean()


def uniformity(x: Tensor, t: float = 2.0) -> Tensor:
    """log E exp(-t ||f(x) - f(y)||^2) over pairs of distinct rows; x: (N, H), normalised here."""
    x = F.normalize(x.float(), dim=-1)
    sq_dists = torch.pdist(x).pow(2)  # (N (N - 1) / 2,)
    return torch.logsumexp(-t * sq_dists, dim=0) - torch.log(torch.tensor(float(sq_dists.numel())))
