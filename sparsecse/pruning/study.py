"""The paper's preliminary study, after training: remove the least-contributing fraction p of a trained
encoder's units, under each score mode at exactly equal sparsity, and evaluate what is left.

Nothing is retrained. The dense encoder is evaluated once. Each (granularity, score mode, seed) is
scored once on the dense encoder, and that ranking serves every p: the units removed at p are the
lowest-ranked round(p N), so a larger p removes a superset. Seeds matter where randomness enters:
the scoring batches and dropout, and the random scores; `weight_magnitude` is scored once.

Speed targets (granularity `joint`, METHOD.md section 8): each (score mode, seed) scores every layer,
head and FFN neuron once, and that serves every asked speed-up: layers, heads and neurons removed
together until the latency model predicts it.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import groupby
from operator import attrgetter

from torch import Tensor

from sparsecse.model.encoder import SentenceEncoder
from sparsecse.pruning.gates import counted_parameters, sparsity_summary
from sparsecse.pruning.latency import LatencyModel
from sparsecse.pruning.removal import remove_pruned_units
from sparsecse.pruning.schedule import TARGETS, PruningEvent, one_shot_event
from sparsecse.pruning.sparsifier import Sparsifier
from sparsecse.pruning.speed_target import SpeedTarget, joint_scores, set_gates

DETERMINISTIC_SCORES = ("weight_magnitude",)  # no batches, no random draw: one seed is all seeds
JOINT = "joint"  # the granularity of speed-target points: layers, heads and FFN neurons together


@dataclass(frozen=True)
class StudyPoint:
    """One cell of the study: which units go, by which ranking, and how many."""

    granularity: str  # structured, unstructured, or joint: to a speed-up
    score: str
    seed: int
    sparsity: float  # p: the fraction of each kind of unit removed; with `joint`, the asked speed-up

    @property
    def setting(self) -> dict[str, str]:
        """The point as the overrides a sweep report reads (it groups by all but the seed)."""
        amount = "target_speedup" if self.granularity == JOINT else "sparsity"
        return {"granularity": self.granularity, "score": self.score, amount: f"{self.sparsity:g}",
                "seed": str(self.seed)}  # fmt: skip


def rankings(
    granularities: Sequence[str], scores: Sequence[str], seeds: Sequence[int]
) -> Iterator[tuple[str, str, int]]:
    """The (granularity, score, seed) to score: every combination, one seed for a deterministic score.
    Seed by seed, so that a study stopped part-way has every score mode for its first seeds."""
    for granularity in granularities:
        for seed in seeds:
            for score in scores:
                if seed == seeds[0] or score not in DETERMINISTIC_SCORES:
                    yield granularity, score, seed


def event_at(granularity: str, sparsity: float) -> PruningEvent:
    """Remove the fraction `sparsity` of each kind of unit: heads and neurons, or weights."""
    return one_shot_event(granularity, **{target: sparsity for target in TARGETS[granularity]})


def pruned_copy(
    dense: SentenceEncoder, sparsifier: Sparsifier, importance: dict[str, list[Tensor]], sparsity: float
) -> tuple[SentenceEncoder, dict[str, float], int]:
    """A copy of `dense` without its `sparsity` least important units (sliced out, or zeroed weights),
    the sparsity summary of the event and the parameters that still count (taken while the masks are
    on: once they are dropped, zeroed weights count again)."""
    encoder = copy.deepcopy(dense)
    sparsifier.attach(encoder)
    summary = sparsifier.apply(encoder, event_at(sparsifier.granularity, sparsity), importance).metrics()
    parameters = counted_parameters(encoder)
    remove_pruned_units(encoder)
    return encoder, summary, parameters


def score_dense(
    dense: SentenceEncoder, sparsifier: Sparsifier, batches: Iterable[dict[str, Tensor]], joint: bool = False
):
    """The importances of the dense encoder's units (scored on a copy, which then holds the gates);
    `joint`: every layer's, head's and neuron's, (heads, neurons, layers), for speed targets."""
    scored = copy.deepcopy(dense)
    sparsifier.attach(scored)
    return joint_scores(scored, batches, sparsifier) if joint else sparsifier.importance(scored, batches)


