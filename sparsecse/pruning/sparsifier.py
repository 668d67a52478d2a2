"""Sparsification from importance scores (METHOD.md 5): the units an event keeps at exactly the requested
sparsity, what an event asks (`PruningEvent`; sparsecse.pruning.schedule makes a schedule's), and
`Sparsifier`, which scores and applies an event's gates or masks."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from typing import Literal

import torch
from torch import Tensor

from sparsecse.core.errors import ConfigError
from sparsecse.core.validation import Fraction, PositiveInt, check_value, checked
from sparsecse.model.loading import check_supported
from sparsecse.pruning.gates import UnitGates, WeightMasks, sparsity_summary
from sparsecse.pruning.importance import (
    ScoreMode,
    Scorer,
    accumulate_gradients,
    derived_seed,
    forked_rng,
    normalize_per_layer,
    weight_magnitude_scores,
)


def select_kept(
    importance: Sequence[Tensor], alive: Sequence[Tensor], n_remove: int, min_per_layer: int = 0
) -> list[Tensor]:
    """Global ranking across layers: remove the `n_remove` alive units of lowest importance while
    at least `min_per_layer` stay alive in every layer. Returns the new 0/1 keep masks."""
    flat_scores = []
    for scores, keep in zip(importance, alive):
        keep = keep.bool()
        protect = min(min_per_layer, int(keep.count_nonzero()))
        best = scores.float().masked_fill(~keep, float("-inf")).topk(protect).indices
        scores = scores.float().masked_fill(~keep, float("inf"))  # the dead stay dead
        scores[best] = float("inf")  # each layer keeps its best `protect` alive units
        flat_scores.append(scores)
    flat = torch.cat(flat_scores)
    removable = int(torch.isfinite(flat).sum())
    if n_remove > removable:
        raise ConfigError(
            "sparsity", f"cannot remove {n_remove} more units: only {removable} are removable "
            f"with at least {min_per_layer} kept per layer")  # fmt: skip
    order = torch.sort(flat, stable=True).indices[:n_remove]
    new_keep = torch.cat([k.bool() for k in alive]).clone()
    new_keep[order] = False
    return list(new_keep.split([len(k) for k in alive]))


def aligned_counts(kept: Sequence[int], alive: Sequence[int], multiple_of: int) -> list[int]:
    """Per-layer kept counts rounded to multiples of `multiple_of`, their total as near as can be to
    the unrounded total: each layer keeps its whole multiples, and the layers with the largest
    remainders keep one more multiple each (Hamilton's largest-remainder rounding). A layer never
    keeps more than it has alive."""
    floors = [count // multiple_of * multiple_of for count in kept]
    extra = round(sum(kept) / multiple_of) - sum(floors) // multiple_of
    eligible = [i for i in range(len(kept)) if floors[i] + multiple_of <= alive[i]]
    for i in sorted(eligible, key=lambda i: -(kept[i] - floors[i]))[: max(extra, 0)]:
        floors[i] += multiple_of
    return floors


def keep_top(importance: Sequence[Tensor], alive: Sequence[Tensor], counts: Sequence[int]) -> list[Tensor]:
    """In each layer, keep its `counts[l]` alive units of highest importance."""
    kept = []
    for scores, keep, count in zip(importance, alive, counts):
        ranked = scores.float().masked_fill(~keep.bool(), float("-inf"))
        new_keep = torch.zeros_like(keep, dtype=torch.bool)
        new_keep[torch.sort(ranked, descending=True, stable=True).indices[:count]] = True
        kept.append(new_keep)
    return kept


# The selection: from importances to the units an event removes (METHOD.md section 5).

GRANULARITIES = ("structured", "unstructured")
Granularity = Literal[GRANULARITIES]
TARGETS = {"structured": ("head_sparsity", "ffn_sparsity"), "unstructured": ("weight_sparsity",)}


def check_granularity(granularity: str) -> str:
    check_value("granularity", granularity, Granularity)
    return granularity


@dataclass(frozen=True)
class PruningEvent:
    """Reach these cumulative sparsities (or this encode speed-up over the dense model, removing
    layers, heads and FFN neurons: sparsecse.pruning.speed_target) when `at` epochs (or steps) are done."""

    unit: str  # "epoch" or "step"
    at: int
    head_sparsity: float = 0.0
    ffn_sparsity: float = 0.0
    weight_sparsity: float = 0.0
    speedup: float | None = None

    @property
    def targets(self) -> tuple[float, float, float]:
        return (self.head_sparsity, self.ffn_sparsity, self.weight_sparsity)


def event_targets(granularity: str, **final: float) -> dict[str, float]:
    """The cumulative targets an event of this granularity takes (`head_sparsity` and `ffn_sparsity`,
    or `weight_sparsity`), each a fraction in [0, 1); a target of the other granularity is refused."""
    check_granularity(granularity)
    for name, value in final.items():
        if name not in TARGETS[granularity] and value:
            other = "unstructured" if granularity == "structured" else "structured"
            raise ConfigError(name, f"applies to {other} pruning, not to granularity={granularity}")
    for name in TARGETS[granularity]:
        check_value(name, final.get(name, 0.0), Fraction)
    return {name: float(final.get(name, 0.0)) for name in TARGETS[granularity]}


def one_shot_event(granularity: str, **targets: float) -> PruningEvent:
    """The single event of a sparsification after training (no schedule): these targets, now."""
    return PruningEvent("step", 0, **event_targets(granularity, **targets))


ALIGN_MIN_MULTIPLES = 8  # FFN widths are rounded only in models at least this many multiples wide


class Sparsifier:
    """Scores units on positive pairs and sets gates (or masks) to reach an event's sparsity."""

    @checked
    def __init__(
        self,
        granularity: Granularity = "structured",
        score: ScoreMode = "magnitude",
        uniformity_weight: float = 1.0,  # lambda, METHOD.md section 4
        num_batches: PositiveInt = 8,  # batches of positive pairs the scores are summed over
        min_heads_per_layer: PositiveInt = 1,  # a layer with no heads crashes CUDA SDPA
        ffn_multiple_of: PositiveInt = 64,  # every layer's FFN width a multiple of this (METHOD.md 5)
        normalize_head_scores: bool = False,  # per-layer L2 normalisation (Michel et al. 2019)
        seed: int = 0,  # scoring dropout and random scores, with the event index (and rank)
    ):
        self.granularity = granularity
        self.scorer = Scorer(score, uniformity_weight)
        self.seed = seed
        self.num_batches, self.min_heads_per_layer = num_batches, min_heads_per_layer
        self.ffn_multiple_of = ffn_multiple_of
        self.normalize_head_scores = normalize_head_scores

    def ffn_multiple(self, encoder) -> int:
        """The multiple this encoder's FFN widths are kept at: `ffn_multiple_of`, or 1 (exact counts)
        where the FFN is narrower than ALIGN_MIN_MULTIPLES multiples, as in a test-sized model:
        rounding would there move the sparsity far from the target, for GEMMs too small to gain."""
        if self.granularity != "structured" or encoder.gates is None:
            return 1
        width = max(len(g) for g in encoder.gates.neurons)
        return self.ffn_multiple_of if width >= ALIGN_MIN_MULTIPLES * self.ffn_multiple_of else 1

    def check_model(self, config) -> None:
        """Settings that depend on the model, checked on its config before any weights load."""
        check_supported(config, "model")
        if self.granularity == "structured" and self.min_heads_per_layer > config.num_attention_heads:
            raise ConfigError("min_heads_per_layer", f"{self.min_heads_per_layer} is more than the model's "
                              f"{config.num_attention_heads} heads per layer")  # fmt: skip

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
        self, encoder, batches: Iterable[dict[str, Tensor]], scoring: int = 0, rank: int = 0
    ) -> dict[str, list[Tensor]]:
        """{"heads": [(H_l,)], "neurons": [(F_l,)]} or {"weights": [(out, in) per Linear]}.

        Scored in float32, whatever autocast the caller runs under (training under bf16/fp16 and
        `sparsecse-prune` select the same units). Randomness is drawn afresh for each `scoring` of a
        run (a pruning event's index; the step of an importance picture): dropout from (seed, scoring,
        rank), random scores from (seed, scoring), the same on every rank. So a run resumed before an
        event scores exactly as the uninterrupted run did.
        """
        with self.scoring_randomness(encoder, scoring, rank) as generator:
            return self._importance(encoder, islice(batches, self.num_batches), generator)

    @contextmanager
    def scoring_randomness(self, encoder, scoring: int = 0, rank: int = 0) -> Iterator[torch.Generator]:
        """Within: float32 (no autocast), dropout drawn from (seed, scoring, rank), and the process's
        random state restored after; yields the generator of random scores, from (seed, scoring)."""
        generator = torch.Generator().manual_seed(derived_seed(self.seed, scoring))
        device = encoder.device
        with forked_rng(device), torch.autocast(device.type, enabled=False):
            torch.manual_seed(derived_seed(self.seed, scoring, rank))
            yield generator

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
                "weights": _units_to_remove(
                    event.weight_sparsity, [encoder.masks.mask(k) for k in encoder.masks.linears]
                )
            }
        gates = encoder.gates
        return {
            "heads": _units_to_remove(event.head_sparsity, [g != 0 for g in gates.heads]),
            "neurons": _units_to_remove(event.ffn_sparsity, [g != 0 for g in gates.neurons]),
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
            alive = [g != 0 for g in gate_list]
            kept = select_kept(importance[name], alive, n_remove[name], floor)
            if name == "neurons" and (multiple := self.ffn_multiple(encoder)) > 1:
                counts = aligned_counts([int(k.sum()) for k in kept], [int(a.sum()) for a in alive], multiple)
                kept = keep_top(importance[name], alive, counts)
            for gate, keep in zip(gate_list, kept):
                gate.copy_(keep.to(gate.dtype))
        return sparsity_summary(encoder)


OUTCOME_KEYS = (
    ("heads", "prune/head_sparsity", "head_sparsity"),
    ("FFN neurons", "prune/ffn_sparsity", "ffn_sparsity"),
    ("Linear weights", "prune/weight_sparsity", "weight_sparsity"),
)


def event_outcome(event: PruningEvent, summary: Mapping[str, float], ffn_multiple_of: int = 1) -> str:
    """One line on what an event reached, with the request where the two differ (FFN widths rounded to
    multiples of `ffn_multiple_of` reach the nearest achievable sparsity, not always the requested one)."""
    parts = []
    for units, key, target in OUTCOME_KEYS:
        if key not in summary:
            continue
        reached, requested = summary[key], getattr(event, target)
        part = f"{100 * reached:.1f}% of the {units}"
        if abs(reached - requested) >= 5e-4:
            aligned = units == "FFN neurons" and ffn_multiple_of > 1
            why = f", FFN widths at multiples of {ffn_multiple_of}" if aligned else ""
            part += f" ({100 * requested:.1f}% requested{why})"
        parts.append(part)
    left = summary["prune/encoder_parameters"] / 1e6
    return f"removed {' and '.join(parts)}; {left:.2f}M parameters left in the transformer layers"


def _units_to_remove(target: float, alive: Sequence[Tensor]) -> int:
    """Units to remove from `alive` (keep masks) so that `target` of all of them are gone."""
    total = sum(a.numel() for a in alive)
    return max(round(target * total) - sum(int((~a.bool()).sum()) for a in alive), 0)
