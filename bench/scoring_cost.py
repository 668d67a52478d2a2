"""Cost of alignment/uniformity importance scoring (METHOD.md section 4) against training: scoring N
batches of positive pairs (one forward and one backward each, gradients at the head and neuron
gates) next to N plain training steps on the same batches. The goal is <= 1.5x. Not a test.

    python bench/scoring_cost.py                 # MiniLM, 8 batches of 64 x 32 tokens
    python bench/scoring_cost.py --shape bert-base --steps 16
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from machine import pick_device
from train_throughput import batches, corpus, model_dir, plain_seconds

from sparsecse.export.model_io import load_encoder
from sparsecse.pruning.sparsifier import Sparsifier


def scoring_seconds(args, path: str, text: Path, device: torch.device) -> float:
    encoder = load_encoder(path, pooler="avg").to(device)
    sparsifier = Sparsifier(num_batches=args.steps)
    sparsifier.attach(encoder)
    pairs = [{k: torch.stack([v, v]) for k, v in b.items()} for b in batches(path, text, args, device)]
    with torch.autocast(device.type, torch.bfloat16, enabled=args.precision == "bf16-mixed"):
        sparsifier.importance(encoder, iter(pairs[: args.warmup]))  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        sparsifier.importance(encoder, iter(pairs[args.warmup :]))
        if device.type == "cuda":
            torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=["minilm", "bert-base"], default="minilm")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8, help="N: batches scored, and training steps")
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    args.compile = False
    device, where = pick_device()
    args.precision = "bf16-mixed" if device.type == "cuda" else "32-true"
    with tempfile.TemporaryDirectory() as work:
        path = model_dir(args.shape, Path(work))
        text = corpus(Path(work) / "corpus.txt", (args.warmup + args.steps + 1) * args.batch_size)
        train = plain_seconds(args, path, text, device)
        score = scoring_seconds(args, path, text, device)
    print(
        f"{args.shape}, {args.steps} batches of {args.batch_size} x {args.length}, {args.precision}, "
        f"on {where}"
    )
    print(f"training steps: {train:7.2f} s")
    print(f"scoring:        {score:7.2f} s  ({score / train:.2f}x the training steps)")


if __name__ == "__main__":
    main()
