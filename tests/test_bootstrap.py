"""The paired bootstrap over STS pairs, against scipy and a plain loop written here."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from sparsecse.evaluation.bootstrap import paired_bootstrap, spearman_rows
from sparsecse.evaluation.sts import sts_similarities


def test_spearman_rows_is_scipys_row_by_row_ties_included():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, size=(4, 30)).astype(float)  # many ties
    y = x + rng.normal(size=(4, 30))
    expected = [spearmanr(a, b)[0] for a, b in zip(x, y)]
    np.testing.assert_allclose(spearman_rows(x, y), expected, rtol=1e-12)


def similarities(rng, noise: float, gold: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {task: (g + rng.normal(scale=noise, size=g.shape), g) for task, g in gold.items()}


def rho(sims: dict, task: str, index: np.ndarray) -> float:
    return spearmanr(sims[task][0][index], sims[task][1][index])[0]


def test_the_bootstrap_is_the_plain_loop():
    rng = np.random.default_rng(1)
    gold = {"a": rng.uniform(0, 5, 40), "b": rng.uniform(0, 5, 25)}
    reference, first, second = (similarities(rng, noise, gold) for noise in (2.0, 1.0, 1.5))
    got = paired_bootstrap([reference, second], [first], resamples=50, seed=7, chunk=16)
    draws, differences, observed = np.random.default_rng(7), np.zeros(50), 0.0
    for task, g in gold.items():  # the same draws, in the same order: task by task, resample by resample
        index = draws.integers(0, len(g), size=(50, len(g)))
        whole = np.arange(len(g))
        observed += rho(first, task, whole) - np.mean([rho(c, task, whole) for c in (reference, second)])
        for r in range(50):
            references = np.mean([rho(c, task, index[r]) for c in (reference, second)])
            differences[r] += rho(first, task, index[r]) - references
    differences *= 100 / 2
    assert got.observed == pytest.approx(observed * 100 / 2, abs=1e-9)
    assert (got.low, got.high) == pytest.approx(tuple(np.percentile(differences, [2.5, 97.5])), abs=1e-9)
    assert got.not_positive == np.mean(differences <= 0)


def test_a_clearly_better_encoder_is_told_apart_and_an_equal_one_is_not():
    rng = np.random.default_rng(2)
    gold = {"a": rng.uniform(0, 5, 300), "b": rng.uniform(0, 5, 300)}
    reference = similarities(rng, 2.0, gold)
    better = paired_bootstrap([reference], [similarities(rng, 0.5, gold)], resamples=200)
    assert better.observed > 10 and better.low > 0 and better.not_positive == 0.0
    same = paired_bootstrap([reference], [reference], resamples=200)
    assert (same.observed, same.low, same.high, same.not_positive) == (0.0, 0.0, 0.0, 1.0)
    assert "+0.00 (95% CI +0.00 to +0.00" in str(same)


def test_the_encoders_must_be_scored_on_the_same_pairs():
    gold = {"a": np.arange(5.0)}
    with pytest.raises(ValueError, match="same tasks and pairs"):
        paired_bootstrap([{"a": (np.arange(5.0), gold["a"])}], [{"a": (np.arange(5.0), gold["a"] + 1)}])


def test_the_observed_difference_is_that_of_the_sts_evaluation(toy_senteval_dir, make_encoder):
    from sparsecse.evaluation.sts import evaluate_sts

    first, second = make_encoder("avg", seed=0), make_encoder("avg", seed=1)
    tasks = ["sts12", "stsb", "sickr"]
    reference, candidate = (sts_similarities(e.encode, toy_senteval_dir, tasks) for e in (first, second))
    got = paired_bootstrap([reference], [candidate], resamples=10)
    scores = [evaluate_sts(e.encode, toy_senteval_dir, tasks)["sts_avg"] for e in (first, second)]
    assert got.observed == pytest.approx(scores[1] - scores[0], abs=1e-9)
