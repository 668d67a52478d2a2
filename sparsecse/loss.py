"""InfoNCE (SimCSE) and the alignment/uniformity criteria (Wang & Isola 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

TEMPERATURE = 0.05  # SimCSE, Sec. 3 and Table D.1


def info_nce(
    anchors: Tensor,
    positives: Tensor,
    hard_negatives: Tensor | None = None,
    temperature: float = TEMPERATURE,
    hard_negative_weight: float = 0.0,
) -> Tensor:
    """SimCSE's contrastive loss with in-batch negatives.

    anchors, positives: (B, H); positives may be longer, (B', H) with B' >= B, when they hold
    the negatives of other devices. hard_negatives: (B', H). Row i's positive is column i.
    `hard_negative_weight` is added to the logit of each anchor's own hard negative
    (SimCSE's `hard_negative_weight`, applied to the log-space logit).
    """
    candidates = positives if hard_negatives is None else torch.cat([positives, hard_negatives])
    # Logits in float32 even under bf16 autocast: a 0.05 temperature amplifies rounding 20x.
    sim = F.cosine_similarity(anchors.float().unsqueeze(1), candidates.float().unsqueeze(0), dim=-1)
    logits = sim / temperature  # (B, B') or (B, 2B')
    if hard_negatives is not None and hard_negative_weight != 0.0:
        batch, width = anchors.shape[0], positives.shape[0]
        own_hard_negative = torch.arange(batch, device=logits.device) + width
        bonus = torch.zeros_like(logits)
        bonus[torch.arange(batch, device=logits.device), own_hard_negative] = hard_negative_weight
        logits = logits + bonus
    labels = torch.arange(anchors.shape[0], device=anchors.device)
    return F.cross_entropy(logits, labels)


def alignment(x: Tensor, y: Tensor, alpha: float = 2.0) -> Tensor:
    """E ||f(x) - f(y)||^alpha over positive pairs; x, y: (N, H), normalised here."""
    x, y = F.normalize(x.float(), dim=-1), F.normalize(y.float(), dim=-1)
    return (x - y).norm(dim=-1).pow(alpha).mean()


def uniformity(x: Tensor, t: float = 2.0) -> Tensor:
    """log E exp(-t ||f(x) - f(y)||^2) over pairs of distinct rows; x: (N, H), normalised here."""
    x = F.normalize(x.float(), dim=-1)
    sq_dists = torch.pdist(x).pow(2)  # (N (N - 1) / 2,)
    return torch.logsumexp(-t * sq_dists, dim=0) - torch.log(torch.tensor(float(sq_dists.numel())))
