"""Sparsification schedules and the sparsifier that carries out one event (METHOD.md section 5)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Literal

import torch
from torch import Tensor
from typing_extensions import TypedDict

from sparsecse.errors import ConfigError
from sparsecse.gates import UnitGates, WeightMasks, encoder_layers, head_size
from sparsecse.importance import (
    Scorer,
    accumulate_gradients,
    derived_seed,
    normalize_per_layer,
    select_kept,
    weight_magnitude_scores,
)
from sparsecse.validation import STRICT_RECORD, Fraction, NonNegativeInt, PositiveInt, check_value

GRANULARITIES = ("structured", "unstructured")
Granularity = Literal[GRANULARITIES]
TARGETS = {"structured": ("head_sparsity", "ffn_sparsity"), "unstructured": ("weight_sparsity",)}


class EventTime(TypedDict, total=False):
    """When: `{epoch: E}` or `{step: S}`."""

    __pydantic_config__ = STRICT_RECORD
    epoch: NonNegativeInt | None
    step: NonNegativeInt | None


class ScheduleEvent(EventTime, total=False):
    """A `schedule` entry: when, and optionally its own cumulative targets."""

    __pydantic_config__ = STRICT_RECORD
    head_sparsity: Fraction
    ffn_sparsity: Fraction
    weight_sparsity: Fraction


def check_granularity(granularity: str) -> str:
    check_value("granularity", granularity, Granularity)
    return granularity


@dataclass(frozen=True)
class PruningEvent:
    """Reach these cumulative sparsities when `at` epochs (or steps) of training are done."""

    unit: str  # "epoch" or "step"
    at: int
    head_sparsity: float = 0.0
    ffn_sparsity: float = 0.0
    weight_sparsity: float = 0.0

    @property
    def targets(self) -> tuple[float, float, float]:
        return (self.head_sparsity, self.ffn_sparsity, self.weight_sparsity)


def _fraction(value, key: str) -> float:
    check_value(key, value, Fraction)
    return float(value)


def _event_time(entry: Mapping, key: str) -> tuple[str, int]:
    units = [u for u in ("epoch", "step") if entry.get(u) is not None]
    if len(units) != 1:
        raise ConfigError(key, f"needs exactly one of `epoch` or `step`, got {dict(entry)}")
    check_value(f"{key}.{units[0]}", entry[units[0]], NonNegativeInt)
    return units[0], entry[units[0]]


def build_schedule(schedule: Sequence[Mapping], granularity: str, **final: float) -> list[PruningEvent]:
    """Events from `schedule` entries (`{epoch: E}` or `{step: S}`, optionally with their own
    targets). An entry without a target ramps linearly: event k of K reaches k/K of `final`."""
    check_granularity(granularity)
    for name, value in final.items():
        if name not in TARGETS[granularity] and value:
            raise ConfigError(name, f"applies to {'un' * (granularity == 'structured')}structured pruning, "
                              f"not to granularity={granularity}")  # fmt: skip
    final = {name: _fraction(final.get(name, 0.0), name) for name in TARGETS[granularity]}
    if not schedule:
        raise ConfigError("schedule", "is empty; give at least one event such as [{epoch: 1}]")
    events, previous = [], {name: 0.0 for name in final}
    for k, entry in enumerate(schedule):
        key = f"schedule[{k}]"
        unknown = set(entry) - {"epoch", "step", *final}
        if unknown:
            raise ConfigError(key, f"unknown field {sorted(unknown)[0]!r} for {granularity} pruning")
        unit, at = _event_time(entry, key)
        if events and unit != events[0].unit:
            raise ConfigError(f"{key}.{unit}", "mixes epochs and steps; use one kind for every event")
        if events and at <= events[-1].at:
            raise ConfigError(f"{key}.{unit}", f"must come after the previous event ({events[-1].at})")
        targets = {}
        for name, goal in final.items():
            value = entry.get(name, goal * (k + 1) / len(schedule))
            targets[name] = _fraction(value, f"{key}.{name}")
            if targets[name] < previous[name]:
                raise ConfigError(f"{key}.{name}", f"decreases ({previous[name]} -> {targets[name]}); "
                                  "targets are cumulative")  # fmt: skip
        events.append(PruningEvent(unit, at, **targets))
        previous = targets
    return events


def check_schedule_fits(
    events: Sequence[PruningEvent], max_epochs: int | None, max_steps: int | None
) -> None:
    """An event at the last epoch (or step) runs when training ends; one after it never would."""
    for k, event in enumerate(events):
        limit = max_epochs if event.unit == "epoch" else max_steps
        if limit is not None and limit >= 0 and event.at > limit:
            raise ConfigError(f"schedule[{k}].{event.unit}", f"{event.at} is after the last {event.unit} "
                              f"of training ({limit})")  # fmt: skip


class Sparsifier:
    """Scores units on positive pairs and sets gates (or masks) to reach an event's sparsity."""

    def __init__(
        self,
        granularity: str = "structured",
        score: str = "magnitude",
        uniformity_weight: float = 1.0,  # lambda, METHOD.md section 4
        num_batches: int = 8,
        min_heads_per_layer: int = 1,  # a layer with no heads crashes CUDA SDPA
        normalize_head_scores: bool = False,
        seed: int = 0,
    ):
        self.granularity = check_granularity(granularity)
        self.scorer = Scorer(score, uniformity_weight)
        self.seed = seed
        check_value("num_batches", num_batches, PositiveInt)
        check_value("min_heads_per_layer", min_heads_per_layer, NonNegativeInt)
        self.num_batches, self.min_heads_per_layer = num_batches, min_heads_per_layer
        self.normalize_head_scores = normalize_head_scores

    def check_model(self, config) -> None:
        """Settings that depend on the model, checked on its config before any weights load."""
        if self.granularity == "structured" and self.min_heads_per_layer > config.num_attention_heads:
            raise ConfigError("min_heads_per_layer", f"{self.min_heads_per_layer} is more than the model's "
                              f"{config.num_attention_heads} heads per layer")  # fmt: skip
        if self.granularity == "structured" and self.min_heads_per_layer < 1:
            raise ConfigError("min_heads_per_layer", "must be at least 1: a layer with no heads crashes SDPA")

    def check_reachable(self, config, event: PruningEvent) -> None:
        """Head sparsity is capped by the per-layer minimum: at most 1 - min / heads."""
        if self.granularity != "structured":
            return
        cap = 1.0 - self.min_heads_per_layer / config.num_attention_heads
        if event.head_sparsity > cap + 1e-9:
            limit = f"min_heads_per_layer={self.min_heads_per_layer} allows at most {cap:.4f}"
            raise ConfigError("head_sparsity", f"{event.head_sparsity} is out of reach: {limit}")

    def attach(self, encoder) -> None:
        """Give the encoder its gates (structured) or weight masks (unstructured), all ones."""
        if self.granularity == "structured" and encoder.gates is None:
            encoder.gates = UnitGates(encoder.backbone).to(encoder.device)
        if self.granularity == "unstructured" and encoder.masks is None:
            encoder.masks = WeightMasks(encoder.backbone).to(encoder.device)

    def importance(
        self, encoder, batches: Iterable[dict[str, Tensor]], event: int = 0, rank: int = 0
    ) -> dict[str, list[Tensor]]:
        """{"heads": [(H_l,)], "neurons": [(F_l,)]} or {"weights": [(out, in) per Linear]}.

        Scored in float32, whatever autocast the caller runs under (training under bf16/fp16 and
        `sparsecse-prune` select the same units). Randomness is drawn afresh for each event: dropout
        from (seed, event, rank), random scores from (seed, event), the same on every rank. So a run
        resumed before an event scores exactly as the uninterrupted run did.
        """
        generator = torch.Generator().manual_seed(derived_seed(self.seed, event))
        device = encoder.device
        cuda = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda), torch.autocast(device.type, enabled=False):
            torch.manual_seed(derived_seed(self.seed, event, rank))
            return self._importance(encoder, islice(batches, self.num_batches), generator)

    def _importance(self, encoder, batches, generator: torch.Generator) -> dict[str, list[Tensor]]:
        if self.granularity == "unstructured":
            weights = [linear.weight for linear in encoder.masks.linears.values()]
            if self.scorer.mode == "weight_magnitude":
                return {"weights": [w.detach().abs().float() for w in weights]}
            stats = (
                accumulate_gradients(encoder, batches, weights, taylor=True)
                if self.scorer.needs_gradients()
                else None
            )
            return {"weights": self.scorer(stats, weights, generator)}
        if self.scorer.mode == "weight_magnitude":
            scores = weight_magnitude_scores(encoder.backbone)
        else:
            gates = encoder.gates
            stats = (
                accumulate_gradients(encoder, batches, gates.tensors())
                if self.scorer.needs_gradients()
                else None
            )
            n = gates.num_layers
            heads = None if stats is None else stats.subset(slice(0, n))
            neurons = None if stats is None else stats.subset(slice(n, 2 * n))
            scores = {
                "heads": self.scorer(heads, gates.heads, generator),
                "neurons": self.scorer(neurons, gates.neurons, generator),
            }
        if self.normalize_head_scores:
            scores["heads"] = normalize_per_layer(scores["heads"])
        return scores

    def removals(self, encoder, event: PruningEvent) -> dict[str, int]:
        """How many more units of each kind the event removes: its cumulative target less what is gone."""
        if self.granularity == "unstructured":
            return {
                "weights": _more(
                    event.weight_sparsity, [encoder.masks.mask(k) for k in encoder.masks.linears]
                )
            }
        gates = encoder.gates
        return {
            "heads": _more(event.head_sparsity, [g != 0 for g in gates.heads]),
            "neurons": _more(event.ffn_sparsity, [g != 0 for g in gates.neurons]),
        }

    @torch.no_grad()
    def apply(self, encoder, event: PruningEvent, importance: Mapping[str, list[Tensor]]) -> dict[str, float]:
        """Remove the least important units until the event's cumulative targets are reached."""
        n_remove = self.removals(encoder, event)
        if self.granularity == "unstructured":
            masks = encoder.masks
            keys = list(masks.linears)
            alive = [masks.mask(k).flatten() for k in keys]
            kept = select_kept([s.flatten() for s in importance["weights"]], alive, n_remove["weights"])
            for key, keep in zip(keys, kept):
                masks.set(key, keep.view_as(masks.mask(key)))
            return sparsity_summary(encoder)
        gates = encoder.gates
        for name, gate_list, floor in (
            ("heads", gates.heads, self.min_heads_per_layer),
            ("neurons", gates.neurons, 0),
        ):
            kept = select_kept(importance[name], [g != 0 for g in gate_list], n_remove[name], floor)
            for gate, keep in zip(gate_list, kept):
                gate.copy_(keep.to(gate.dtype))
        return sparsity_summary(encoder)


