from __future__ import annotations

import pytest
import torch
from helpers import TEXTS, views

from sparsecse.errors import ConfigError
from sparsecse.gates import UnitGates
from sparsecse.importance import (
    GradientStats,
    Scorer,
    accumulate_gradients,
    normalize_per_layer,
    pair_losses,
    select_kept,
)
from sparsecse.loss import alignment, uniformity


def stats_of(abs_a, abs_u, a, u, n=1):
    t = lambda xs: [torch.tensor(x, dtype=torch.float32) for x in xs]  # noqa: E731
    return GradientStats(t(abs_a), t(abs_u), t(a), t(u), n)


def test_magnitude_normalises_each_criterion_by_its_mean():
    stats = stats_of([[2.0, 6.0]], [[0.1, 0.3]], [[0, 0]], [[0, 0]], n=2)
    # mean_b|gA| = [1, 3] (mean 2), mean_b|gU| = [.05, .15] (mean .1): s = [.5, 1.5] + 2 * [.5, 1.5]
    scores = Scorer("magnitude", uniformity_weight=2.0)(stats, [torch.zeros(2)])
    torch.testing.assert_close(scores[0], torch.tensor([1.5, 4.5]))


def test_signed_puts_the_most_detrimental_unit_first():
    stats = stats_of([[0, 0, 0]], [[0, 0, 0]], [[1.0, -2.0, 0.5]], [[1.0, 0.0, 0.0]])
    importance = Scorer("signed", uniformity_weight=1.0)(stats, [torch.zeros(3)])[0]
    # d = gA + gU = [2, -2, .5]: removing unit 0 lowers l_align + l_uniform the most
    assert importance.argsort().tolist() == [0, 2, 1]


def test_alignment_uniformity_and_random_modes():
    stats = stats_of([[1.0, 3.0]], [[5.0, 1.0]], [[0, 0]], [[0, 0]])
    assert Scorer("alignment")(stats, [torch.zeros(2)])[0].tolist() == [1.0, 3.0]
    assert Scorer("uniformity")(stats, [torch.zeros(2)])[0].tolist() == [5.0, 1.0]
    first = Scorer("random")(None, [torch.zeros(5)], torch.Generator().manual_seed(3))[0]
    assert torch.equal(first, Scorer("random")(None, [torch.zeros(5)], torch.Generator().manual_seed(3))[0])
    with pytest.raises(ConfigError, match="score: must be 'magnitude', .*, got 'taylor'"):
        Scorer("taylor")


def test_pair_losses_are_alignment_and_uniformity_of_the_views(make_encoder):
    encoder = make_encoder("avg").eval()
    emb = encoder(**encoder.tokenize(TEXTS))
    l_align, l_uniform = pair_losses(encoder, views(encoder))
    assert l_align.item() == pytest.approx(alignment(emb, emb).item(), abs=1e-6)
    assert l_uniform.item() == pytest.approx(uniformity(emb).item(), rel=1e-5)


def test_accumulated_gradients_match_autograd_per_batch(make_encoder):
    encoder = make_encoder("avg", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    encoder.gates = UnitGates(encoder.backbone)
    batches = [views(encoder, TEXTS), views(encoder, TEXTS[::-1] + ["one more sentence"])]
    stats = accumulate_gradients(encoder, batches, encoder.gates.tensors())
    gates = encoder.gates.tensors()
    assert stats.batches == 2 and not any(g.requires_grad for g in gates), "gates must not stay trainable"
    expected_abs = [torch.zeros_like(g) for g in gates]
    for batch in batches:
        for g in gates:
            g.requires_grad_(True)
        grads = torch.autograd.grad(pair_losses(encoder, batch)[0], gates)
        for acc, grad in zip(expected_abs, grads):
            acc += grad.abs()
    for got, want in zip(stats.abs_align, expected_abs):
        torch.testing.assert_close(got, want)


def test_select_kept_ranks_globally_and_keeps_a_minimum_per_layer():
    importance = [torch.tensor([0.1, 0.2, 0.3]), torch.tensor([5.0, 6.0, 0.05])]
    alive = [torch.ones(3, dtype=torch.bool), torch.ones(3, dtype=torch.bool)]
    kept = select_kept(importance, alive, n_remove=3, min_per_layer=1)
    # globally lowest are 0.05, 0.1, 0.2: layer 0 keeps its best (0.3)
    assert [k.tolist() for k in kept] == [[False, False, True], [True, True, False]]
    kept = select_kept(importance, alive, n_remove=4, min_per_layer=1)
    assert [k.tolist() for k in kept] == [[False, False, True], [False, True, False]]


def test_select_kept_never_revives_or_recounts_the_dead():
    importance = [torch.tensor([0.0, 9.0, 1.0, 2.0])]
    alive = [torch.tensor([False, True, True, True])]
    assert select_kept(importance, alive, 1)[0].tolist() == [False, True, False, True]
    with pytest.raises(ConfigError, match="cannot remove 4 more units"):
        select_kept(importance, alive, 4)


def test_per_layer_normalisation():
    out = normalize_per_layer([torch.tensor([3.0, 4.0]), torch.tensor([0.0, 2.0])])
    torch.testing.assert_close(torch.stack(out), torch.tensor([[0.6, 0.8], [0.0, 1.0]]))
