"""A latency model: an encoder's encode time as a function of its shape, on the machine and in the
runtime that serve it, so that a user can ask for a speed-up instead of a sparsity.

The encode time of a model with L layers, layer l keeping h_l heads and f_l FFN neurons, relative
to the dense model's (dense = 1):

    t = fixed + sum_l (per_layer + per_head * h_l + per_neuron * f_l)

`fixed` is what no pruning shrinks (tokenisation, embeddings, pooling); `per_layer` is a layer's
cost that no unit removal shrinks: the residual adds and layer norms over the hidden size, the
attention's reshapes, the kernel launches. Why the model needs it: width pruning leaves these costs
whole, and they are a third of a width-pruned int8 graph's time (bench/RESULTS.md, the int8
profile), so a model that counted heads and neurons alone would promise speed-ups no pruning can
give. The four coefficients are fitted by least squares to the measured times of the encoder cut
to a few calibration shapes (`calibration_shapes`), each timed against the dense model with
`sparsecse.pruning.speed` (the dense model timed around each), once per machine and runtime, and cached.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from sparsecse.core.writing import write_text
from sparsecse.pruning.removal import cut_to_structure
from sparsecse.pruning.speed import Contention, Encode, measure

Runtime = Callable[[nn.Module], Encode]  # an encoder -> its encode(texts), in the runtime that serves it


@dataclass(frozen=True)
class Shape:
    """An encoder's shape: per kept layer, its heads and its FFN neurons."""

    heads: tuple[int, ...]
    ffn: tuple[int, ...]

    def __post_init__(self):
        if len(self.heads) != len(self.ffn) or not self.heads:
            raise ValueError(
                f"need one head count and one FFN width per layer, got {self.heads} and {self.ffn}"
            )

    @classmethod
    def dense(cls, layers: int, heads: int, ffn: int) -> Shape:
        return cls((heads,) * layers, (ffn,) * layers)

    def features(self) -> list[float]:
        """[1, layers, heads, FFN neurons]: what the latency model's coefficients multiply."""
        return [1.0, float(len(self.heads)), float(sum(self.heads)), float(sum(self.ffn))]


