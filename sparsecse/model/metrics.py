"""Alignment and uniformity as torchmetrics, so they reduce correctly across processes."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from sparsecse.model.loss import uniformity


class Alignment(Metric):
    """Mean squared distance of L2-normalised positive pairs (Wang & Isola 2020, alpha = 2).

    >>> metric = Alignment()
    >>> metric.update(torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 2.0]]))  # orthogonal: 2
    >>> metric.update(torch.tensor([[1.0, 1.0]]), torch.tensor([[2.0, 2.0]]))  # one direction: 0
    >>> round(metric.compute().item(), 4)
    1.0
    """

    full_state_update = False
    higher_is_better = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("sum_sq_dist", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, x: Tensor, y: Tensor) -> None:
        x = torch.nn.functional.normalize(x.double(), dim=-1)
        y = torch.nn.functional.normalize(y.double(), dim=-1)
        self.sum_sq_dist += (x - y).pow(2).sum()
        self.count += x.shape[0]

    def compute(self) -> Tensor:
        return (self.sum_sq_dist / self.count).float()


class Uniformity(Metric):
    """log E exp(-2 ||f(x) - f(y)||^2) over all pairs of distinct embeddings seen (t = 2).

    Needs every embedding, so it gathers them (`cat`) across processes before computing.

    >>> metric = Uniformity()
    >>> metric.update(torch.tensor([[2.0, 0.0], [-1.0, 0.0]]))  # opposite: ||f(x) - f(y)||^2 = 4
    >>> round(metric.compute().item(), 4)
    -8.0
    """

    full_state_update = False
    higher_is_better = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("embeddings", default=[], dist_reduce_fx="cat")

    def update(self, x: Tensor) -> None:
        self.embeddings.append(x.detach().float())

    def compute(self) -> Tensor:
        return uniformity(dim_zero_cat(self.embeddings))
