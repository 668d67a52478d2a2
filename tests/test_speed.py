"""The speed protocol: each model's time against the reference timings around it, so that a drift of
the machine's speed cancels; on a simulated clock, exactly."""

from __future__ import annotations

import pytest

from sparsecse.speed import measure, median_abs, shift


class DriftingMachine:
    """A clock, and encoders whose calls take `cost` seconds times the machine's slowness, which grows
    by `drift` per second of the clock (a CPU slowing down as a neighbour's load rises)."""

    def __init__(self, drift: float):
        self.now, self.drift, self.calls = 0.0, drift, []

    def clock(self) -> float:
        return self.now

    def encoder(self, name: str, cost: float):
        def encode(texts):
            self.calls.append((name, len(texts)))
            self.now += cost * len(texts) / 1000 * (1 + self.drift * self.now)

        return encode


SENTENCES = ["a sentence"] * 1000


def encoders(machine: DriftingMachine) -> dict:
    costs = {"dense": 1.0, "half": 0.5, "third": 1 / 3, "quarter": 0.25}
    return {name: machine.encoder(name, cost) for name, cost in costs.items()}


def test_a_slow_drift_cancels_against_the_reference_timed_around_each_model():
    machine = DriftingMachine(drift=0.002)  # 0.2% slower each second: about 2% over a round
    run = measure(encoders(machine), SENTENCES, "dense", rounds=3, clock=machine.clock)
    speedups = run.speedups()
    assert speedups["dense"] == 1.0
    for name, expected in (("half", 2.0), ("third", 3.0), ("quarter", 4.0)):
        assert speedups[name] == pytest.approx(expected, rel=1e-3), name
    # against the round's first reference timing alone, the drift shows: later models look slower
    for name, expected in (("half", 2.0), ("third", 3.0), ("quarter", 4.0)):
        first = [r[0] / s for r, s in zip(run.rounds_of_reference, run.seconds[name])]
        assert max(abs(f / expected - 1) for f in first) > 5e-3, name


def test_every_model_is_timed_each_round_after_a_warm_up_and_the_reference_around_each_block():
    machine = DriftingMachine(drift=0.0)
    run = measure(encoders(machine), SENTENCES, "dense", rounds=2, every=2, clock=machine.clock)
    timed = [name for name, count in machine.calls if count == len(SENTENCES)]
    warmed = [name for name, count in machine.calls if count < len(SENTENCES)]
    assert timed == warmed, "one warm-up call before each timed call"
    assert len(timed) == 2 * (3 + 3)  # per round: 3 models, the reference before and after 2 blocks
    assert [len(r) for r in run.rounds_of_reference] == [3, 3]
    assert all(len(s) == 2 for s in run.seconds.values())
    assert run.speedups()["half"] == pytest.approx(2.0)


def test_the_shift_between_two_runs():
    moved = shift({"a": 2.0, "b": 4.0, "c": 1.0}, {"a": 2.2, "b": 3.8})
    assert moved == pytest.approx({"a": 0.1, "b": -0.05})
    assert median_abs(list(moved.values())) == pytest.approx(0.075)


def test_bad_settings_are_refused():
    machine = DriftingMachine(drift=0.0)
    with pytest.raises(ValueError, match="the reference 'nothing' is not among the encoders"):
        measure(encoders(machine), SENTENCES, "nothing", clock=machine.clock)
    with pytest.raises(ValueError, match="every must be at least 1, got 0"):
        measure(encoders(machine), SENTENCES, "dense", every=0, clock=machine.clock)