def speed_copy(
    dense: SentenceEncoder, sparsifier: Sparsifier, scores, latency: LatencyModel, speedup: float
) -> tuple[SentenceEncoder, dict[str, float], int, dict]:
    """A copy of `dense` without the layers, heads and neurons whose removal reaches `speedup` at the
    least importance (`scores`: heads, neurons, layers), as `pruned_copy` gives it, and what was
    asked, predicted and kept."""
    encoder = copy.deepcopy(dense)
    sparsifier.attach(encoder)
    target = SpeedTarget(speedup)
    allocation = target.allocation(encoder, scores, sparsifier, latency)
    set_gates(encoder, allocation)
    summary, parameters = sparsity_summary(encoder).metrics(), counted_parameters(encoder)
    remove_pruned_units(encoder)
    speed = {"asked": speedup, "runtime": target.runtime, "predicted": round(allocation.predicted_speedup, 3)}
    return encoder, summary, parameters, {"target_speedup": speed, "layers_kept": allocation.layers}


def run_study(
    dense: SentenceEncoder,
    evaluate: Callable[[SentenceEncoder], dict[str, float]],
    scoring_batches: Callable[[int], Iterable[dict[str, Tensor]]],
    points: Sequence[StudyPoint],
    sparsifier_options: Mapping,
    latency: LatencyModel | None = None,
) -> Iterator[tuple[StudyPoint, dict]]:
    """Each point's results, as a run's results.json has them ("after", "sparsity", "parameters",
    "parameter_sparsity"; for a speed target also "target_speedup" and "layers_kept") plus the
    seconds spent. Consecutive points of one ranking share its scoring, which is counted at the first
    of them. `latency`: the dense encoder's latency model, for the `joint` points."""
    dense_parameters = counted_parameters(dense)
    for (granularity, score, seed), group in groupby(points, key=attrgetter("granularity", "score", "seed")):
        joint = granularity == JOINT
        sparsifier = Sparsifier(granularity="structured" if joint else granularity, score=score, seed=seed,
                                **sparsifier_options)  # fmt: skip
        started = time.perf_counter()
        scored = copy.deepcopy(dense)
        sparsifier.attach(scored)
        batches = scoring_batches(seed)
        importance = (
            joint_scores(scored, batches, sparsifier) if joint else sparsifier.importance(scored, batches)
        )
        scoring = time.perf_counter() - started
        for point in group:
            started = time.perf_counter()
            if joint:
                encoder, summary, parameters, speed = speed_copy(dense, sparsifier, importance, latency,
                                                                 point.sparsity)  # fmt: skip
            else:
                encoder, summary, parameters = pruned_copy(dense, sparsifier, importance, point.sparsity)
                speed = {}
            results = {
                "after": evaluate(encoder),
                "sparsity": summary,
                "parameters": parameters,
                "dense_parameters": dense_parameters,
                "parameter_sparsity": 1.0 - parameters / dense_parameters,
                **speed,
            }
            results["seconds"] = {"scoring": scoring, "evaluation": time.perf_counter() - started}
            scoring = 0.0
            yield point, results


def study_points(
    granularities: Sequence[str],
    scores: Sequence[str],
    seeds: Sequence[int],
    sparsities: Sequence[float],
    speedups: Sequence[float] = (),
) -> list[StudyPoint]:
    """Every point, grouped by ranking so that each is scored once and reused for every sparsity (and,
    for `joint`, every speed-up; scores that need no gradient of a layer, `weight_magnitude`, have none)."""
    points = [
        StudyPoint(granularity, score, seed, p)
        for granularity, score, seed in rankings(granularities, scores, seeds)
        for p in sparsities
    ]
    joint = [score for score in scores if score not in DETERMINISTIC_SCORES]
    return points + [
        StudyPoint(JOINT, score, seed, x)
        for _, score, seed in rankings([JOINT], joint, seeds)
        for x in speedups
    ]
