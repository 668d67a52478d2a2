"""Joint depth and width pruning to a speed target: which layers, heads and FFN neurons to remove so
that the latency model (sparsecse.pruning.latency) predicts the asked-for speed-up, keeping the most
importance.

The three kinds of unit are put on one scale by what they cost: each candidate removal (a whole
layer, a layer's least important head, a layer's least important block of FFN neurons) is valued
at its importance per unit of encode time it saves, and the cheapest-per-time removal goes first,
until the predicted time reaches the target. The importances themselves must be comparable across
kinds (`joint_importance`: the change of l_align and l_uniform when the unit goes, estimated to
first order for a head or neuron and measured for a layer, normalised once for all kinds). A layer's
saving is its fixed cost and the cost of every unit still in it, so a layer already thinned is
cheap to drop.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sparsecse.core.errors import ConfigError
from sparsecse.pruning.importance import Scorer, accumulate_gradients
from sparsecse.pruning.latency import LatencyModel, Shape
from sparsecse.pruning.layers import removal_stats


def joint_importance(
    encoder: nn.Module,
    batches: Iterable[dict[str, Tensor]],
    scorer: Scorer,
    generator: torch.Generator | None = None,
) -> tuple[list[Tensor], list[Tensor], Tensor]:
    """(heads: per layer (H_l,), neurons: per layer (F_l,), layers: (L,)) importance on `batches`: for
    every head and neuron the first-order estimate of the change of l_align and l_uniform its gate's
    removal brings (their gradients), for every layer the change measured when it is skipped
    (sparsecse.pruning.layers.removal_stats), scored by one `scorer` call over all three kinds. So each score
    is a change of the same losses, and `magnitude` normalises each criterion once for every unit:
    the kinds are on one scale. The encoder carries its unit gates (`Sparsifier.attach`)."""
    gates = encoder.gates
    units = [*gates.heads, *gates.neurons]

    def gradients():  # only for the modes that read them: the batches are read once, for both passes
        listed = list(batches)
        return accumulate_gradients(encoder, listed, units).joined(removal_stats(encoder, listed))

    layer_like = [torch.ones((), device=encoder.device) for _ in range(gates.num_layers)]
    scores = scorer.scores({"every unit": [*units, *layer_like]}, gradients, generator)["every unit"]
    n = gates.num_layers
    return scores[:n], scores[n : 2 * n], torch.stack(scores[2 * n :])


OVERSHOOT = 0.1  # a speed target is met within 10% (docs/compression.md)
HEAD_WEIGHT = 4.0  # chosen by measurement on MiniLM at 2.5x (METHOD.md section 8)


@dataclass(frozen=True)
class Allocation:
    """What a joint pruning event keeps: the layers (indices of the model's), and in each of the
    model's layers, 0/1 keep masks of its heads and FFN neurons (those of a dropped layer are
    whatever they were: the layer goes whole)."""

    layers: list[int]
    heads: list[Tensor]
    neurons: list[Tensor]
    predicted_speedup: float

    def shape(self) -> Shape:
        return kept_shape(self.layers, self.heads, self.neurons)


def kept_shape(layers: Sequence[int], heads: Sequence[Tensor], neurons: Sequence[Tensor]) -> Shape:
    """The shape `layers` leave, each with the heads and neurons its keep masks keep."""
    return Shape(tuple(int(heads[i].sum()) for i in layers), tuple(int(neurons[i].sum()) for i in layers))


@dataclass
class _Plan:
    """What an allocation keeps so far: the layers, and each layer's head and neuron keep masks."""

    kept: list[int]
    heads: list[Tensor]
    neurons: list[Tensor]

    def copy(self) -> _Plan:
        return _Plan(list(self.kept), [m.clone() for m in self.heads], [m.clone() for m in self.neurons])

    def shape(self) -> Shape:
        return kept_shape(self.kept, self.heads, self.neurons)


