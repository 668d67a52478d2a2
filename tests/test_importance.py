from __future__ import annotations

import pytest
import torch
from helpers import TEXTS, views

from sparsecse.core.errors import ConfigError
from sparsecse.model.loss import alignment, uniformity
from sparsecse.pruning.gates import UnitGates
from sparsecse.pruning.importance import (
    GradientStats,
    Scorer,
    accumulate_gradients,
    normalize_per_layer,
    pair_losses,
)
from sparsecse.pruning.selection import select_kept


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
    with pytest.raises(ConfigError, match="score: must be 'magnitude', .*, got 'taylor'"):
        Scorer("taylor")


def test_random_scores_are_uniform_seeded_draws():
    draw = lambda seed: Scorer("random")(None, [torch.zeros(4000), torch.zeros(2, 3)],  # noqa: E731
                                         torch.Generator().manual_seed(seed))  # fmt: skip
    first = draw(3)
    assert [t.shape for t in first] == [torch.Size([4000]), torch.Size([2, 3])], "one score per unit"
    assert all(torch.equal(a, b) for a, b in zip(first, draw(3))), "a seed draws the same scores"
    assert not torch.equal(first[0], draw(4)[0]), "another seed draws others"
    scores = first[0]
    assert 0 <= scores.min() and scores.max() < 1
    # U(0, 1): mean 1/2 and variance 1/12; 4,000 draws put the sample's within a few 1/sqrt(n)
    assert abs(scores.mean().item() - 0.5) < 0.02 and abs(scores.var().item() - 1 / 12) < 0.005


SECOND_VIEWS = ["a woman plays a piano .", "the dog sleeps", "three cats walk through a dry brown field"]


def test_pair_losses_are_alignment_and_uniformity_of_the_views(make_encoder):
    """Different sentences in the two views, so that alignment is not zero: a swapped or shifted
    pairing gives another value."""
    encoder = make_encoder("avg").eval()
    first, second = (encoder(**encoder.tokenize(texts)) for texts in (TEXTS, SECOND_VIEWS))
    l_align, l_uniform = pair_losses(encoder, views(encoder, TEXTS, SECOND_VIEWS))
    assert l_align.item() > 0.01
    assert l_align.item() == pytest.approx(alignment(first, second).item(), rel=1e-5)
    assert l_align.item() != pytest.approx(alignment(first, second.roll(1, 0)).item(), rel=1e-3)
    expected_uniform = (uniformity(first) + uniformity(second)) / 2
    assert l_uniform.item() == pytest.approx(expected_uniform.item(), rel=1e-5)


def gate_gradients(encoder, gates, first: list[str], second: list[str]) -> tuple[list, list]:
    """d l_align / d gates and d l_uniform / d gates for one batch, from the two views encoded apart
    and the loss functions called directly (not through `pair_losses`)."""
    for g in gates:
        g.requires_grad_(True)
    a, b = (encoder(**encoder.tokenize(texts), test_time=True) for texts in (first, second))
    g_align = torch.autograd.grad(alignment(a, b), gates, retain_graph=True)
    g_uniform = torch.autograd.grad((uniformity(a) + uniformity(b)) / 2, gates)
    for g in gates:
        g.requires_grad_(False)
    return list(g_align), list(g_uniform)


def test_accumulated_gradients_match_autograd_per_batch(make_encoder):
    # dropout off, so that this test's own forward passes see what accumulate_gradients saw
    encoder = make_encoder("avg", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    encoder.attach_gates(UnitGates(encoder.backbone))
    pairs = [(TEXTS, SECOND_VIEWS), (SECOND_VIEWS[::-1] + ["one more"], TEXTS[::-1] + ["and another one"])]
    stats = accumulate_gradients(encoder, [views(encoder, *pair) for pair in pairs], encoder.gates.tensors())
    gates = encoder.gates.tensors()
    assert stats.batches == 2 and not any(g.requires_grad for g in gates), "gates must not stay trainable"
    expected = {name: [torch.zeros_like(g) for g in gates] for name in ("abs_align", "abs_uniform", "align",
                                                                        "uniform")}  # fmt: skip
    for pair in pairs:
        g_align, g_uniform = gate_gradients(encoder, gates, *pair)
        for i in range(len(gates)):
            expected["abs_align"][i] += g_align[i].abs()
            expected["abs_uniform"][i] += g_uniform[i].abs()
            expected["align"][i] += g_align[i]
            expected["uniform"][i] += g_uniform[i]
    for name, wanted in expected.items():
        got = getattr(stats, name)
        assert min(w.abs().max().item() for w in wanted) > 1e-4, f"{name}: every gate group has a gradient"
        for got_i, want_i in zip(got, wanted):
            torch.testing.assert_close(got_i, want_i, rtol=1e-4, atol=1e-7)


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


def test_the_scorer_computes_only_what_its_mode_reads():
    groups = {"heads": [torch.zeros(2)], "neurons": [torch.zeros(3)]}
    stats = stats_of([[1, 3], [2, 2, 2]], [[1, 1], [1, 1, 1]], [[0, 0], [0, 0, 0]], [[0, 0], [0, 0, 0]])
    unread = lambda: pytest.fail("this mode reads no gradients")  # noqa: E731
    magnitudes = {"heads": [torch.ones(2)], "neurons": [torch.ones(3)]}
    assert Scorer("weight_magnitude").scores(groups, unread, magnitudes=lambda: magnitudes) == magnitudes
    drawn = Scorer("random").scores(groups, unread, torch.Generator().manual_seed(0))
    assert [t.shape for t in drawn["heads"] + drawn["neurons"]] == [(2,), (3,)]
    aligned = Scorer("alignment").scores(groups, lambda: stats)
    assert aligned["heads"][0].tolist() == [1.0, 3.0] and aligned["neurons"][0].tolist() == [2.0, 2.0, 2.0]
    with pytest.raises(ConfigError, match="weight_magnitude has no score for a whole layer"):
        Scorer("weight_magnitude").scores(groups, unread)
