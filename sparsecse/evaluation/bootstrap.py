"""Paired bootstrap over STS test pairs: is a difference in STS avg between two encoders larger than
the sampling of the test sets would make it?

A seed's ± (scoring batches, dropout, random scores) says nothing of test-set sampling: both encoders
are scored on the same, fixed pairs. Resampling each task's pairs with replacement, and scoring both
encoders on the same resample, gives the spread of the difference that the choice of test pairs alone
would produce (Koehn 2004, paired bootstrap resampling; Efron & Tibshirani 1993, percentile interval).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

# task -> (N,) cosine similarities of the encoder and (N,) gold scores, as sts_similarities keeps them
Similarities = Mapping[str, tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class PairedDifference:
    """STS avg of the candidates minus the references' (each side's mean), in Spearman x 100 points."""

    observed: float  # on the test sets as they are
    low: float  # 2.5th percentile over resamples
    high: float  # 97.5th percentile
    not_positive: float  # fraction of resamples in which the difference is <= 0
    resamples: int

    def __str__(self) -> str:
        return (f"{self.observed:+.2f} (95% CI {self.low:+.2f} to {self.high:+.2f}; not positive in "
                f"{self.not_positive:.1%} of {self.resamples} resamples)")  # fmt: skip


def spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(R, N), (R, N) -> (R,) Spearman's rank correlation of each row pair, ties averaged (as scipy's)."""
    rx, ry = rankdata(x, axis=1), rankdata(y, axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    return (rx * ry).sum(axis=1) / np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))


def task_differences(task: str, references: Sequence[Similarities], candidates: Sequence[Similarities],
                     index: np.ndarray) -> np.ndarray:  # fmt: skip
    """(R, N) pair indices into one task -> (R,) mean Spearman of the candidates minus that of the
    references, each row scored on the pairs it draws."""
    gold = references[0][task][1][index]
    mean = lambda group: np.mean([spearman_rows(s[task][0][index], gold) for s in group], axis=0)  # noqa: E731
    return mean(candidates) - mean(references)


def paired_bootstrap(
    references: Sequence[Similarities],
    candidates: Sequence[Similarities],
    resamples: int = 1000,
    seed: int = 0,
    chunk: int = 100,
) -> PairedDifference:
    """The difference of STS avg (mean over tasks of Spearman x 100), candidates minus references, with
    its bootstrap distribution: per resample, each task's pairs are drawn with replacement once and
    every encoder is scored on that draw. Each side may hold several encoders (e.g. one per seed),
    averaged within each resample."""
    tasks = list(references[0])
    for other in [*references, *candidates]:
        if list(other) != tasks or any(not np.array_equal(other[t][1], references[0][t][1]) for t in tasks):
            raise ValueError("every encoder must be scored on the same tasks and pairs")
    rng = np.random.default_rng(seed)
    differences, observed = np.zeros(resamples), 0.0
    for task in tasks:
        size = len(references[0][task][1])
        observed += float(task_differences(task, references, candidates, np.arange(size)[None])[0])
        for start in range(0, resamples, chunk):  # (chunk, N) indices at a time: bounded memory
            index = rng.integers(0, size, size=(min(chunk, resamples - start), size))
            differences[start : start + len(index)] += task_differences(task, references, candidates, index)
    differences *= 100 / len(tasks)
    low, high = np.percentile(differences, [2.5, 97.5])
    return PairedDifference(observed * 100 / len(tasks), float(low), float(high),
                            float(np.mean(differences <= 0)), resamples)  # fmt: skip
