"""Encode throughput of a dense encoder against the same encoder with heads and FFN neurons sliced
out (METHOD.md section 5). Prints figures; not a test.

    python bench/pruned_encode.py                       # MiniLM, this machine's device
    python bench/pruned_encode.py --shape bert-base --batch-size 512 --length 32   # random bert-base shape
    python bench/pruned_encode.py --compile    # eager and compiled (CUDA graphs on a GPU), both models
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from machine import pick_device
from transformers import BertConfig, BertModel

from sparsecse.export.model_io import load_encoder
from sparsecse.model.encoder import SentenceEncoder
from sparsecse.model.loading import load_tokenizer
from sparsecse.pruning.removal import remove_pruned_units
from sparsecse.pruning.schedule import PruningEvent
from sparsecse.pruning.sparsifier import Sparsifier


def build(shape: str, device: torch.device, dtype: torch.dtype) -> SentenceEncoder:
    if shape == "minilm":
        encoder = load_encoder("minilm", pooler="avg")
    else:  # the bert-base shape with random weights: speed does not depend on their values
        backbone = BertModel(BertConfig(), add_pooling_layer=False)
        encoder = SentenceEncoder(backbone, load_tokenizer("minilm"), pooler="avg")
    return encoder.to(device=device, dtype=dtype).eval()


def sparsify(encoder: SentenceEncoder, heads: float, ffn: float, ffn_multiple_of: int = 1) -> SentenceEncoder:
    # weight-magnitude scores need no data; speed depends only on the sizes left
    sparsifier = Sparsifier(score="weight_magnitude", ffn_multiple_of=ffn_multiple_of)
    sparsifier.attach(encoder)
    sparsifier.apply(encoder, PruningEvent("step", 0, heads, ffn), sparsifier.importance(encoder, iter(())))
    remove_pruned_units(encoder)
    return encoder


@torch.no_grad()  # not inference_mode: see SentenceEncoder.encode
def throughput(forward: Callable[..., torch.Tensor], batch: dict, repeats: int) -> float:
    """Sentences per second of the forward pass on one fixed, padded batch."""
    for _ in range(3):  # a compiled forward compiles, then records its CUDA graph
        forward(**batch)
    if batch["input_ids"].is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        forward(**batch)
    if batch["input_ids"].is_cuda:
        torch.cuda.synchronize()
    return repeats * batch["input_ids"].shape[0] / (time.perf_counter() - start)


def forwards(encoder: SentenceEncoder, compile: bool) -> dict[str, Callable[..., torch.Tensor]]:
    """{"eager": forward[, "compiled": compile_for_inference's forward]}."""
    out = {"eager": encoder}
    if compile:
        encoder.compile_for_inference()
        out["compiled"] = encoder.compiled_forward
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=["minilm", "bert-base"], default="minilm")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--head-sparsity", type=float, default=0.5)
    parser.add_argument("--ffn-sparsity", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=10, help="forward passes timed per round")
    parser.add_argument("--rounds", type=int, default=3, help="median of this many interleaved rounds")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--compile", action="store_true", help="also time compile_for_inference's forward")
    parser.add_argument("--ffn-multiple-of", type=int, nargs="+", default=[1],
                        help="a sparse model per value, FFN widths at its multiples (1: plain)")  # fmt: skip
    args = parser.parse_args()
    device, where = pick_device()
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    ids = torch.randint(1000, 30000, (args.batch_size, args.length), device=device)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    models = {"dense": forwards(build(args.shape, device, dtype), args.compile)}
    widths = {}
    for multiple in args.ffn_multiple_of:
        encoder = sparsify(build(args.shape, device, dtype), args.head_sparsity, args.ffn_sparsity, multiple)
        widths[f"sparse/{multiple}"] = [len(layer) for layer in encoder.backbone.config.kept_neurons]
        models[f"sparse/{multiple}"] = forwards(encoder, args.compile)
    runs = {(model, mode): [] for model, modes in models.items() for mode in modes}
    for _ in range(args.rounds):  # interleaved, so that drifts in the machine's speed hit all of them
        for model, mode in runs:
            runs[model, mode].append(throughput(models[model][mode], batch, args.repeats))
    rate = {key: statistics.median(values) for key, values in runs.items()}
    print(f"{args.shape} {args.dtype} batch {args.batch_size} x length {args.length} on {where}; sparse: "
          f"{args.head_sparsity:.0%} heads, {args.ffn_sparsity:.0%} FFN neurons removed, FFN widths at "
          f"multiples of N (sparse/N); median of {args.rounds} rounds of {args.repeats}")  # fmt: skip
    for model in widths:
        print(f"{model} FFN widths: {widths[model]}")
    for model, mode in runs:
        print(f"{model:>10} {mode:>8}: {rate[model, mode]:10.1f} sentences/s, "
              f"{rate[model, mode] / rate['dense', mode]:.2f}x dense {mode}")  # fmt: skip
    if args.compile:
        for model in models:
            print(f"{model} compiled / eager: {rate[model, 'compiled'] / rate[model, 'eager']:.2f}x")


if __name__ == "__main__":
    main()
