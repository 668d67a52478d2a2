"""Pruning to a speed target: the encoder's latency model in the runtime that will serve it (measured
once per machine and cached, sparsecse.pruning.latency), the layers, heads and FFN neurons that reach the
asked-for speed-up at the least alignment/uniformity importance (sparsecse.pruning.allocation), removed from
the encoder; and the speed-up measured afterwards, to print beside the predicted one.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from itertools import islice
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from sparsecse.architecture.layout import encoder_layers, layer_structure
from sparsecse.core.errors import ConfigError
from sparsecse.core.validation import PositiveFloat, PositiveInt, Speedup, checked
from sparsecse.pruning.allocation import HEAD_WEIGHT, Allocation, allocate, joint_importance
from sparsecse.pruning.latency import (
    LatencyModel,
    Runtime,
    Shape,
    cached_latency,
    measure_latency,
    shape_key,
    time_shapes,
)
from sparsecse.pruning.removal import remove_pruned_units
from sparsecse.pruning.schedule import check_speedup_alone, check_structured
from sparsecse.pruning.speed import Contention, cpu_name, measure, pinned, watch_contention

SpeedRuntime = Literal["PyTorch", "int8"]
ENCODE_BATCH = 64  # the batch users time (docs/compression.md)


def encoder_shape(encoder: nn.Module) -> Shape:
    layers = [layer_structure(layer) for layer in encoder_layers(encoder.backbone)]
    return Shape(tuple(h for h, _ in layers), tuple(f for _, f in layers))


Serve = Callable[[str, Path], Runtime]  # (runtime name, scratch folder) -> encoder -> its encode(texts)


def pytorch_encode(runtime: str, scratch: Path) -> Runtime:
    """An encoder -> its encode(texts) in PyTorch, the batch users time. The int8 graph is the export
    package's (`sparsecse.export.onnx_encoder.runtime_encode`, which the CLIs and the callback pass)."""
    if runtime != "PyTorch":
        raise ValueError(f"{runtime}: timing it needs sparsecse.export.onnx_encoder.runtime_encode")
    return lambda encoder: lambda texts: encoder.encode(list(texts), batch_size=ENCODE_BATCH)


class SpeedTarget:
    """Remove layers, heads and FFN neurons until the latency model predicts `target_speedup` over the
    encoder as given, in `runtime`; the latency model is timed on `rounds` rounds of `sentences`
    training sentences and cached under `cache_dir`/latency. Every timing runs on one thread pinned
    to one core (sparsecse.pruning.speed.pinned), the protocol whose speed-ups repeat within a few percent
    on a shared machine (docs/compression.md); the process's threads are as they were after.
    `head_weight` multiplies the heads' importance in the allocation (None: HEAD_WEIGHT, measured)."""

    @checked
    def __init__(
        self,
        target_speedup: Speedup,
        runtime: SpeedRuntime = "PyTorch",
        rounds: PositiveInt = 5,
        sentences: PositiveInt = 500,
        cache_dir: str | None = None,
        serve: Serve = pytorch_encode,
        head_weight: PositiveFloat | None = None,
    ):
        self.speedup, self.runtime, self.rounds, self.sentences = target_speedup, runtime, rounds, sentences
        self.head_weight = HEAD_WEIGHT if head_weight is None else head_weight
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.serve = serve  # how `runtime` encodes: the export package's for int8

    def machine(self, encoder: nn.Module) -> dict[str, str]:
        """What the latency model depends on: the cache key."""
        return {
            "cpu": cpu_name(),
            "threads": "1, pinned",
            "device": str(encoder.device),
            "runtime": self.runtime,
            "torch": torch.__version__,
            "model": shape_key(encoder_shape(encoder)),
        }

    def latency(
        self, encoder: nn.Module, corpus: Sequence[str], cache_dir: Path
    ) -> tuple[LatencyModel, bool]:
        """The encoder's latency model (and whether it came from the cache), timed on a copy with its
        gates made physical: the encoder as it would serve."""
        sentences = list(corpus)[: self.sentences]
        plain = copy.deepcopy(encoder)
        remove_pruned_units(plain)
        dense = encoder_shape(plain)

        watched = Contention(())

        def timed(shapes: Sequence[Shape]) -> dict[Shape, float]:
            nonlocal watched
            with tempfile.TemporaryDirectory() as scratch, pinned(), watch_contention() as watched:
                runtime = self.serve(self.runtime, Path(scratch))
                return time_shapes(plain, shapes, runtime, sentences, self.rounds)

        def fit() -> LatencyModel:
            return replace(measure_latency(timed, dense, machine), contention=watched)

        machine = self.machine(plain)
        return cached_latency(self.cache_root(cache_dir), machine, fit)

    def cache_root(self, default: Path) -> Path:
        """Where the latency models are cached: `cache_dir` if given, else the caller's default."""
        return self.cache_dir or default

    def latency_warning(self, latency: LatencyModel, cache_dir: Path) -> str | None:
        """A line for the user where other processes took enough of the core while the latency model
        was timed to make it no verdict; it names the cache it stays in."""
        where = f"{self.cache_root(cache_dir)}/latency"
        remedy = f"remove its file from {where} and run again on an idle machine"
        return latency.contention.warning("the latency model", remedy) if latency.contention else None

    def prune(
        self,
        encoder: nn.Module,
        batches: Iterable[dict[str, Tensor]],
        sparsifier,
        latency: LatencyModel,
        speedup: float | None = None,
        scoring: int = 0,
        rank: int = 0,
    ) -> Allocation:
        """Score every unit and layer (`joint_scores`), allocate to `speedup` (default the target) going
        on from what the gates keep, and set the gates to the allocation (`remove_pruned_units` then
        slices it out). The encoder carries its gates (`sparsifier.attach`)."""
        scores = joint_scores(encoder, batches, sparsifier, scoring, rank)
        allocation = self.allocation(encoder, scores, sparsifier, latency, speedup)
        set_gates(encoder, allocation)
        return allocation

    def allocation(self, encoder: nn.Module, scores, sparsifier, latency: LatencyModel,
                   speedup: float | None = None) -> Allocation:  # fmt: skip
        """What reaches `speedup` (default the target) at the least importance, from `scores` (heads,
        neurons, layers) and what the encoder's gates keep."""
        gates, units = encoder.gates, sparsifier.structured_units()
        return allocate(
            *scores, latency, speedup or self.speedup, units.min_heads_per_layer,
            units.ffn_multiple(encoder), alive_heads=[g != 0 for g in gates.heads],
            alive_neurons=[g != 0 for g in gates.neurons], alive_layers=gates.kept_layers(),
            head_weight=self.head_weight,
        )  # fmt: skip

    def measured(
        self, dense: nn.Module, pruned: nn.Module, corpus: Sequence[str]
    ) -> tuple[float, Contention]:
        """The pruned encoder's speed-up over `dense`, timed as the latency model was, and how much of
        the timing core other processes took meanwhile."""
        sentences = list(corpus)[: self.sentences]
        with tempfile.TemporaryDirectory() as scratch, pinned(), watch_contention() as watched:
            runtime = self.serve(self.runtime, Path(scratch))
            encoders = {"dense": runtime(dense), "pruned": runtime(pruned)}
            speedup = measure(encoders, sentences, "dense", self.rounds).speedups()["pruned"]
        return speedup, watched


