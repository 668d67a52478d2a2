"""Encode speed-ups that repeat from one run to the next on a shared, noisy machine.

A speed-up is a ratio against a reference model (the dense one) timed in the same process. On a
2-core cloud CPU the machine's own speed drifts by more than 10% within minutes, and a ratio taken
against one reference timing per round moves with it. So the reference is timed again after every
`every` models, and each model's time is set against the mean of the reference timings just before
and just after it: a drift slower than that block cancels in the ratio. Models run in a shuffled
order each round, each after a warm-up call, and a speed-up is the median of its rounds' ratios.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

Encode = Callable[[Sequence[str]], object]  # encode(texts): a model's batched encode, batch fixed
WARMUP_SENTENCES = 256  # one warm-up call per timing: first-call allocations, ONNX Runtime's lazy set-up


@dataclass
class SpeedRun:
    """The raw timings of one speed run: per model, per round, its seconds and the mean seconds of
    the reference timed just before and just after it."""

    reference: str
    seconds: dict[str, list[float]] = field(default_factory=dict)
    reference_seconds: dict[str, list[float]] = field(default_factory=dict)
    rounds_of_reference: list[list[float]] = field(default_factory=list)  # every reference timing, by round

    def ratios(self, name: str) -> list[float]:
        """The model's speed-up in each round."""
        return [ref / own for ref, own in zip(self.reference_seconds[name], self.seconds[name])]

    def speedups(self) -> dict[str, float]:
        """Median over rounds of each model's ratio to its neighbouring reference timings."""
        found = {name: statistics.median(self.ratios(name)) for name in self.seconds}
        return {self.reference: 1.0, **found}

    def spread(self, name: str) -> float:
        """How far the model's rounds spread around their median: (max - min) / median."""
        ratios = self.ratios(name)
        return (max(ratios) - min(ratios)) / statistics.median(ratios)

    def reference_per_second(self, sentences: int) -> float:
        """The reference's throughput over the whole run (median of its timings)."""
        return sentences / statistics.median(t for round_ in self.rounds_of_reference for t in round_)


def timed(encode: Encode, sentences: Sequence[str], clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds of one call on `sentences`, after a warm-up call on their first few."""
    encode(sentences[:WARMUP_SENTENCES])
    start = clock()
    encode(sentences)
    return clock() - start


def measure(
    encoders: Mapping[str, Encode],
    sentences: Sequence[str],
    reference: str,
    rounds: int = 3,
    every: int = 1,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> SpeedRun:
    """Time every encoder `rounds` times against `reference` (a key of `encoders`), timed again
    after each block of `every` models (see the module's docstring)."""
    if reference not in encoders:
        raise ValueError(f"the reference {reference!r} is not among the encoders")
    if every < 1:
        raise ValueError(f"every must be at least 1, got {every}")
    names = [name for name in encoders if name != reference]
    run = SpeedRun(reference, {n: [] for n in names}, {n: [] for n in names})
    for index in range(rounds):
        order = list(names)
        random.Random(seed + index).shuffle(order)  # a drift within a round hits no model more than another
        before = timed(encoders[reference], sentences, clock)
        run.rounds_of_reference.append([before])
        for start in range(0, len(order), every):
            block = order[start : start + every]
            own = {name: timed(encoders[name], sentences, clock) for name in block}
            after = timed(encoders[reference], sentences, clock)
            run.rounds_of_reference[-1].append(after)
            for name, seconds in own.items():
                run.seconds[name].append(seconds)
                run.reference_seconds[name].append((before + after) / 2)
            before = after
        if progress:
            progress(f"speed: round {index + 1} of {rounds}")
    return run


def shift(first: Mapping[str, float], second: Mapping[str, float]) -> dict[str, float]:
    """How far each speed-up both runs measured moved from the first to the second (second / first - 1)."""
    return {name: second[name] / first[name] - 1 for name in first if name in second}


def median_abs(values: Sequence[float]) -> float:
    return statistics.median(abs(v) for v in values)
