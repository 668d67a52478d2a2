from __future__ import annotations

import pytest
import torch
from scipy.stats import spearmanr
from torchmetrics import SpearmanCorrCoef

from sparsecse.loss import alignment, uniformity
from sparsecse.metrics import Alignment, Uniformity


def test_metrics_accumulate_like_one_shot():
    torch.manual_seed(0)
    x, y = torch.randn(20, 8), torch.randn(20, 8)
    align, unif = Alignment(), Uniformity()
    for chunk in range(0, 20, 7):
        align.update(x[chunk : chunk + 7], y[chunk : chunk + 7])
        unif.update(x[chunk : chunk + 7])
    assert align.compute().item() == pytest.approx(alignment(x, y).item(), rel=1e-5)
    assert unif.compute().item() == pytest.approx(uniformity(x).item(), rel=1e-5)


def test_metric_states_merge_like_distributed_reduction():
    """Two 'ranks' holding halves reduce to the metric over the whole (sum / cat states)."""
    torch.manual_seed(1)
    x, y = torch.randn(10, 4), torch.randn(10, 4)
    for metric_cls, args in ((Alignment, (x, y)), (Uniformity, (x,))):
        rank0, rank1, whole = metric_cls(), metric_cls(), metric_cls()
        rank0.update(*(a[:4] for a in args))
        rank1.update(*(a[4:] for a in args))
        whole.update(*args)
        rank0.merge_state(rank1)
        assert rank0.compute().item() == pytest.approx(whole.compute().item(), rel=1e-5)


def test_torchmetrics_spearman_agrees_with_scipy_on_ties():
    preds = torch.tensor([0.1, 0.4, 0.4, 0.9, 0.2, 0.7])
    gold = torch.tensor([1.0, 3.0, 2.0, 5.0, 1.0, 4.0])
    metric = SpearmanCorrCoef()
    metric.update(preds, gold)
    assert metric.compute().item() == pytest.approx(spearmanr(preds, gold)[0], rel=1e-5)
