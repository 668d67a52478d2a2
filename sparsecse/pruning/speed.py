"""Encode speed-ups that repeat from one run to the next on a shared, noisy machine.

A speed-up is a ratio against a reference model (the dense one) timed in the same process on the
same sentences. On a 2-core cloud CPU an encode call varies by 10-30% from one call to the next,
with slower phases that last minutes (bench/speed_noise.py measures it). Three things make the
ratios repeat (docs/compression.md gives the figures):
- the reference is timed again around every `every` models, and each model's time is set against
  the mean of the reference timings just before and after it, so that a slow phase cancels;
- many short rounds, each model once per round in a shuffled order after a warm-up call, and the
  median of a model's per-round ratios;
- `pin`: one thread, on one core, so that the machine's background work on the other core does not
  stall a parallel region.
And `watch_contention` says how much of that core other processes took meanwhile: a process beside
the timing can move a ratio by a third, and nothing in the ratio shows it.
"""

from __future__ import annotations

import os
import platform
import random
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

Encode = Callable[[Sequence[str]], object]  # encode(texts): a model's batched encode, its batch fixed
Clock = Callable[[], float]
WARMUP_SENTENCES = 64  # one warm-up call before each timing: first-call allocations, lazy set-ups


def cpu_name() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what the platform says."""
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def pin(threads: int = 1, core: int | None = None) -> str:
    """Run this process's PyTorch on `threads` threads, on one core (`core`; default the last, away
    from the first core's interrupts) when `threads` is 1; returns what was set, for the record."""
    import torch

    torch.set_num_threads(threads)
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if threads == 1 and len(cores) > 1:
        chosen = cores[-1] if core is None else core
        os.sched_setaffinity(0, {chosen})
        return f"1 thread on core {chosen} of {len(cores)}"
    return f"{threads} threads on {len(cores) or 'all'} cores"


@contextmanager
def pinned(threads: int = 1) -> Iterator[str]:
    """`pin(threads)` within the block; the process's thread count and cores as they were after."""
    import torch

    before = torch.get_num_threads()
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    try:
        yield pin(threads)
    finally:
        torch.set_num_threads(before)
        if cores is not None:
            os.sched_setaffinity(0, cores)


@dataclass
class SpeedRun:
    """One speed run's timings: per model, the seconds of each round's call and the mean seconds of
    the reference calls just before and just after it; every reference call, by round."""

    reference: str
    sentences: int
    seconds: dict[str, list[float]] = field(default_factory=dict)
    reference_seconds: dict[str, list[float]] = field(default_factory=dict)
    rounds_of_reference: list[list[float]] = field(default_factory=list)

    def ratios(self, name: str) -> list[float]:
        """The model's speed-up in each round."""
        return [ref / own for ref, own in zip(self.reference_seconds[name], self.seconds[name])]

    def speedups(self) -> dict[str, float]:
        """Each model's speed-up: the median of its rounds' ratios."""
        return {self.reference: 1.0} | {name: statistics.median(self.ratios(name)) for name in self.seconds}

    def spread(self, name: str) -> float:
        """How far the model's rounds spread around their median: (max - min) / median."""
        ratios = self.ratios(name)
        return (max(ratios) - min(ratios)) / statistics.median(ratios)

    def reference_per_second(self) -> float:
        """The reference's throughput: sentences a second, at the median of its calls."""
        return self.sentences / statistics.median(t for calls in self.rounds_of_reference for t in calls)

    def rounds(self, keep: Sequence[int]) -> SpeedRun:
        """The same run with only the rounds `keep` (say, one half, to compare with the other)."""
        pick = lambda values: [values[i] for i in keep]  # noqa: E731
        return SpeedRun(
            self.reference,
            self.sentences,
            {name: pick(values) for name, values in self.seconds.items()},
            {name: pick(values) for name, values in self.reference_seconds.items()},
            pick(self.rounds_of_reference),
        )