def allocate(
    heads: Sequence[Tensor],
    neurons: Sequence[Tensor],
    layers: Tensor,
    latency: LatencyModel,
    target_speedup: float,
    min_heads_per_layer: int = 1,
    ffn_multiple_of: int = 1,
    alive_heads: Sequence[Tensor] | None = None,
    alive_neurons: Sequence[Tensor] | None = None,
    alive_layers: Sequence[int] | None = None,
    head_weight: float = 1.0,
    overshoot: float = OVERSHOOT,
) -> Allocation:
    """The removals that reach `target_speedup` (predicted by `latency`) at the least importance
    removed per unit of time saved. heads: per layer (H_l,) importance; neurons: per layer (F_l,);
    layers: (L,); `alive_*`: keep masks of units already removed and the layers still kept (default:
    all alive), so that a later event of a schedule goes on from an earlier one's. Each kept
    layer keeps at least `min_heads_per_layer` heads and one block of `ffn_multiple_of` neurons, and
    its FFN width stays a multiple of `ffn_multiple_of` (METHOD.md section 5). `head_weight` multiplies
    the heads' importance: what the one scale of the scores misses, that distillation gives back less
    of a head's loss than of a layer's or a neuron's (METHOD.md section 8).

    A layer saves far more time than a head or a neuron block, so the removal that reaches the target
    may be a layer that overshoots it: the plan that removes it (then puts back what fits, see
    `best_to_put_back`) is compared whole with the plan that reaches the target with heads and neuron
    blocks alone from there, and the one removing less importance is kept, unless it is predicted
    faster than the target by more than `overshoot` (a share of it) while the other is not."""
    heads = [scores * head_weight for scores in heads]
    start = _Plan(
        list(range(len(layers))) if alive_layers is None else sorted(alive_layers),
        alive_masks(heads, alive_heads),
        alive_masks(neurons, alive_neurons),
    )
    budget = latency.time(latency.dense) / target_speedup
    units = (heads, neurons, min_heads_per_layer, ffn_multiple_of)
    plan, before_layer = _greedy(start.copy(), units, layers, latency, budget, with_layers=True)
    if plan is None:
        fastest = latency.speedup(before_layer.shape())
        why = f"the latency model predicts at most {fastest:.2f}x with one layer and the fewest units kept"
        raise ConfigError("target_speedup", f"{target_speedup}x is out of reach: {why}")
    plans = [_put_back(plan, start, units, latency, budget)]
    if before_layer is not None:  # the last removal was a layer that overshot
        narrower, _ = _greedy(before_layer, units, layers, latency, budget, with_layers=False)
        if narrower is not None:
            plans.append(_put_back(narrower, start, units, latency, budget))
    near = [p for p in plans if latency.speedup(p.shape()) <= target_speedup * (1 + overshoot)]
    best = min(near or plans, key=lambda p: _removed(p, start, heads, neurons, layers))
    return Allocation(best.kept, best.heads, best.neurons, latency.speedup(best.shape()))


def _greedy(plan: _Plan, units, layers: Tensor, latency: LatencyModel, budget: float, with_layers: bool):
    """Remove the least importance per time saved until the predicted time is within `budget`:
    (the plan, or None where nothing more can go; the plan before a last removal that was a layer
    overshooting the budget, or where nothing could go, the plan as far as it got)."""
    heads, neurons, min_heads, block = units
    block_saving = block * latency.per_neuron
    before_layer = None
    while latency.time(plan.shape()) > budget:
        best: tuple[float, str, int, float] | None = None
        for i in plan.kept:
            options = [  # (kind, importance removed, time saved)
                ("layer", float(layers[i]) if with_layers and len(plan.kept) > 1 else None,
                 layer_saving(latency, plan.heads[i], plan.neurons[i])),
                ("head", weakest(heads[i], plan.heads[i], 1, min_heads), latency.per_head),
                ("neurons", weakest(neurons[i], plan.neurons[i], block, block), block_saving),
            ]  # fmt: skip
            for kind, value, saving in options:
                if value is not None and saving > 0 and (best is None or value / saving < best[0]):
                    best = (value / saving, kind, i, saving)
        if best is None:
            return None, plan
        _, kind, i, saving = best
        if kind == "layer":
            overshoots = latency.time(plan.shape()) - saving < budget
            before_layer = plan.copy() if overshoots else None
            plan.kept.remove(i)
        elif kind == "head":
            plan.heads[i][lowest(heads[i], plan.heads[i], 1)] = False
        else:
            plan.neurons[i][lowest(neurons[i], plan.neurons[i], block)] = False
    return plan, before_layer


