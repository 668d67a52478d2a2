"""Serving speed of exported encoders on this CPU, against the dense PyTorch model in the same run:
each export through PyTorch (sentence-transformers), and through its ONNX and int8 ONNX graphs
where it has them, each with its STS average. Prints figures; not a test.

    sparsecse-prune model=minilm pooler=avg pruning.head_sparsity=0.5 pruning.ffn_sparsity=0.5 \\
        "tasks=[]" onnx=int8 output_dir=/tmp/minilm-50
    python bench/onnx_serving.py --model /tmp/minilm-50
    python bench/onnx_serving.py --model /tmp/minilm-50 /tmp/minilm-50-a64 --no-sts --rounds 5

Two settings:
- fixed batches of 128 x 32 random tokens through the bare model (PyTorch forward, or one ONNX
  Runtime `run`);
- STS-B dev's 3,000 sentences, batch 64, through the path users take: `SentenceTransformer.encode`
  for PyTorch, and for ONNX the same steps (sort by length, tokenise each batch, run, mean-pool).

The PyTorch rows are split into tokenisation, the model's forward and the rest of `encode`
(sorting, pooling, copies), to show where the time goes that pruning cannot remove; `--profile`
adds torch.profiler's top operators of one pruned `encode`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from sentence_transformers import SentenceTransformer

from sparsecse.core.paths import default_data_dir, resolve_model_path
from sparsecse.evaluation.sts import evaluate_sts, read_stsb
from sparsecse.export.onnx_encoder import OnnxEncoder


class StageClock:
    """Seconds spent in a SentenceTransformer's tokenisation (its Transformer module's `preprocess`)
    and in its model's `forward`, by wrapping both on the instances; the rest of `encode` is the
    difference to its wall time. (sentence-transformers 6 calls `model.forward` directly, so module
    hooks would not see it.)"""

    def __init__(self, model: SentenceTransformer):
        self.tokenize = self.forward = 0.0
        module = model[0]
        module.preprocess = self._timed(module.preprocess, "tokenize")
        module.model.forward = self._timed(module.model.forward, "forward")

    def _timed(self, function: Callable, stage: str) -> Callable:
        def run(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                setattr(self, stage, getattr(self, stage) + time.perf_counter() - start)

        return run

    def reset(self) -> None:
        self.tokenize = self.forward = 0.0


def timed(run: Callable[[], object], repeats: int) -> float:
    run()  # warm-up: first-call allocations, ONNX Runtime's lazy initialisation
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", required=True, type=Path, nargs="+", help="exports; onnx/ graphs are used if there"
    )
    parser.add_argument("--dense", default="minilm")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--rounds", type=int, default=3, help="median of this many interleaved rounds")
    parser.add_argument("--repeats", type=int, default=5, help="fixed batches timed per round")
    parser.add_argument("--no-sts", action="store_true", help="skip the STS averages")
    parser.add_argument("--profile", action="store_true", help="top operators of one encode, both models")
    args = parser.parse_args()
    threads = torch.get_num_threads()
    data_dir = Path(args.data_dir or default_data_dir())
    dense = SentenceTransformer(resolve_model_path(args.dense), device="cpu")
    pytorch = {"dense PyTorch": dense}
    onnx = {}
    for directory in args.model:
        pytorch[f"{directory.name} PyTorch"] = SentenceTransformer(
            str(directory), device="cpu", trust_remote_code=True
        )
        for graph, label in (("model.onnx", "ONNX"), ("model_qint8.onnx", "int8 ONNX")):
            if (directory / "onnx" / graph).is_file():
                onnx[f"{directory.name} {label}"] = OnnxEncoder(directory, f"onnx/{graph}", threads)
    clocks = {name: StageClock(model) for name, model in pytorch.items()}
    names = [*clocks, *onnx]

    torch.manual_seed(0)
    ids = torch.randint(1000, 30000, (128, 32))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    batch["token_type_ids"] = torch.zeros_like(ids)
    feeds = {k: v.numpy() for k, v in batch.items()}
    stsb = read_stsb(data_dir, "dev")
    sentences = stsb.sent1 + stsb.sent2

    def fixed(name: str) -> Callable[[], object]:
        if name in onnx:
            return lambda: onnx[name].run(feeds)
        model = pytorch[name][0].auto_model

        def forward():
            with torch.no_grad():
                return model(**batch)

        return forward

    def real(name: str) -> Callable[[], object]:
        if name in onnx:
            return lambda: onnx[name].encode(sentences, batch_size=64)
        return lambda: pytorch[name].encode(sentences, batch_size=64)

    fixed_s = {n: [] for n in names}
    real_s = {n: [] for n in names}
    stages = {n: [] for n in clocks}
    with torch.no_grad():
        for _ in range(args.rounds):  # interleaved, so that drifts in the machine's speed hit all of them
            for name in names:
                fixed_s[name].append(timed(fixed(name), args.repeats))
                encode = real(name)
                encode()  # warm-up
                if name in clocks:
                    clocks[name].reset()
                start = time.perf_counter()
                encode()
                real_s[name].append(time.perf_counter() - start)
                if name in clocks:
                    stages[name].append((clocks[name].tokenize, clocks[name].forward, real_s[name][-1]))

    sts = {}
    if not args.no_sts:
        for name in names:
            if name in onnx:
                embed = partial(onnx[name].encode, batch_size=128)
            else:
                embed = lambda texts, e=pytorch[name].encode: torch.from_numpy(e(texts, batch_size=128))  # noqa: E731
            sts[name] = evaluate_sts(embed, data_dir)

    base_fixed = statistics.median(fixed_s["dense PyTorch"])
    base_real = statistics.median(real_s["dense PyTorch"])
    models = ", ".join(map(str, args.model))
    print(f"{models} against {args.dense}; CPU, {threads} threads (torch and ONNX Runtime); "
          f"median of {args.rounds} interleaved rounds")  # fmt: skip
    print("| variant | fixed 128 x 32: sentences/s | speed-up | STS-B dev, encode, batch 64: sentences/s "
          "| speed-up | STS avg (7 tasks) |")  # fmt: skip
    print("| --- | --: | --: | --: | --: | --: |")
    for name in names:
        f, r = statistics.median(fixed_s[name]), statistics.median(real_s[name])
        score = f"{sts[name]['sts_avg']:.2f}" if name in sts else "-"
        print(f"| {name} | {128 / f:.1f} | {base_fixed / f:.2f}x | {len(sentences) / r:.1f} "
              f"| {base_real / r:.2f}x | {score} |")  # fmt: skip
    print()
    print("Every round, STS-B dev through encode (sentences/s):")
    for name in names:
        print(f"  {name}: " + ", ".join(f"{len(sentences) / r:.1f}" for r in real_s[name]))
    print()
    print("Where PyTorch's `encode` time goes (STS-B dev, median round, seconds):")
    for name, rows in stages.items():
        tokenize, forward, total = sorted(rows, key=lambda row: row[2])[len(rows) // 2]
        print(f"  {name}: total {total:.2f} = tokenise {tokenize:.2f} + forward {forward:.2f} "
              f"+ rest {total - tokenize - forward:.2f}")  # fmt: skip
    if args.profile:
        for name, model in pytorch.items():
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
                model.encode(sentences, batch_size=64)
            print(f"\n{name}: top operators of one encode (self CPU time)")
            print(profile.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    if sts:
        print()
        for name, scores in sts.items():
            print(f"  {name}: " + " ".join(f"{k} {v:.2f}" for k, v in scores.items()))


if __name__ == "__main__":
    main()
