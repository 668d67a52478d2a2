"""The latency model: fitted to timed shapes, it predicts the time of shapes it was not fitted on;
its calibration shapes tell its coefficients apart; it is cached per machine."""

from __future__ import annotations

import pytest

from sparsecse.pruning.latency import (
    LatencyModel,
    Shape,
    cache_path,
    cached_latency,
    calibration_shapes,
    fit_latency,
    measure_latency,
    shape_key,
    time_shapes,
)

DENSE = Shape.dense(6, 12, 1536)
TRUE = (0.08, 0.04, 0.002, 0.00006)  # fixed, per layer, per head, per neuron (not relative yet)


def true_time(shape: Shape) -> float:
    return sum(c * x for c, x in zip(TRUE, shape.features()))


def relative(shapes) -> dict[Shape, float]:
    return {s: true_time(s) / true_time(DENSE) for s in shapes}


def test_the_calibration_shapes_vary_layers_heads_and_neurons():
    shapes = calibration_shapes(6, 12, 1536)
    assert DENSE in shapes and len(shapes) == 8
    assert {len(s.heads) for s in shapes} == {6, 3}
    assert {s.heads[0] for s in shapes} == {12, 3} and {s.ffn[0] for s in shapes} == {1536, 384}
    assert calibration_shapes(1, 1, 8) == [Shape((1,), (8,)), Shape((1,), (2,))]  # each shape once


def test_a_fit_to_exact_times_recovers_the_coefficients_and_predicts_other_shapes():
    model = fit_latency(DENSE, relative(calibration_shapes(6, 12, 1536)))
    dense_time = true_time(DENSE)
    assert [model.fixed, model.per_layer, model.per_head, model.per_neuron] == pytest.approx(
        [c / dense_time for c in TRUE], rel=1e-6
    )
    pruned = Shape((12, 8, 6, 5, 3, 1), (1536, 1024, 640, 512, 256, 64))  # not a calibration shape
    assert model.speedup(pruned) == pytest.approx(dense_time / true_time(pruned), rel=1e-6)
    assert model.speedup(DENSE) == pytest.approx(1.0)


def test_a_fit_to_noisy_times_stays_close():
    noise = [1.03, 0.98, 1.01, 0.97, 1.02, 0.99, 1.0, 1.03]
    shapes = calibration_shapes(6, 12, 1536)
    times = {s: t * n for (s, t), n in zip(relative(shapes).items(), noise)}
    model = fit_latency(DENSE, times)
    keep3 = Shape.dense(3, 12, 1536)
    assert model.speedup(keep3) == pytest.approx(true_time(DENSE) / true_time(keep3), rel=0.05)


def test_shapes_that_cannot_tell_the_coefficients_apart_are_refused():
    only_layers = [Shape.dense(n, 12, 1536) for n in (6, 5, 4, 3, 2)]
    with pytest.raises(ValueError, match="do not vary layers, heads and FFN neurons independently"):
        fit_latency(DENSE, relative(only_layers))
    with pytest.raises(ValueError, match="at least 4 timed shapes, got 2"):
        fit_latency(DENSE, relative(only_layers[:2]))


def test_a_shape_needs_one_head_count_and_width_per_layer():
    with pytest.raises(ValueError, match="one head count and one FFN width per layer"):
        Shape((12, 12), (1536,))
    assert shape_key(DENSE) == "6x12h1536f"
    assert shape_key(Shape((12, 3), (64, 64))) == "12h64f,3h64f"


def test_the_model_is_measured_once_per_machine_and_read_back_equal(tmp_path):
    calls = []

    def time_shapes(shapes):
        calls.append(len(shapes))
        return relative(shapes)

    machine = {"cpu": "AMD EPYC", "threads": "1", "runtime": "PyTorch", "model": shape_key(DENSE)}
    measure = lambda: measure_latency(time_shapes, DENSE, machine)  # noqa: E731
    first, cached = cached_latency(tmp_path, machine, measure)
    assert not cached and calls == [8]
    again, cached = cached_latency(tmp_path, machine, measure)
    assert cached and again == first and calls == [8]
    other = {**machine, "runtime": "int8"}
    assert cache_path(tmp_path, other) != cache_path(tmp_path, machine)
    _, cached = cached_latency(tmp_path, other, measure)
    assert not cached and calls == [8, 8]


def test_the_contention_of_its_timing_is_kept_with_the_model_and_earlier_models_still_read():
    import dataclasses
    import json

    from sparsecse.pruning.speed import Contention

    model = dataclasses.replace(fit_latency(DENSE, relative(calibration_shapes(6, 12, 1536))),
                                contention=Contention((1,), 0.3))  # fmt: skip
    assert LatencyModel.from_json(model.to_json()) == model
    earlier = json.loads(model.to_json())
    del earlier["contention"]
    assert LatencyModel.from_json(json.dumps(earlier)) == dataclasses.replace(model, contention=None)


@pytest.mark.parametrize("content", ["not json", '{"fixed": 1}', ""])
def test_a_broken_cache_file_is_measured_again(tmp_path, content):
    machine = {"cpu": "x"}
    path = cache_path(tmp_path, machine)
    path.parent.mkdir(parents=True)
    path.write_text(content)
    model, cached = cached_latency(tmp_path, machine, lambda: measure_latency(relative, DENSE, machine))
    assert not cached and LatencyModel.from_json(path.read_text()) == model


def test_each_shape_is_timed_on_a_copy_cut_to_it(make_encoder):
    """The runtime gets the uncut encoder, then one copy per shape with exactly that shape; the
    encoder itself is left whole."""
    from sparsecse.architecture.layout import encoder_layers, layer_structure

    encoder = make_encoder(num_hidden_layers=4)
    given = []

    def runtime(model):
        given.append([layer_structure(layer) for layer in encoder_layers(model.backbone)])
        return lambda texts: model.encode(list(texts), batch_size=8)

    shapes = calibration_shapes(4, 4, 64)
    times = time_shapes(encoder, shapes, runtime, ["a man plays a guitar ."] * 16, rounds=1, every=3)
    assert given[0] == [(4, 64)] * 4
    assert given[1:] == [list(zip(s.heads, s.ffn)) for s in shapes]
    assert set(times) == set(shapes) and all(t > 0 for t in times.values())
    assert [layer_structure(layer) for layer in encoder_layers(encoder.backbone)] == [(4, 64)] * 4