def joint_scores(encoder: nn.Module, batches: Iterable[dict[str, Tensor]], sparsifier, scoring: int = 0,
                 rank: int = 0) -> tuple[list[Tensor], list[Tensor], Tensor]:  # fmt: skip
    """(heads, neurons, layers) importance on `sparsifier.num_batches` of `batches` (one pass; the score
    mode, seed and randomness `sparsifier.importance` scores with for event `scoring` on `rank`)."""
    with sparsifier.scoring_randomness(encoder, scoring, rank) as generator:
        batches = islice(batches, sparsifier.num_batches)
        return joint_importance(encoder, batches, sparsifier.scorer, generator)


@torch.no_grad()
def set_gates(encoder: nn.Module, allocation: Allocation) -> None:
    """Set the encoder's head, neuron and layer gates to what `allocation` keeps."""
    gates = encoder.gates
    for gate, keep in zip([*gates.heads, *gates.neurons], [*allocation.heads, *allocation.neurons]):
        gate.copy_(keep.to(gate.dtype))
    for i, layer_gate in enumerate(gates.layers):
        layer_gate.fill_(float(i in allocation.layers))


SPARSITIES = ("head_sparsity", "ffn_sparsity", "weight_sparsity")
HEAD_WEIGHT_KEY = "head_weight"  # the pruning node's option beside target_speedup


def speed_target_from(
    pruning: Mapping[str, object],
    layers_keep: int | None,
    onnx: str,
    cache_dir: str | None,
    serve: Serve = pytorch_encode,
) -> SpeedTarget:
    """The speed target of a pruning node (`target_speedup` beside the Sparsifier's options), checked
    against the options it replaces: the sparsities and `layers.keep` must be left off, and `onnx`
    must name a runtime the latency model times (PyTorch, or the int8 graph)."""
    key = "target_speedup"
    if onnx == "openvino-int8":
        raise ConfigError(key, "times PyTorch or the int8 ONNX graph: use onnx=int8 or onnx=none with it")
    given = [f"pruning.{name}={pruning[name]}" for name in SPARSITIES if pruning.get(name)]
    given += [f"layers.keep={layers_keep}"] if layers_keep else []
    check_speedup_alone(given)
    check_structured(pruning.get("granularity", "structured"))
    runtime = "int8" if onnx == "int8" else "PyTorch"
    return SpeedTarget(
        pruning[key], runtime, cache_dir=cache_dir, serve=serve, head_weight=pruning.get(HEAD_WEIGHT_KEY)
    )
