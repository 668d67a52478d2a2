"""Why layers chosen by their first-order importance scored below evenly spaced ones: for each of
MiniLM's layers, the change of l_align + l_uniform its removal brings, estimated to first order (the
gradient of a gate on its residual update, as heads and neurons are scored) and measured (the layer
skipped, the same dropout), on the scoring batches `sparsecse-prune seed=S` draws; then the STS avg
(7 tasks) of the layer sets each ranking keeps, and of evenly spaced ones, before any recovery.
Prints figures; not a test.

    python bench/layer_removal.py --seed 1 --keep 4 3 2
"""

from __future__ import annotations

import argparse
import copy
from itertools import islice

import torch

from sparsecse.core.paths import default_data_dir
from sparsecse.evaluation import evaluate_encoder
from sparsecse.export.model_io import load_encoder
from sparsecse.pruning.importance import accumulate_gradients
from sparsecse.pruning.layers import drop_layers, evenly_spaced, layer_gates, most_important, removal_stats
from sparsecse.pruning.sparsifier import Sparsifier
from sparsecse.training.data import ContrastiveDataModule


def changes(encoder, batches, sparsifier: Sparsifier) -> tuple[list[float], list[float]]:
    """Per layer, the change of l_align + l_uniform on removal: (first-order estimate, measured), the
    means over batches (the estimate is -g for a gate going from 1 to 0)."""
    with sparsifier.scoring_randomness(encoder), layer_gates(encoder) as gates:
        stats = accumulate_gradients(encoder, batches, gates)
    first_order = [-(a + u).item() / stats.batches for a, u in zip(stats.align, stats.uniform)]
    with sparsifier.scoring_randomness(encoder):
        stats = removal_stats(encoder, batches)
    measured = [-(a + u).item() / stats.batches for a, u in zip(stats.align, stats.uniform)]
    return first_order, measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", type=int, nargs="+", default=[4, 3, 2])
    args = parser.parse_args()
    data_dir = default_data_dir()
    sparsifier = Sparsifier(seed=args.seed)
    data = ContrastiveDataModule("minilm", data_dir, "snli_sentences", 64, 32, seed=args.seed)
    data.setup("fit")
    encoder = load_encoder("minilm", "avg")
    batches = list(islice(data.scoring_dataloader(sparsifier.seed), sparsifier.num_batches))
    first_order, measured = changes(encoder, batches, sparsifier)
    print("layer | first-order estimate | measured (change of l_align + l_uniform on removal)")
    for i, (estimate, change) in enumerate(zip(first_order, measured)):
        print(f"{i:5d} | {estimate:20.4f} | {change:8.4f}")
    total = len(first_order)
    sets = {}
    for keep in args.keep:
        sets[f"keep{keep} evenly"] = evenly_spaced(total, keep)
        sets[f"keep{keep} first-order"] = most_important(torch.tensor(first_order), keep)
        sets[f"keep{keep} measured"] = most_important(torch.tensor(measured), keep)
    print("\nlayers kept | STS avg before recovery")
    scored: dict[tuple[int, ...], float] = {}
    for name, kept in sets.items():
        if tuple(kept) not in scored:
            shallow = copy.deepcopy(encoder)
            drop_layers(shallow, kept)
            scored[tuple(kept)] = evaluate_encoder(shallow.eval(), data_dir, ["sts"])["sts_avg"]
        print(f"{name:20s} {kept} | {scored[tuple(kept)]:.2f}", flush=True)


if __name__ == "__main__":
    main()