def timed(encode: Encode, sentences: Sequence[str], clock: Clock = time.perf_counter) -> float:
    """Seconds of one call on `sentences`, after a warm-up call on their first few."""
    encode(sentences[:WARMUP_SENTENCES])
    start = clock()
    encode(sentences)
    return clock() - start


def measure(
    encoders: Mapping[str, Encode],
    sentences: Sequence[str],
    reference: str,
    rounds: int = 9,
    every: int = 1,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    clock: Clock = time.perf_counter,
) -> SpeedRun:
    """Time every encoder `rounds` times against `reference` (a key of `encoders`), which is timed
    again around each block of `every` models (see the module's docstring)."""
    if reference not in encoders:
        raise ValueError(f"the reference {reference!r} is not among the encoders")
    if every < 1:
        raise ValueError(f"every must be at least 1, got {every}")
    names = [name for name in encoders if name != reference]
    run = SpeedRun(reference, len(sentences), {n: [] for n in names}, {n: [] for n in names})
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


PROC_STAT = Path("/proc/stat")
# /proc/stat's busy columns of a core: user, nice, system, irq, softirq, steal (another VM's turn)
BUSY = (0, 1, 2, 5, 6, 7)
BUSY_SHARE = 0.1  # other processes taking more of the timing cores than this make a speed-up no verdict


def busy_seconds(cores: Iterable[int], stat: str) -> float:
    """Seconds the `cores` have spent busy since boot, by the text of /proc/stat."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    rows = {fields[0]: fields[1:] for line in stat.splitlines() if (fields := line.split())}
    return sum(int(rows[f"cpu{core}"][column]) for core in cores for column in BUSY) / ticks


@dataclass
class Contention:
    """How much of the timing cores' time other processes took while a block ran (`watch_contention`):
    the cores' busy time less this process's CPU time, over the block's wall time on those cores
    (0: the cores were this process's; None: not known, where there is no /proc/stat)."""

    cores: tuple[int, ...]
    share: float | None = None

    def warning(self, timed: str, remedy: str = "time it again on an idle machine") -> str | None:
        """A line for the user when other processes took enough of the cores to make what was `timed`
        no verdict, else None."""
        if self.share is None or self.share <= BUSY_SHARE:
            return None
        took = f"other processes took {self.share:.0%} of core {', '.join(map(str, self.cores))}"
        return f"{took} while {timed} was timed: no verdict; {remedy}"


@contextmanager
def watch_contention(
    read_stat: Callable[[], str | None] = lambda: PROC_STAT.read_text() if PROC_STAT.is_file() else None,
    own_seconds: Clock = lambda: sum(os.times()[:2]),
    clock: Clock = time.perf_counter,
) -> Iterator[Contention]:
    """Watch the cores this process may run on (all of them, or the one `pin` chose) while the block
    runs; the yielded record's `share` is filled in when it ends. Why: on a shared machine a process
    beside the timing moved a speed-up by a third (bench/RESULTS.md), which the ratio alone hides."""
    cores = tuple(sorted(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else ()
    record = Contention(cores)
    stat, own, start = read_stat(), own_seconds(), clock()
    yield record
    later, wall = read_stat(), (clock() - start) * len(cores)
    if stat is None or later is None or wall <= 0:
        return
    try:
        others = busy_seconds(cores, later) - busy_seconds(cores, stat) - (own_seconds() - own)
    except (KeyError, IndexError, ValueError):  # a /proc/stat without these cores' rows (a container's)
        return
    record.share = min(1.0, max(0.0, others / wall))


def shift(first: Mapping[str, float], second: Mapping[str, float]) -> dict[str, float]:
    """How far each speed-up both runs measured moved from the first to the second (second / first - 1)."""
    return {name: second[name] / first[name] - 1 for name in first if name in second}


def median_abs(values: Sequence[float]) -> float:
    return statistics.median(abs(v) for v in values)
