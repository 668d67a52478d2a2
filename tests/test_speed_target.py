"""Pruning to a speed target: the option is checked against those it replaces before anything runs;
the allocation is applied to the encoder as planned; `sparsecse-prune pruning.target_speedup=X`
records and prints the speed-up asked, predicted and measured."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch
from helpers import TEXTS, compose_prune, stub_latency, synthetic_latency, views

from callbacks.pruning import ScheduledPruning
from sparsecse.architecture.layout import encoder_layers, layer_structure
from sparsecse.cli.prune import prune
from sparsecse.cli.prune_job import check_job
from sparsecse.core.errors import ConfigError
from sparsecse.pruning.removal import remove_pruned_units
from sparsecse.pruning.sparsifier import Sparsifier
from sparsecse.pruning.speed import Contention
from sparsecse.pruning.speed_target import SpeedTarget, encoder_shape, set_gates, speed_target_from

UNITS_OFF = ["pruning.head_sparsity=0", "pruning.ffn_sparsity=0"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["pruning.target_speedup=2"], "pruning.target_speedup: chooses the layers, heads and FFN neurons "
         "itself; leave pruning.head_sparsity=0.3, pruning.ffn_sparsity=0.3 out"),
        ([*UNITS_OFF, "layers.keep=1", "pruning.target_speedup=2"], "leave layers.keep=1 out"),
        ([*UNITS_OFF, "pruning.target_speedup=1"], "pruning.target_speedup: .*greater than 1"),
        ([*UNITS_OFF, "onnx=openvino-int8", "pruning.target_speedup=2"], "use onnx=int8 or onnx=none"),
    ],
)  # fmt: skip
def test_a_speed_target_beside_the_options_it_replaces_is_refused_before_anything_runs(
    overrides, message, tmp_path, toy_senteval_dir, tiny_model_dir
):
    out = tmp_path / "out"
    cfg = compose_prune([f"model={tiny_model_dir}", f"output_dir={out}", f"data_dir={toy_senteval_dir}",
                         *overrides])  # fmt: skip
    with pytest.raises(ConfigError, match=message):
        prune(cfg)
    assert not out.exists()


def test_the_runtime_timed_is_the_one_served():
    assert speed_target_from({"target_speedup": 2.0}, None, "int8", None).runtime == "int8"
    assert speed_target_from({"target_speedup": 2.0}, None, "fp32", None).runtime == "PyTorch"


def test_the_allocation_is_removed_from_the_encoder_as_planned(make_encoder):
    encoder = make_encoder(num_hidden_layers=4)
    dense = encoder_shape(encoder)
    sparsifier = Sparsifier(num_batches=1)
    sparsifier.attach(encoder)
    batch = views(encoder, TEXTS)
    allocation = SpeedTarget(2.0).prune(encoder, [batch], sparsifier, synthetic_latency(dense))
    assert allocation.predicted_speedup >= 2.0
    assert encoder.gates.kept_layers() == allocation.layers, "gated off first, as a training event leaves it"
    remove_pruned_units(encoder)
    layers = [layer_structure(layer) for layer in encoder_layers(encoder.backbone)]
    assert layers == list(zip(allocation.shape().heads, allocation.shape().ffn))
    assert encoder.gates is None and encoder.encode(TEXTS).shape == (3, 32)


def test_sparsecse_prune_to_a_speed_target(tmp_path, toy_senteval_dir, tiny_model_dir, monkeypatch, capsys):
    """The latency model is stubbed (a tiny model's times are mostly tokenisation); the speed-up
    reached is timed for real, and other processes are made to take half of its core meanwhile."""
    stub_latency(monkeypatch)

    @contextlib.contextmanager
    def half_taken():
        yield Contention((1,), 0.5)

    monkeypatch.setattr("sparsecse.pruning.speed_target.watch_contention", half_taken)
    out = tmp_path / "fast"
    cfg = compose_prune([f"model={tiny_model_dir}", "pooler=avg", *UNITS_OFF, "pruning.target_speedup=1.5",
                         "pruning.num_batches=1", "tasks=[stsb]", f"output_dir={out}",
                         f"data_dir={toy_senteval_dir}", "batch_size=8"])  # fmt: skip
    results = prune(cfg)
    speed = results["target_speedup"]
    assert speed["asked"] == 1.5 and speed["predicted"] >= 1.5 and speed["measured"] > 0
    assert speed["contention"] == 0.5
    assert (
        "other processes took 50% of core 1 while the speed-up was timed: no verdict"
        in capsys.readouterr().out
    )
    assert speed["runtime"] == "PyTorch"
    assert json.loads((out / "results.json").read_text())["target_speedup"] == speed
    # the exported model's shape, as the compression study reads it back (recorded_structure)
    from sparsecse.report.compression import recorded_structure

    exported = json.loads((out / "sparsecse.json").read_text())["structure"]
    assert recorded_structure(results) == (exported["heads"], exported["ffn"])
    assert results["sparsity"]["prune/layers"] == len(results["layers_kept"])
    card = (out / "README.md").read_text()
    assert f"Pruned to an encode speed-up of 1.5x over `{tiny_model_dir}` in PyTorch (predicted " in card
    assert torch.isfinite(torch.tensor(results["after"]["stsb"]))


def test_the_pruned_encoder_gives_the_embeddings_of_the_gated_one_with_its_dropped_layers_skipped(
    make_encoder,
):
    """Slicing the gated-off units and dropping the layers changes no embedding: the model a user
    gets encodes as the model the allocation scored (gates at 0, the dropped layers' residual
    updates skipped), and as the gated one a training event leaves."""
    from sparsecse.pruning.allocation import Allocation
    from sparsecse.pruning.layers import layer_gates

    encoder = make_encoder(num_hidden_layers=4).eval()
    Sparsifier().attach(encoder)
    heads = [torch.tensor([1, 0, 1, 1]).bool(), torch.ones(4).bool(), torch.tensor([0, 0, 1, 1]).bool(),
             torch.tensor([1, 1, 1, 0]).bool()]  # fmt: skip
    neurons = [
        (torch.arange(64) % 3 != 0),
        torch.ones(64).bool(),
        (torch.arange(64) < 16),
        torch.ones(64).bool(),
    ]
    allocation = Allocation([0, 2, 3], heads, neurons, predicted_speedup=1.5)
    with torch.no_grad():
        for gate, keep in zip([*encoder.gates.heads, *encoder.gates.neurons], [*heads, *neurons]):
            gate.copy_(keep.float())
        with layer_gates(encoder) as per_layer:
            per_layer[1].zero_()
            expected = encoder.encode(TEXTS)
    set_gates(encoder, allocation)
    torch.testing.assert_close(encoder.encode(TEXTS), expected, rtol=1e-5, atol=1e-6)  # layer gates skip
    remove_pruned_units(encoder)
    assert [layer_structure(layer) for layer in encoder_layers(encoder.backbone)] == [
        (3, 42),
        (2, 16),
        (3, 64),
    ]
    torch.testing.assert_close(encoder.encode(TEXTS), expected, rtol=1e-5, atol=1e-6)


def test_head_weight_reaches_the_allocation_from_the_cli_and_the_callback(tiny_model_dir):
    assert speed_target_from({"target_speedup": 2.0}, None, "none", None).head_weight == 4.0
    job = check_job(compose_prune([f"model={tiny_model_dir}", "output_dir=x", "pruning.head_sparsity=0",
                                   "pruning.ffn_sparsity=0", "pruning.target_speedup=2",
                                   "pruning.head_weight=2.5"]))  # fmt: skip
    assert job.speed_target.head_weight == 2.5 and job.sparsifier is not None
    pruning = ScheduledPruning([{"step": 1}], target_speedup=2.0, head_weight=1.5)
    assert pruning.speed.head_weight == 1.5
    with pytest.raises(ConfigError, match="head_weight: must be greater than 0"):
        ScheduledPruning([{"step": 1}], target_speedup=2.0, head_weight=0.0)


def test_the_latency_model_keeps_how_busy_the_machine_was_and_a_busy_one_is_named(make_encoder, tmp_path):
    """Timed for real on a tiny encoder (one round); the share is whatever this machine gave, so only
    the record and the warning's wording are checked, with a share set on a copy."""
    import dataclasses

    encoder = make_encoder().eval()
    target = SpeedTarget(2.0, rounds=1, sentences=8, cache_dir=str(tmp_path))
    latency, cached = target.latency(encoder, TEXTS * 4, tmp_path / "unused")
    assert not cached and latency.contention is not None and latency.contention.cores
    again, cached = target.latency(encoder, TEXTS * 4, tmp_path / "unused")
    assert cached and again == latency
    busy = dataclasses.replace(latency, contention=dataclasses.replace(latency.contention, share=0.4))
    warning = target.latency_warning(busy, tmp_path / "unused")
    assert "while the latency model was timed: no verdict; remove its file from " in warning
    assert warning.endswith(f"{tmp_path}/latency and run again on an idle machine")
    idle = dataclasses.replace(latency, contention=dataclasses.replace(latency.contention, share=0.0))
    assert target.latency_warning(idle, tmp_path) is None


def test_a_speed_target_allocates_among_structured_units_only(make_encoder):
    encoder = make_encoder()
    with pytest.raises(ConfigError, match="target_speedup: removes structured units: it needs granularity="):
        Sparsifier(granularity="unstructured").structured_units()
    assert Sparsifier(min_heads_per_layer=2).structured_units().min_heads_per_layer == 2
    assert Sparsifier().structured_units().ffn_multiple(encoder) == 1  # no gates yet: exact counts