def calibration_shapes(layers: int, heads: int, ffn: int) -> list[Shape]:
    """The shapes timed to fit the latency model: all layers and about half of them, each with all,
    a quarter of its heads, all and a quarter of its FFN neurons, so that the four coefficients are
    told apart (the count of layers moves `per_layer`, heads and neurons move independently)."""
    depths = sorted({layers, max(1, layers // 2)}, reverse=True)
    few_heads, few_neurons = max(1, heads // 4), max(1, ffn // 4)
    widths = [(h, f) for h in (heads, few_heads) for f in (ffn, few_neurons)]
    shapes = (Shape((h,) * depth, (f,) * depth) for depth in depths for h, f in widths)
    return list(dict.fromkeys(shapes))  # a one-head or one-layer model has fewer distinct ones


@dataclass(frozen=True)
class LatencyModel:
    """Relative encode time (dense = 1) = fixed + per layer + per head + per FFN neuron (module
    docstring); `dense` is the shape of the model it was measured on, `measured` the calibration
    shapes' relative times, `machine` what it was measured on (the cache key's parts), `contention`
    how much of the timing cores other processes took meanwhile (sparsecse.pruning.speed)."""

    fixed: float
    per_layer: float
    per_head: float
    per_neuron: float
    dense: Shape
    measured: dict[str, float]
    machine: dict[str, str]
    contention: Contention | None = None

    def time(self, shape: Shape) -> float:
        coefficients = (self.fixed, self.per_layer, self.per_head, self.per_neuron)
        return sum(c * x for c, x in zip(coefficients, shape.features()))

    def speedup(self, shape: Shape) -> float:
        """The shape's predicted encode speed-up over the dense model."""
        return self.time(self.dense) / self.time(shape)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> LatencyModel:
        data = json.loads(text)
        data["dense"] = Shape(tuple(data["dense"]["heads"]), tuple(data["dense"]["ffn"]))
        if data.get("contention") is not None:  # absent from the models of earlier versions
            data["contention"] = Contention(tuple(data["contention"]["cores"]), data["contention"]["share"])
        return cls(**data)


def shape_key(shape: Shape) -> str:
    """A calibration shape as `measured` records it: `6x12h1536f`, or per layer when they differ."""
    if len(set(zip(shape.heads, shape.ffn))) == 1:
        return f"{len(shape.heads)}x{shape.heads[0]}h{shape.ffn[0]}f"
    return ",".join(f"{h}h{f}f" for h, f in zip(shape.heads, shape.ffn))


def fit_latency(
    dense: Shape, relative_times: Mapping[Shape, float], machine: Mapping[str, str] | None = None
) -> LatencyModel:
    """The least-squares coefficients over the timed shapes (their times relative to `dense`'s)."""
    shapes = list(relative_times)
    if len(shapes) < 4:
        raise ValueError(f"four coefficients need at least 4 timed shapes, got {len(shapes)}")
    features = torch.tensor([s.features() for s in shapes], dtype=torch.float64)  # (S, 4)
    times = torch.tensor([relative_times[s] for s in shapes], dtype=torch.float64)  # (S,)
    if torch.linalg.matrix_rank(features) < 4:
        raise ValueError("the timed shapes do not vary layers, heads and FFN neurons independently")
    coefficients = torch.linalg.lstsq(features, times[:, None]).solution[:, 0].tolist()
    measured = {shape_key(s): round(relative_times[s], 5) for s in shapes}
    return LatencyModel(*coefficients, dense=dense, measured=measured, machine=dict(machine or {}))


def measure_latency(
    time_shapes: Callable[[Sequence[Shape]], Mapping[Shape, float]],
    dense: Shape,
    machine: Mapping[str, str],
) -> LatencyModel:
    """Fit the latency model to `time_shapes(shapes)`: each calibration shape's encode time relative
    to the dense model's, measured in the runtime that will serve the model (the caller's)."""
    shapes = calibration_shapes(len(dense.heads), max(dense.heads), max(dense.ffn))
    return fit_latency(dense, time_shapes(shapes), machine)


def time_shapes(
    encoder: nn.Module,
    shapes: Sequence[Shape],
    runtime: Runtime,
    sentences: Sequence[str],
    rounds: int = 5,
    every: int = 2,
) -> dict[Shape, float]:
    """Each shape's encode time relative to the uncut `encoder`'s, in `runtime`: copies of the encoder
    cut to each shape (its first layers and first units: encode time depends on the shapes alone,
    docs/compression.md), timed against it with `sparsecse.pruning.speed` (the uncut encoder around every
    `every` shapes, the median over `rounds`)."""
    reference = "uncut"
    encoders = {reference: runtime(encoder)}
    for shape in shapes:
        cut = copy.deepcopy(encoder)
        cut_to_structure(cut, shape.heads, shape.ffn)
        encoders[shape_key(shape)] = runtime(cut)
    speedups = measure(encoders, sentences, reference, rounds, every).speedups()
    return {shape: 1.0 / speedups[shape_key(shape)] for shape in shapes}


def cache_path(cache_dir: Path, machine: Mapping[str, str]) -> Path:
    """One file per machine, runtime, thread count and model shape (`machine` holds them all)."""
    digest = hashlib.sha256(json.dumps(dict(machine), sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir) / "latency" / f"{digest}.json"


def cached_latency(
    cache_dir: Path,
    machine: Mapping[str, str],
    measure: Callable[[], LatencyModel],
) -> tuple[LatencyModel, bool]:
    """The latency model cached for `machine`, else `measure()`, cached; and whether it was cached.
    A cache file that does not read as a model of this machine is measured again, never used."""
    path = cache_path(cache_dir, machine)
    if path.is_file():
        try:
            model = LatencyModel.from_json(path.read_text())
            if model.machine == dict(machine) and math.isfinite(model.time(model.dense)):
                return model, True
        except (ValueError, TypeError, KeyError):
            pass
    model = measure()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, model.to_json())
    return model, False
