"""Figures of importance scores, written as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402


def head_heatmap(head_scores: Sequence[Tensor], path: str | Path) -> Path:
    """Layers x heads image of head importance; layers with fewer heads are padded with blanks."""
    width = max(len(s) for s in head_scores)
    grid = torch.full((len(head_scores), width), float("nan"))
    for layer, scores in enumerate(head_scores):
        grid[layer, : len(scores)] = scores.detach().float().cpu()
    fig, ax = plt.subplots(figsize=(1 + 0.5 * width, 1 + 0.4 * len(head_scores)))
    image = ax.imshow(grid.numpy(), aspect="auto", cmap="viridis")
    ax.set(xlabel="head", ylabel="layer", title="head importance")
    fig.colorbar(image, ax=ax)
    return _save(fig, path)


def neuron_histogram(neuron_scores: Sequence[Tensor], path: str | Path, bins: int = 50) -> Path:
    values = torch.cat([s.detach().float().flatten().cpu() for s in neuron_scores])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(values.numpy(), bins=bins)
    ax.set(xlabel="importance", ylabel="FFN neurons", title="neuron importance")
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
