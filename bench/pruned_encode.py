"""Encode throughput of a dense encoder against the same encoder with heads and FFN neurons sliced
out (METHOD.md section 5). Prints figures; not a test.

    python bench/pruned_encode.py                       # MiniLM, this machine's device
    python bench/pruned_encode.py --shape bert-base --batch-size 512 --length 32   # random bert-base shape
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import BertConfig, BertModel

from sparsecse.encoder import SentenceEncoder
from sparsecse.loading import load_tokenizer
from sparsecse.pruning import PruningEvent, Sparsifier, remove_pruned_units


def build(shape: str, device: torch.device, dtype: torch.dtype) -> SentenceEncoder:
    if shape == "minilm":
        encoder = SentenceEncoder.from_pretrained("minilm", pooler="avg")
    else:  # the bert-base shape with random weights: speed does not depend on their values
        backbone = BertModel(BertConfig(), add_pooling_layer=False)
        encoder = SentenceEncoder(backbone, load_tokenizer("minilm"), pooler="avg")
    return encoder.to(device=device, dtype=dtype).eval()


def sparsify(encoder: SentenceEncoder, heads: float, ffn: float) -> SentenceEncoder:
    sparsifier = Sparsifier(score="weight_magnitude")  # needs no data; speed depends only on sizes
    sparsifier.attach(encoder)
    sparsifier.apply(encoder, PruningEvent("step", 0, heads, ffn), sparsifier.importance(encoder, iter(())))
    remove_pruned_units(encoder)
    return encoder


@torch.inference_mode()
def throughput(encoder: SentenceEncoder, batch: dict, repeats: int) -> float:
    """Sentences per second of the forward pass on one fixed, padded batch."""
    for _ in range(2):
        encoder(**batch)
    if batch["input_ids"].is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        encoder(**batch)
    if batch["input_ids"].is_cuda:
        torch.cuda.synchronize()
    return repeats * batch["input_ids"].shape[0] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=["minilm", "bert-base"], default="minilm")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--head-sparsity", type=float, default=0.5)
    parser.add_argument("--ffn-sparsity", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    ids = torch.randint(1000, 30000, (args.batch_size, args.length), device=device)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    dense = build(args.shape, device, dtype)
    dense_rate = throughput(dense, batch, args.repeats)
    sparse = sparsify(build(args.shape, device, dtype), args.head_sparsity, args.ffn_sparsity)
    sparse_rate = throughput(sparse, batch, args.repeats)
    where = (
        torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    )
    print(f"{args.shape} {args.dtype} batch {args.batch_size} x length {args.length} on {where}")
    print(f"dense : {dense_rate:10.1f} sentences/s")
    print(f"sparse: {sparse_rate:10.1f} sentences/s  ({args.head_sparsity:.0%} heads, "
          f"{args.ffn_sparsity:.0%} FFN neurons removed)")  # fmt: skip
    print(f"speed-up: {sparse_rate / dense_rate:.2f}x")


if __name__ == "__main__":
    main()
