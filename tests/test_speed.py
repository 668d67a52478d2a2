"""The speed protocol on a simulated machine: each batch timed on its own in every round, a model's
time the sum of its batches' fastest times, so that bursts of noise, which only add time, are left
out; exactly, when every batch has one quiet round."""

from __future__ import annotations

import random

import pytest

from sparsecse.speed import batches, measure, median_abs, shift

COSTS = {"dense": 1.0, "half": 0.5, "third": 1 / 3, "quarter": 0.25}  # seconds per 1,000 characters


class NoisyMachine:
    """A clock, and encoders whose calls take `cost` seconds per 1,000 characters, plus a burst of
    `burst` times as long again on a fifth of the calls, drawn at random (a neighbour's load, which
    only adds time)."""

    def __init__(self, burst: float = 0.0, seed: int = 0):
        self.now, self.burst, self.calls, self.draw = 0.0, burst, [], random.Random(seed)

    def clock(self) -> float:
        return self.now

    def encoder(self, name: str, cost: float):
        def encode(texts):
            self.calls.append((name, list(texts)))
            slow = 1 + (self.burst if self.draw.random() < 0.2 else 0.0)
            self.now += cost * sum(map(len, texts)) / 1000 * slow

        return encode

    def encoders(self) -> dict:
        return {name: self.encoder(name, cost) for name, cost in COSTS.items()}


SENTENCES = [f"sentence {'x' * (i % 37)} number {i}" for i in range(300)]


def test_bursts_of_noise_are_left_out_and_the_ratios_are_exact():
    machine = NoisyMachine(burst=0.5)
    run = measure(machine.encoders(), SENTENCES, "dense", rounds=4, batch_size=64, clock=machine.clock)
    speedups = run.speedups()
    assert speedups["dense"] == 1.0
    for name, cost in COSTS.items():
        assert speedups[name] == pytest.approx(1 / cost, rel=1e-9), name
    # whole calls, as the protocol before this one took them, keep the bursts
    whole = [ratio / (1 / COSTS["quarter"]) - 1 for ratio in run.round_ratios("quarter")]
    assert max(map(abs, whole)) > 0.01


def test_batches_as_sentence_transformers_makes_them_each_timed_after_a_warm_up():
    groups = batches(SENTENCES, 64)
    assert [len(g) for g in groups] == [64, 64, 64, 64, 44]
    assert [len(s) for s in groups[0]] == sorted((len(s) for s in groups[0]), reverse=True)
    assert len(groups[0][0]) == max(map(len, SENTENCES)) and len(groups[-1][-1]) == min(map(len, SENTENCES))
    machine = NoisyMachine()
    run = measure(
        machine.encoders(), SENTENCES, "dense", rounds=2, every=2, batch_size=64, clock=machine.clock
    )
    # per round: the reference, 2 models, the reference, 1 model, the reference; each a warm-up and 5 batches
    assert len(machine.calls) == 2 * 6 * (1 + 5)
    assert [name for name, _ in machine.calls[:7]] == ["dense"] * 6 + [machine.calls[6][0]]
    assert machine.calls[0][1] == machine.calls[1][1] == groups[0], "the warm-up is the first batch"
    assert len(run.reference_seconds) == 6 and all(len(t) == 2 for t in run.seconds.values())
    assert run.round_starts == [0, 3]
    assert run.reference_per_second() == pytest.approx(len(SENTENCES) / (sum(map(len, SENTENCES)) / 1000))


def test_a_run_cut_to_some_of_its_rounds():
    machine = NoisyMachine(burst=0.5)
    run = measure(machine.encoders(), SENTENCES, "dense", rounds=4, clock=machine.clock)
    second_half = run.rounds([2, 3])
    assert second_half.round_starts == [0, 4] and len(second_half.reference_seconds) == 8
    assert all(t == run.seconds[n][2:] for n, t in second_half.seconds.items())
    assert second_half.round_ratios("half") == run.round_ratios("half")[2:]


def test_the_shift_between_two_runs():
    moved = shift({"a": 2.0, "b": 4.0, "c": 1.0}, {"a": 2.2, "b": 3.8})
    assert moved == pytest.approx({"a": 0.1, "b": -0.05})
    assert median_abs(list(moved.values())) == pytest.approx(0.075)


def test_bad_settings_are_refused():
    machine = NoisyMachine()
    with pytest.raises(ValueError, match="the reference 'nothing' is not among the encoders"):
        measure(machine.encoders(), SENTENCES, "nothing", clock=machine.clock)
    with pytest.raises(ValueError, match="every must be at least 1, got 0"):
        measure(machine.encoders(), SENTENCES, "dense", every=0, clock=machine.clock)