def _put_back(plan: _Plan, start: _Plan, units, latency: LatencyModel, budget: float) -> _Plan:
    heads, neurons, _, block = units
    candidates = [(heads, plan.heads, start.heads, 1, latency.per_head),
                  (neurons, plan.neurons, start.neurons, block, block * latency.per_neuron)]  # fmt: skip
    while (back := best_to_put_back(candidates, plan.kept, budget - latency.time(plan.shape()))) is not None:
        keep, index = back
        keep[index] = True
    return plan


def _removed(plan: _Plan, start: _Plan, heads, neurons, layers: Tensor) -> float:
    """The importance a plan removes: its dropped layers', and the units it removes from kept layers."""
    dropped = sum(float(layers[i]) for i in start.kept if i not in plan.kept)
    kinds = ((heads, plan.heads, start.heads), (neurons, plan.neurons, start.neurons))
    units = sum(
        float(scores[i][before[i] & ~keep[i]].sum()) for i in plan.kept for scores, keep, before in kinds
    )
    return dropped + units


def best_to_put_back(units, kept: Sequence[int], slack: float) -> tuple[Tensor, Tensor] | None:
    """After the last removal overshoots (a whole layer can save far more time than the target still
    needed), the removed head or neuron block of a kept layer worth the most importance per unit of
    time that still fits in the time left (`slack`): (its layer's keep mask, its indices), or None.
    units: (importance per layer, keep masks, the masks before this allocation, block, its time)."""
    best: tuple[float, Tensor, Tensor] | None = None
    for importance, keep, before, block, cost in units:
        if cost > slack:
            continue
        for i in kept:
            removed = before[i] & ~keep[i]
            if int(removed.sum()) < block:
                continue
            index = lowest(-importance[i], removed, block)  # the most important removed
            value = float(importance[i][index].sum()) / cost
            if best is None or value > best[0]:
                best = (value, keep[i], index)
    return None if best is None else best[1:]


def alive_masks(importance: Sequence[Tensor], alive: Sequence[Tensor] | None) -> list[Tensor]:
    """Boolean keep masks to edit: copies of `alive`, or all ones."""
    if alive is None:
        return [torch.ones_like(scores, dtype=torch.bool) for scores in importance]
    return [mask.bool().clone() for mask in alive]


def layer_saving(latency: LatencyModel, heads: Tensor, neurons: Tensor) -> float:
    """The time a layer's removal saves: its fixed cost and its remaining units'."""
    return latency.per_layer + latency.per_head * int(heads.sum()) + latency.per_neuron * int(neurons.sum())


def lowest(importance: Tensor, alive: Tensor, count: int) -> Tensor:
    """Indices of the `count` alive units of lowest importance."""
    ranked = importance.float().masked_fill(~alive, float("inf"))
    return torch.sort(ranked, stable=True).indices[:count]


def weakest(importance: Tensor, alive: Tensor, count: int, floor: int) -> float | None:
    """The summed importance of a layer's `count` least important alive units (a head, a block of
    neurons), or None where no more than `floor` are left (the rest goes only with its layer)."""
    if int(alive.sum()) <= floor:
        return None
    return float(importance[lowest(importance, alive, count)].sum())