def _more(target: float, alive: Sequence[Tensor]) -> int:
    """Units to remove from `alive` (keep masks) so that `target` of all of them are gone."""
    total = sum(a.numel() for a in alive)
    return max(round(target * total) - sum(int((~a.bool()).sum()) for a in alive), 0)


def pruned_any(encoder) -> bool:
    """Whether any head, neuron or weight is gated or masked off (events that removed nothing leave none)."""
    if encoder.masks is not None and encoder.masks.sparsity() > 0:
        return True
    return encoder.gates is not None and any(bool((g == 0).any()) for g in encoder.gates.tensors())


def effective_parameters(encoder) -> int:
    """Parameters of the transformer layers that still count: gated-off heads and neurons, masked
    weights and already-sliced units excluded (embeddings and pooler are not units)."""
    layers = encoder_layers(encoder.backbone)
    total = sum(p.numel() for p in layers.parameters())
    if encoder.masks is not None:
        return total - sum(int((~encoder.masks.mask(k)).sum()) for k in encoder.masks.linears)
    if encoder.gates is None:
        return total
    for layer, head_gate, neuron_gate in zip(layers, encoder.gates.heads, encoder.gates.neurons):
        d, hidden = head_size(layer), layer.attention.output.dense.out_features
        per_head = 3 * (hidden * d + d) + d * hidden  # q, k, v rows (+ biases) and output columns
        per_neuron = hidden + 1 + hidden  # FFN input row (+ bias) and output column
        total -= int((head_gate == 0).sum()) * per_head + int((neuron_gate == 0).sum()) * per_neuron
    return total


