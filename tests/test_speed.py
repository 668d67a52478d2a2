"""The speed protocol on a simulated machine: each model's call against the reference calls around
it, so that a slow phase of the machine cancels in the ratio; the median over rounds."""

from __future__ import annotations

import os

import pytest

from sparsecse.pruning.speed import (
    BUSY_SHARE,
    Contention,
    busy_seconds,
    measure,
    median_abs,
    pin,
    shift,
    watch_contention,
)

COSTS = {"dense": 1.0, "half": 0.5, "third": 1 / 3, "quarter": 0.25}  # seconds per sentence, unslowed
SENTENCES = ["a sentence"] * 100


class DriftingMachine:
    """A clock, and encoders whose calls take `cost` seconds a sentence times the machine's slowness,
    which grows by `drift` a second (a neighbour's load rising)."""

    def __init__(self, drift: float):
        self.now, self.drift, self.calls = 0.0, drift, []

    def clock(self) -> float:
        return self.now

    def encoders(self) -> dict:
        def encoder(name: str, cost: float):
            def encode(texts):
                self.calls.append((name, len(texts)))
                self.now += cost * len(texts) * (1 + self.drift * self.now)

            return encode

        return {name: encoder(name, cost) for name, cost in COSTS.items()}


def test_a_slow_drift_cancels_against_the_reference_timed_around_each_model():
    machine = DriftingMachine(drift=0.001)  # 0.1% slower each second: tens of % over a round
    run = measure(machine.encoders(), SENTENCES, "dense", rounds=3, clock=machine.clock)
    speedups = run.speedups()
    assert speedups["dense"] == 1.0
    for name, cost in COSTS.items():
        assert speedups[name] == pytest.approx(1 / cost, rel=1e-2), name
        # against the round's first reference call alone, the drift shows
        first = [r[0] / s for r, s in zip(run.rounds_of_reference, run.seconds.get(name, []))]
        assert not first or min(abs(f * cost - 1) for f in first) > 0.1, name


def test_every_model_is_timed_each_round_after_a_warm_up_with_the_reference_around_each_block():
    machine = DriftingMachine(drift=0.0)
    run = measure(machine.encoders(), SENTENCES, "dense", rounds=2, every=2, clock=machine.clock)
    timed = [name for name, count in machine.calls if count == len(SENTENCES)]
    warmed = [name for name, count in machine.calls if count < len(SENTENCES)]
    assert timed == warmed, "one warm-up call before each timed call"
    assert len(timed) == 2 * (3 + 3)  # per round: 3 models, the reference before and after 2 blocks
    assert [len(r) for r in run.rounds_of_reference] == [3, 3]
    assert all(len(s) == 2 for s in run.seconds.values())
    assert run.speedups()["half"] == pytest.approx(2.0)
    assert run.reference_per_second() == pytest.approx(1.0)  # a second a sentence
    second = run.rounds([1])
    assert second.seconds == {n: s[1:] for n, s in run.seconds.items()}
    assert second.rounds_of_reference == run.rounds_of_reference[1:]


def test_the_shift_between_two_runs():
    moved = shift({"a": 2.0, "b": 4.0, "c": 1.0}, {"a": 2.2, "b": 3.8})
    assert moved == pytest.approx({"a": 0.1, "b": -0.05})
    assert median_abs(list(moved.values())) == pytest.approx(0.075)


def test_bad_settings_are_refused():
    machine = DriftingMachine(drift=0.0)
    with pytest.raises(ValueError, match="the reference 'nothing' is not among the encoders"):
        measure(machine.encoders(), SENTENCES, "nothing", clock=machine.clock)
    with pytest.raises(ValueError, match="every must be at least 1, got 0"):
        measure(machine.encoders(), SENTENCES, "dense", every=0, clock=machine.clock)


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="CPU affinity is Linux's")
def test_pin_puts_one_thread_on_one_core_and_says_so():
    import torch

    cores, threads = os.sched_getaffinity(0), torch.get_num_threads()
    try:
        said = pin(1)
        assert torch.get_num_threads() == 1
        if len(cores) > 1:
            assert (
                os.sched_getaffinity(0) == {max(cores)}
                and said == f"1 thread on core {max(cores)} of {len(cores)}"
            )
    finally:
        os.sched_setaffinity(0, cores)
        torch.set_num_threads(threads)


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="CPU affinity is Linux's")
def test_pinned_restores_the_threads_and_cores_even_after_an_error():
    import torch

    from sparsecse.pruning.speed import pinned

    cores, threads = os.sched_getaffinity(0), torch.get_num_threads()
    with pytest.raises(RuntimeError, match="inside"), pinned():
        assert torch.get_num_threads() == 1 and len(os.sched_getaffinity(0)) == 1
        raise RuntimeError("inside")
    assert os.sched_getaffinity(0) == cores and torch.get_num_threads() == threads


def proc_stat(core0: tuple[int, ...], core1: tuple[int, ...]) -> str:
    """/proc/stat's text with the given columns (user nice system idle iowait irq softirq steal) per core."""
    rows = [("cpu", tuple(a + b for a, b in zip(core0, core1))), ("cpu0", core0), ("cpu1", core1)]
    return "\n".join(f"{name}  {' '.join(map(str, columns))} 0 0" for name, columns in rows) + "\nintr 1 2\n"


def test_busy_time_counts_every_busy_column_and_not_idle_or_iowait():
    ticks = os.sysconf("SC_CLK_TCK")
    stat = proc_stat((1, 2, 3, 1000, 500, 4, 5, 6), (10, 0, 0, 7, 0, 0, 0, 0))
    assert busy_seconds([0], stat) == pytest.approx(21 / ticks)
    assert busy_seconds([0, 1], stat) == pytest.approx(31 / ticks)


def test_the_share_of_the_timing_core_that_other_processes_took(monkeypatch):
    """Over 2 s of wall time on core 1, the core was busy 1.5 s, of which this process used 1 s: others
    took a quarter of it; core 0's load does not count."""
    ticks = os.sysconf("SC_CLK_TCK")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {1})
    stats = iter(
        [proc_stat((0,) * 8, (0,) * 8), proc_stat((2 * ticks,) + (0,) * 7, (int(1.5 * ticks),) + (0,) * 7)]
    )
    clock, own = iter([10.0, 12.0]), iter([5.0, 6.0])
    with watch_contention(lambda: next(stats), lambda: next(own), lambda: next(clock)) as watched:
        assert watched.share is None
    assert watched.cores == (1,) and watched.share == pytest.approx(0.25)
    warning = watched.warning("the speed-up")
    assert warning.startswith("other processes took 25% of core 1 while the speed-up was timed: no verdict")
    assert Contention((1,), BUSY_SHARE).warning("x") is None and Contention((1,)).warning("x") is None


def test_without_proc_stat_the_share_is_unknown_and_nothing_is_said():
    with watch_contention(lambda: None) as watched:
        pass
    assert watched.share is None and watched.warning("the speed-up") is None


def test_a_proc_stat_without_the_timing_cores_leaves_the_share_unknown(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {5})
    stat = proc_stat((0,) * 8, (0,) * 8)
    with watch_contention(lambda: stat) as watched:
        pass
    assert watched.share is None
