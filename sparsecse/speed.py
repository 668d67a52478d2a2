"""Encode speed-ups that repeat from one run to the next on a shared, noisy machine.

A speed-up is a ratio against a reference model (the dense one) timed in the same process, on the
same sentences, batched as `SentenceTransformer.encode` batches them (longest first). On a 2-core
cloud CPU one encode of 3,000 sentences varies by 20% or more from call to call, in bursts shorter
than a call (measured: bench/speed_noise.py), so a ratio of two whole calls moves by as much. Noise
of that kind only ever adds time. So every batch is timed on its own, in every round, and a model's
time is the sum over batches of its fastest time for that batch: a burst that slows one batch of
one round is left out. The reference is timed again after every `every` models; models run in a
shuffled order each round, each after a warm-up call.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

Encode = Callable[[Sequence[str]], object]  # encode(texts): one forward for a batch's texts
Clock = Callable[[], float]


def batches(sentences: Sequence[str], batch_size: int) -> list[list[str]]:
    """The batches `SentenceTransformer.encode` makes: longest text first, `batch_size` each."""
    ordered = sorted(sentences, key=len, reverse=True)
    return [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]


@dataclass
class SpeedRun:
    """One speed run's raw timings: per model, per round, the seconds of each batch; and the
    reference's, each time it was timed."""

    reference: str
    seconds: dict[str, list[list[float]]] = field(default_factory=dict)  # model -> rounds -> batches
    reference_seconds: list[list[float]] = field(default_factory=list)  # each timing -> batches
    neighbours: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # reference timings around
    sentences: int = 0
    round_starts: list[int] = field(default_factory=list)  # each round's first reference timing

    def fastest(self, timings: Sequence[Sequence[float]]) -> float:
        """The sum over batches of each batch's fastest time."""
        return sum(min(batch) for batch in zip(*timings))

    def speedups(self) -> dict[str, float]:
        """Each model's speed-up: the reference's summed fastest batch times over the model's."""
        reference = self.fastest(self.reference_seconds)
        return {self.reference: 1.0} | {n: reference / self.fastest(t) for n, t in self.seconds.items()}

    def round_ratios(self, name: str) -> list[float]:
        """The model's speed-up in each round, whole calls against the reference timings around it."""
        ratios = []
        for own, (before, after) in zip(self.seconds[name], self.neighbours[name]):
            reference = (sum(self.reference_seconds[before]) + sum(self.reference_seconds[after])) / 2
            ratios.append(reference / sum(own))
        return ratios

    def spread(self, name: str) -> float:
        """How far the model's whole-call ratios spread over the rounds: (max - min) / median."""
        ratios = self.round_ratios(name)
        return (max(ratios) - min(ratios)) / statistics.median(ratios)

    def reference_per_second(self) -> float:
        """The reference's throughput at its fastest: sentences a second."""
        return self.sentences / self.fastest(self.reference_seconds)

    def rounds(self, keep: Sequence[int]) -> SpeedRun:
        """The same run with only the rounds `keep` (say, one half, to compare with the other)."""
        reference = sorted({i for n in self.neighbours.values() for r in keep for i in n[r]}
                           | {self.round_starts[r] for r in keep})  # fmt: skip
        index = {old: new for new, old in enumerate(reference)}
        return SpeedRun(
            self.reference,
            {n: [t[r] for r in keep] for n, t in self.seconds.items()},
            [self.reference_seconds[i] for i in reference],
            {n: [(index[t[r][0]], index[t[r][1]]) for r in keep] for n, t in self.neighbours.items()},
            self.sentences,
            [index[self.round_starts[r]] for r in keep],
        )


def timed_batches(encode: Encode, groups: Sequence[Sequence[str]], clock: Clock) -> list[float]:
    """Seconds of each batch, after a warm-up call on the first (first-call allocations, ONNX
    Runtime's lazy set-up)."""
    encode(groups[0])
    seconds = []
    for group in groups:
        start = clock()
        encode(group)
        seconds.append(clock() - start)
    return seconds


def measure(
    encoders: Mapping[str, Encode],
    sentences: Sequence[str],
    reference: str,
    rounds: int = 3,
    every: int = 1,
    batch_size: int = 64,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    clock: Clock = time.perf_counter,
) -> SpeedRun:
    """Time every encoder's batches `rounds` times; the reference before each round and after each
    block of `every` models (see the module's docstring)."""
    if reference not in encoders:
        raise ValueError(f"the reference {reference!r} is not among the encoders")
    if every < 1:
        raise ValueError(f"every must be at least 1, got {every}")
    groups = batches(sentences, batch_size)
    names = [name for name in encoders if name != reference]
    run = SpeedRun(reference, {n: [] for n in names}, [], {n: [] for n in names}, len(sentences), [])
    for index in range(rounds):
        order = list(names)
        random.Random(seed + index).shuffle(order)  # a drift within a round hits no model more than another
        run.round_starts.append(len(run.reference_seconds))
        run.reference_seconds.append(timed_batches(encoders[reference], groups, clock))
        for start in range(0, len(order), every):
            block = order[start : start + every]
            own = {name: timed_batches(encoders[name], groups, clock) for name in block}
            run.reference_seconds.append(timed_batches(encoders[reference], groups, clock))
            after = len(run.reference_seconds) - 1
            for name, seconds in own.items():
                run.seconds[name].append(seconds)
                run.neighbours[name].append((after - 1, after))
        if progress:
            progress(f"speed: round {index + 1} of {rounds}")
    return run


def shift(first: Mapping[str, float], second: Mapping[str, float]) -> dict[str, float]:
    """How far each speed-up both runs measured moved from the first to the second (second / first - 1)."""
    return {name: second[name] / first[name] - 1 for name in first if name in second}


def median_abs(values: Sequence[float]) -> float:
    return statistics.median(abs(v) for v in values)
