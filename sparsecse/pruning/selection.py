"""Which units an event removes, from their importances (METHOD.md section 5): a global ranking with a
per-layer floor, FFN widths rounded to a multiple, and how many units a cumulative target still needs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from sparsecse.core.errors import ConfigError


def select_kept(
    importance: Sequence[Tensor], alive: Sequence[Tensor], n_remove: int, min_per_layer: int = 0
) -> list[Tensor]:
    """Global ranking across layers: remove the `n_remove` alive units of lowest importance while
    at least `min_per_layer` stay alive in every layer. Returns the new 0/1 keep masks."""
    flat_scores = []
    for scores, keep in zip(importance, alive):
        keep = keep.bool()
        protect = min(min_per_layer, int(keep.count_nonzero()))
        best = scores.float().masked_fill(~keep, float("-inf")).topk(protect).indices
        scores = scores.float().masked_fill(~keep, float("inf"))  # the dead stay dead
        scores[best] = float("inf")  # each layer keeps its best `protect` alive units
        flat_scores.append(scores)
    flat = torch.cat(flat_scores)
    removable = int(torch.isfinite(flat).sum())
    if n_remove > removable:
        raise ConfigError(
            "sparsity", f"cannot remove {n_remove} more units: only {removable} are removable "
            f"with at least {min_per_layer} kept per layer")  # fmt: skip
    order = torch.sort(flat, stable=True).indices[:n_remove]
    new_keep = torch.cat([k.bool() for k in alive]).clone()
    new_keep[order] = False
    return list(new_keep.split([len(k) for k in alive]))


def aligned_counts(kept: Sequence[int], alive: Sequence[int], multiple_of: int) -> list[int]:
    """Per-layer kept counts rounded to multiples of `multiple_of`, their total as near as can be to
    the unrounded total: each layer keeps its whole multiples, and the layers with the largest
    remainders keep one more multiple each (Hamilton's largest-remainder rounding). A layer never
    keeps more than it has alive."""
    floors = [count // multiple_of * multiple_of for count in kept]
    extra = round(sum(kept) / multiple_of) - sum(floors) // multiple_of
    eligible = [i for i in range(len(kept)) if floors[i] + multiple_of <= alive[i]]
    for i in sorted(eligible, key=lambda i: -(kept[i] - floors[i]))[: max(extra, 0)]:
        floors[i] += multiple_of
    return floors


def keep_top(importance: Sequence[Tensor], alive: Sequence[Tensor], counts: Sequence[int]) -> list[Tensor]:
    """In each layer, keep its `counts[l]` alive units of highest importance."""
    kept = []
    for scores, keep, count in zip(importance, alive, counts):
        ranked = scores.float().masked_fill(~keep.bool(), float("-inf"))
        new_keep = torch.zeros_like(keep, dtype=torch.bool)
        new_keep[torch.sort(ranked, descending=True, stable=True).indices[:count]] = True
        kept.append(new_keep)
    return kept


def units_to_remove(target: float, alive: Sequence[Tensor]) -> int:
    """Units to remove from `alive` (keep masks) so that `target` of all of them are gone."""
    total = sum(a.numel() for a in alive)
    return max(round(target * total) - sum(int((~a.bool()).sum()) for a in alive), 0)
