"""Where a Lightning training step spends its time beyond the model's own work, against a plain loop
on the same batches. A tiny BERT (2 layers, hidden 32) makes the per-step overhead visible on a CPU,
as a small encoder is launch-bound on a GPU. Prints ms per step and a profile breakdown; not a test.

    python bench/step_overhead.py                  # 150 steps of batch 64 x 16 tokens, 1 loader worker
    python bench/step_overhead.py --workers 2 --device cuda
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from machine import pick_device
from train_throughput import StepClock
from transformers import BertConfig, BertModel

from sparsecse.model.encoder import SentenceEncoder
from sparsecse.model.loading import load_tokenizer
from sparsecse.model.loss import simcse_loss
from sparsecse.training.data import ContrastiveDataModule
from sparsecse.training.module import SimCSEModule

# (label, file suffix, function name) of the profile entries the breakdown reports, cumulative
PARTS = (
    ("forward and loss (training_step)", "sparsecse/training/module.py", "training_step"),
    ("backward", "torch/_tensor.py", "backward"),
    ("optimizer update (AdamW)", "torch/optim/adam.py", "adam"),
    ("zero_grad", "torch/optim/optimizer.py", "zero_grad"),
    ("waiting for the next batch", "lightning/pytorch/loops/fetchers.py", "__next__"),
    ("seeding dropout (on_train_batch_start)", "sparsecse/training/module.py", "on_train_batch_start"),
    ("progress bar", "progress/rich_progress.py", "on_train_batch_end"),
    ("progress bar", "progress/tqdm_progress.py", "on_train_batch_end"),
)


def tiny_encoder(tokenizer) -> SentenceEncoder:
    torch.manual_seed(0)
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    return SentenceEncoder(BertModel(config, add_pooling_layer=False), tokenizer, "avg").train()


def lightning_run(
    args, work: Path, device: torch.device, profile: bool
) -> tuple[float, cProfile.Profile | None]:
    tokenizer = load_tokenizer("minilm")
    module = SimCSEModule(tiny_encoder(tokenizer), lambda params: torch.optim.AdamW(params, lr=3e-5))
    data = ContrastiveDataModule("minilm", args.data_dir, str(work / "corpus.txt"), args.batch_size,
                                 max_length=args.length, num_workers=args.workers)  # fmt: skip
    clock = StepClock(args.warmup)
    trainer = L.Trainer(accelerator=device.type, devices=1, max_steps=args.warmup + args.steps,
                        limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                        enable_model_summary=False, callbacks=[clock])  # fmt: skip
    profiler = cProfile.Profile() if profile else None
    if profiler:
        profiler.enable()
    trainer.fit(module, datamodule=data)
    if profiler:
        profiler.disable()
    return (clock.end - clock.start) / args.steps, profiler


def plain_run(args, work: Path, device: torch.device) -> float:
    tokenizer = load_tokenizer("minilm")
    encoder = tiny_encoder(tokenizer).to(device)
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=3e-5)
    lines = (work / "corpus.txt").read_text().splitlines()
    size = args.batch_size
    batches = [tokenizer(lines[i * size : (i + 1) * size], padding=True, truncation=True,
                         max_length=args.length, return_tensors="pt").to(device)
               for i in range(args.warmup + args.steps)]  # fmt: skip

    def step(batch) -> None:
        tokens = {k: torch.cat([v, v]) for k, v in batch.items()}  # two dropout views, (2 B, T)
        simcse_loss(encoder(**tokens).view(2, size, -1)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for batch in batches[: args.warmup]:
        step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for batch in batches[args.warmup :]:
        step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / args.steps


def breakdown(profiler: cProfile.Profile, steps: int) -> dict[str, float]:
    """{label: ms per step} for PARTS from the profile's cumulative times, the whole step (the epoch
    loop's `advance`), and what is left of it: Lightning's loop, its hooks and its other callbacks."""
    stats = pstats.Stats(profiler).stats

    def ms(suffix: str, name: str) -> float:
        seconds = sum(entry[3] for (path, _, function), entry in stats.items()
                      if path.endswith(suffix) and function == name)  # fmt: skip
        return 1000 * seconds / steps

    out: dict[str, float] = {}
    for label, suffix, name in PARTS:
        out[label] = out.get(label, 0.0) + ms(suffix, name)
    step = ms("lightning/pytorch/loops/training_epoch_loop.py", "advance")
    out["the rest: the loop, hooks and other callbacks"] = step - sum(out.values())
    out["(inside training_step: self.log)"] = ms("lightning/pytorch/core/module.py", "log")
    out["the whole step"] = step
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--length", type=int, default=16)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--data-dir", default=None, help="SentEval folder (STS-B dev for the DataModule)")
    args = parser.parse_args()
    from sparsecse.core.paths import default_data_dir

    args.data_dir = args.data_dir or str(default_data_dir())
    device, where = pick_device()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        lines = (args.warmup + args.steps + 1) * args.batch_size
        (work / "corpus.txt").write_text(
            "".join(f"sentence {i} is about topic {i % 7} today .\n" for i in range(lines))
        )
        print(f"tiny BERT, batch {args.batch_size} x length {args.length}, {args.workers} loader worker(s), "
              f"{args.steps} steps after {args.warmup}, on {where}")  # fmt: skip
        for round_ in range(args.rounds):  # interleaved
            plain = plain_run(args, work, device)
            lightning = lightning_run(args, work, device, profile=False)[0]
            print(f"round {round_}: plain loop {1000 * plain:.2f} ms/step, Lightning {1000 * lightning:.2f} "
                  f"ms/step ({plain / lightning:.2f}x the plain loop's speed)")  # fmt: skip
        seconds, profiler = lightning_run(args, work, device, profile=True)
    print(f"Lightning under cProfile ({1000 * seconds:.2f} ms/step timed), ms per step of all steps:")
    for label, ms in breakdown(profiler, args.warmup + args.steps).items():
        print(f"  {label:<46} {ms:7.2f}")


if __name__ == "__main__":
    main()
