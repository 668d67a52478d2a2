"""What a granularity prunes (METHOD.md section 5), one class each: `StructuredUnits` gates attention
heads and FFN neurons, `UnstructuredWeights` masks single weights of the layers' Linear modules. Each
attaches its gates or masks to the encoder, scores its units with the one `Scorer`, counts what an
event still removes and sets the gates or masks; `Sparsifier` holds the one its config names."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

import torch
from torch import Tensor

from sparsecse.core.errors import ConfigError
from sparsecse.pruning.gates import UnitGates, WeightMasks
from sparsecse.pruning.importance import (
    Scorer,
    accumulate_gradients,
    normalize_per_layer,
    weight_magnitude_scores,
)
from sparsecse.pruning.schedule import PruningEvent
from sparsecse.pruning.selection import aligned_counts, keep_top, select_kept, units_to_remove

ALIGN_MIN_MULTIPLES = 8  # FFN widths are rounded only in models at least this many multiples wide


class Units(Protocol):
    """One granularity's units: how they attach, score, count and go."""

    def attach(self, encoder) -> None: ...
    def ffn_multiple(self, encoder) -> int: ...
    def check_model(self, config) -> None: ...
    def check_reachable(self, config, event: PruningEvent) -> None: ...
    def importance(
        self, encoder, batches: Iterable, scorer: Scorer, generator
    ) -> dict[str, list[Tensor]]: ...
    def removals(self, encoder, event: PruningEvent) -> dict[str, int]: ...
    def apply(self, encoder, event: PruningEvent, importance: Mapping[str, list[Tensor]]) -> None: ...


class StructuredUnits:
    """Attention heads and FFN neurons behind 0/1 gates (`UnitGates`), ranked globally per kind; each
    layer keeps `min_heads_per_layer` heads and an FFN width at a multiple of `ffn_multiple_of`."""

    def __init__(
        self, min_heads_per_layer: int = 1, ffn_multiple_of: int = 64, normalize_head_scores: bool = False
    ):
        self.min_heads_per_layer, self.ffn_multiple_of = min_heads_per_layer, ffn_multiple_of
        self.normalize_head_scores = normalize_head_scores

    def attach(self, encoder) -> None:
        if encoder.gates is None:
            encoder.attach_gates(UnitGates(encoder.backbone))

    def ffn_multiple(self, encoder) -> int:
        """The multiple this encoder's FFN widths are kept at: `ffn_multiple_of`, or 1 (exact counts)
        where the FFN is narrower than ALIGN_MIN_MULTIPLES multiples, as in a test-sized model:
        rounding would there move the sparsity far from the target, for GEMMs too small to gain."""
        if encoder.gates is None:
            return 1
        width = max(len(g) for g in encoder.gates.neurons)
        return self.ffn_multiple_of if width >= ALIGN_MIN_MULTIPLES * self.ffn_multiple_of else 1

    def check_model(self, config) -> None:
        if self.min_heads_per_layer > config.num_attention_heads:
            raise ConfigError("min_heads_per_layer", f"{self.min_heads_per_layer} is more than the model's "
                              f"{config.num_attention_heads} heads per layer")  # fmt: skip

    def check_reachable(self, config, event: PruningEvent) -> None:
        """Head sparsity is capped by the per-layer minimum: at most 1 - min / heads."""
        cap = 1.0 - self.min_heads_per_layer / config.num_attention_heads
        if event.head_sparsity > cap + 1e-9:
            limit = f"min_heads_per_layer={self.min_heads_per_layer} allows at most {cap:.4f}"
            raise ConfigError("head_sparsity", f"{event.head_sparsity} is out of reach: {limit}")

    def importance(self, encoder, batches: Iterable, scorer: Scorer, generator) -> dict[str, list[Tensor]]:
        """{"heads": [(H_l,)], "neurons": [(F_l,)]}: the gates' scores, or the weights' norms."""
        gates = encoder.gates
        scores = scorer.scores(
            {"heads": gates.heads, "neurons": gates.neurons},
            lambda: accumulate_gradients(encoder, batches, gates.tensors()),
            generator,
            lambda: weight_magnitude_scores(encoder.backbone),
        )
        if self.normalize_head_scores:
            scores["heads"] = normalize_per_layer(scores["heads"])
        return scores

    def removals(self, encoder, event: PruningEvent) -> dict[str, int]:
        gates = encoder.gates
        return {
            "heads": units_to_remove(event.head_sparsity, [g != 0 for g in gates.heads]),
            "neurons": units_to_remove(event.ffn_sparsity, [g != 0 for g in gates.neurons]),
        }

    @torch.no_grad()
    def apply(self, encoder, event: PruningEvent, importance: Mapping[str, list[Tensor]]) -> None:
        gates, n_remove = encoder.gates, self.removals(encoder, event)
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


class UnstructuredWeights:
    """Single weights of the layers' Linear modules behind 0/1 masks (`WeightMasks`), scored by their
    Taylor term w * dl/dw and ranked globally."""

    def attach(self, encoder) -> None:
        if encoder.masks is None:
            encoder.attach_masks(WeightMasks(encoder.backbone))

    def ffn_multiple(self, encoder) -> int:
        return 1

    def check_model(self, config) -> None:
        pass

    def check_reachable(self, config, event: PruningEvent) -> None:
        pass

    def importance(self, encoder, batches: Iterable, scorer: Scorer, generator) -> dict[str, list[Tensor]]:
        """{"weights": [(out, in) per Linear]}."""
        weights = [linear.weight for linear in encoder.masks.linears.values()]
        return scorer.scores(
            {"weights": weights},
            lambda: accumulate_gradients(encoder, batches, weights, taylor=True),
            generator,
            lambda: {"weights": [w.detach().abs().float() for w in weights]},
        )

    def removals(self, encoder, event: PruningEvent) -> dict[str, int]:
        masks = encoder.masks
        return {"weights": units_to_remove(event.weight_sparsity, [masks.mask(k) for k in masks.linears])}

    @torch.no_grad()
    def apply(self, encoder, event: PruningEvent, importance: Mapping[str, list[Tensor]]) -> None:
        masks, n_remove = encoder.masks, self.removals(encoder, event)
        keys = list(masks.linears)
        alive = [masks.mask(k).flatten() for k in keys]
        kept = select_kept([s.flatten() for s in importance["weights"]], alive, n_remove["weights"])
        for key, keep in zip(keys, kept):
            masks.set(key, keep.view_as(masks.mask(key)))
