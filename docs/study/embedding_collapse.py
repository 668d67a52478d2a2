"""How collapsed the embedding space of a study point is: remove the fraction p of MiniLM's units under
each score mode, as `sparsecse-study` does, and print the mean pairwise cosine of STS-B test
sentences (near 0 for a spread-out space, near 1 when every sentence maps to one direction) with the
Linear layers that lost the most weights. docs/study.md cites its output. Not a test.

    python docs/study/embedding_collapse.py                               # unstructured, p = 0.005
    python docs/study/embedding_collapse.py --granularity structured --p 0.3 --scores signed magnitude
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from torch import nn

from sparsecse.evaluation.sts import read_stsb
from sparsecse.export.model_io import load_encoder
from sparsecse.pruning.sparsifier import Sparsifier
from sparsecse.pruning.study import pruned_copy, score_dense
from sparsecse.training.data import ContrastiveDataModule


def mean_pairwise_cosine(embeddings: torch.Tensor) -> float:
    unit = nn.functional.normalize(embeddings.float(), dim=-1)  # (N, D)
    n = len(unit)
    return float(((unit @ unit.T).sum() - n) / (n * (n - 1)))


def zeroed_per_layer(dense: nn.Module, pruned: nn.Module, top: int) -> list[tuple[str, int]]:
    """The Linear layers with the most weights zeroed by pruning (unstructured points only)."""
    before = dict(dense.named_modules())
    counts = {
        name: int(((module.weight == 0) & (before[name].weight != 0)).sum())
        for name, module in pruned.named_modules()
        if isinstance(module, nn.Linear) and before[name].weight.shape == module.weight.shape
    }
    return sorted(((k, v) for k, v in counts.items() if v), key=lambda kv: -kv[1])[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--granularity", default="unstructured", choices=["structured", "unstructured"])
    parser.add_argument("--p", type=float, default=0.005)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scores", nargs="+", default=["signed", "magnitude"])
    parser.add_argument("--sentences", type=int, default=1000, help="the first N distinct STS-B sentences")
    parser.add_argument("--data-dir", default=os.environ.get("SPARSECSE_DATA_DIR", ""))
    args = parser.parse_args()
    dense = load_encoder(args.model, "avg").eval()
    data = ContrastiveDataModule(dense.name_or_path, args.data_dir, "snli_sentences", 64, 32)
    pairs = read_stsb(Path(data.data_dir))
    sentences = list(dict.fromkeys(pairs.sent1 + pairs.sent2))[: args.sentences]
    print(f"dense: mean pairwise cosine {mean_pairwise_cosine(dense.encode(sentences)):.3f}")
    for score in args.scores:
        sparsifier = Sparsifier(granularity=args.granularity, score=score, seed=args.seed, num_batches=8)
        importance = score_dense(dense, sparsifier, iter(data.scoring_dataloader(args.seed)))
        pruned, _, parameters = pruned_copy(dense, sparsifier, importance, args.p)
        cosine = mean_pairwise_cosine(pruned.encode(sentences))  # encode runs in eval mode, without autograd
        print(f"{score} p={args.p:g} seed={args.seed}: {parameters:,} parameters, mean pairwise cosine "
              f"{cosine:.3f} over {len(sentences)} sentences")  # fmt: skip
        if args.granularity == "unstructured":
            zeroed = zeroed_per_layer(dense, pruned, 5)
            print("  most weights zeroed:", ", ".join(f"{name} {count}" for name, count in zeroed))


if __name__ == "__main__":
    main()
