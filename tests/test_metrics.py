from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
from helpers import TEXTS

from sparsecse.evaluation.sts import cosine_scores, spearman_x100
from sparsecse.model.loss import alignment, uniformity
from sparsecse.model.metrics import Alignment, Uniformity
from sparsecse.training.data import PairCollator
from sparsecse.training.module import SimCSEModule


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


def test_validation_spearman_is_the_sts_evaluators_on_the_same_pairs(make_encoder):
    """The best checkpoint is chosen on `val/stsb_spearman`: batch by batch through the data module's
    collator, it must be what `evaluate_sts` gives for the same pairs (tied gold scores included)."""
    encoder = make_encoder("avg")
    module = SimCSEModule(encoder, optimizer=partial(torch.optim.AdamW, lr=1e-3)).eval()
    sent1 = [*TEXTS, "a girl reads a book", "it rains", "the market is closed on sundays"]
    sent2 = ["a man is playing music .", "a cat is asleep", "dogs in a park", "a child reads", "sunny day",
             "shops open every day"]  # fmt: skip
    gold = [4.0, 3.0, 3.0, 4.5, 0.5, 1.0]
    collate = PairCollator(encoder.tokenizer)
    for rows in (slice(0, 4), slice(4, 6)):
        module.validation_step(collate(list(zip(sent1, sent2, gold))[rows]), 0)
    expected = spearman_x100(cosine_scores(encoder.encode(sent1), encoder.encode(sent2)), np.array(gold))
    assert module.val_spearman.compute().item() * 100 == pytest.approx(expected, abs=1e-4)