def counted_parameters(encoder) -> int:
    """Parameters of the whole encoder (embeddings and pooler included) that still count."""
    every = sum(p.numel() for p in encoder.parameters())
    layers = sum(p.numel() for p in encoder_layers(encoder.backbone).parameters())
    return every - layers + effective_parameters(encoder)


def sparsity_summary(encoder) -> dict[str, float]:
    """What the pruning callback logs: overall sparsities, kept units per layer, parameters."""
    summary: dict[str, float] = {"prune/encoder_parameters": float(effective_parameters(encoder))}
    if encoder.masks is not None:
        summary["prune/weight_sparsity"] = encoder.masks.sparsity()
    if encoder.gates is not None:
        counts = encoder.gates.counts()
        heads = sum(g.numel() for g in encoder.gates.heads)
        neurons = sum(g.numel() for g in encoder.gates.neurons)
        summary["prune/head_sparsity"] = 1.0 - sum(counts["heads"]) / heads
        summary["prune/ffn_sparsity"] = 1.0 - sum(counts["neurons"]) / neurons
        for i, (h, n) in enumerate(zip(counts["heads"], counts["neurons"])):
            summary[f"prune/heads_layer{i}"] = float(h)
            summary[f"prune/neurons_layer{i}"] = float(n)
    return summary


def remove_pruned_units(encoder) -> None:
    """End of sparsification: slice gated-off heads and neurons out of the backbone (METHOD.md 5)
    and drop the gates; weight masks are dropped too, their zeros stay in the weights."""
    from sparsecse.surgery import apply_gates

    apply_gates(encoder)
    if encoder.masks is not None:
        encoder.masks.apply_masks()
        encoder.masks = None
