"""`Sparsifier`: scores units on positive pairs and sets an event's gates or masks (METHOD.md 5), through
the units its granularity prunes (sparsecse.pruning.granularity); and the line that says what an
event reached."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from itertools import islice

import torch
from torch import Tensor

from sparsecse.core.seeding import derived_seed, forked_rng
from sparsecse.core.validation import PositiveInt, checked
from sparsecse.model.loading import check_supported
from sparsecse.pruning.gates import Sparsity, sparsity_summary
from sparsecse.pruning.granularity import StructuredUnits, Units, UnstructuredWeights
from sparsecse.pruning.importance import ScoreMode, Scorer
from sparsecse.pruning.schedule import Granularity, PruningEvent, check_structured


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
        self.num_batches = num_batches
        self.units: Units = (
            StructuredUnits(min_heads_per_layer, ffn_multiple_of, normalize_head_scores)
            if granularity == "structured"
            else UnstructuredWeights()
        )

    def structured_units(self) -> StructuredUnits:
        """The heads and neurons this sparsifier prunes; what a speed target allocates among."""
        check_structured(self.granularity)
        assert isinstance(self.units, StructuredUnits)
        return self.units

    def ffn_multiple(self, encoder) -> int:
        """The multiple this encoder's FFN widths are kept at (1 where they are not rounded)."""
        return self.units.ffn_multiple(encoder)

    def check_model(self, config) -> None:
        """Settings that depend on the model, checked on its config before any weights load."""
        check_supported(config, "model")
        self.units.check_model(config)

    def check_reachable(self, config, event: PruningEvent) -> None:
        """An event's targets the settings allow on this model (heads: at most 1 - min / heads)."""
        self.units.check_reachable(config, event)

    def attach(self, encoder) -> None:
        """Give the encoder its gates (structured) or weight masks (unstructured), all ones."""
        self.units.attach(encoder)

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
            return self.units.importance(encoder, islice(batches, self.num_batches), self.scorer, generator)

    @contextmanager
    def scoring_randomness(self, encoder, scoring: int = 0, rank: int = 0) -> Iterator[torch.Generator]:
        """Within: float32 (no autocast), dropout drawn from (seed, scoring, rank), and the process's
        random state restored after; yields the generator of random scores, from (seed, scoring)."""
        generator = torch.Generator().manual_seed(derived_seed(self.seed, scoring))
        device = encoder.device
        with forked_rng(device), torch.autocast(device.type, enabled=False):
            torch.manual_seed(derived_seed(self.seed, scoring, rank))
            yield generator

    def removals(self, encoder, event: PruningEvent) -> dict[str, int]:
        """How many more units of each kind the event removes: its cumulative target less what is gone."""
        return self.units.removals(encoder, event)

    def apply(self, encoder, event: PruningEvent, importance: Mapping[str, list[Tensor]]) -> Sparsity:
        """Remove the least important units until the event's cumulative targets are reached; returns
        what the encoder's gates or masks now leave."""
        self.units.apply(encoder, event, importance)
        return sparsity_summary(encoder)


OUTCOMES = (
    ("heads", "head_sparsity"),
    ("FFN neurons", "ffn_sparsity"),
    ("Linear weights", "weight_sparsity"),
)


def event_outcome(event: PruningEvent, reached: Sparsity, ffn_multiple_of: int = 1) -> str:
    """One line on what an event reached, with the request where the two differ (FFN widths rounded to
    multiples of `ffn_multiple_of` reach the nearest achievable sparsity, not always the requested one)."""
    parts = []
    for units, target in OUTCOMES:
        if (share := getattr(reached, target)) is None:
            continue
        requested = getattr(event, target)
        part = f"{100 * share:.1f}% of the {units}"
        if abs(share - requested) >= 5e-4:
            aligned = units == "FFN neurons" and ffn_multiple_of > 1
            why = f", FFN widths at multiples of {ffn_multiple_of}" if aligned else ""
            part += f" ({100 * requested:.1f}% requested{why})"
        parts.append(part)
    left = reached.parameters / 1e6
    return f"removed {' and '.join(parts)}; {left:.2f}M parameters left in the transformer layers"
