"""Training throughput of unsupervised SimCSE, three ways on the same model, batch and length: this
project's LightningModule fed by its DataModule (tokenisation in the DataLoader), a plain PyTorch loop
on pre-tokenised batches, and sentence-transformers' MultipleNegativesRankingLoss (the same InfoNCE,
scale 20 = 1 / 0.05) on pre-tokenised batches. Prints tokens/s (batch x length per optimizer step,
each sentence counted once) and the ratios; not a test.

    python bench/train_throughput.py                          # MiniLM; bf16-mixed on a GPU, fp32 on CPU
    python bench/train_throughput.py --shape bert-base --steps 50 --compile
    python bench/train_throughput.py --corpus snli --bucket-batches 50   # real lengths, grouped batches

`--corpus filler` (the default) fills every sentence to `--length` tokens, so that all variants compute
the same padded batches; `--corpus snli` trains on SentEval's SNLI sentences (shuffled once), where
the Lightning variant can group its batches by length (`--bucket-batches`, `data.bucket_batches`).
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from machine import pick_device
from transformers import BertConfig, BertModel

from sparsecse.core.paths import resolve_model_path
from sparsecse.data.corpora import snli_sentences
from sparsecse.export.model_io import load_encoder
from sparsecse.model.loading import load_tokenizer
from sparsecse.model.loss import simcse_loss
from sparsecse.training.data import ContrastiveDataModule
from sparsecse.training.module import SimCSEModule


def model_dir(shape: str, work: Path) -> str:
    """A Hugging Face model folder all three variants load: MiniLM's weights, or a random bert-base."""
    if shape == "minilm":
        return resolve_model_path("minilm")
    torch.manual_seed(0)
    BertModel(BertConfig(), add_pooling_layer=False).save_pretrained(work / "bert-base")
    load_tokenizer("minilm").save_pretrained(work / "bert-base")
    return str(work / "bert-base")


def corpus(path: Path, lines: int, kind: str = "filler", data_dir: str | None = None) -> Path:
    """`filler`: sentences long enough that every one fills `--length` tokens; `snli`: SNLI's
    sentences in a fixed random order, so that the plain loops' batches are uniform draws too."""
    if kind == "snli":
        sentences = snli_sentences(data_dir)
        random.Random(0).shuffle(sentences)
        text = sentences[:lines]
    else:
        words = "the quick brown fox jumps over a lazy dog while seven tired cats watch from the old wall"
        words = words.split()
        text = [" ".join(words[(i + j) % len(words)] for j in range(48)) for i in range(lines)]
    path.write_text("\n".join(text) + "\n")
    return path


def timed(step: Callable[[], None], warmup: int, steps: int, cuda: bool) -> float:
    """Seconds for `steps` calls of `step` after `warmup` untimed ones."""
    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


class StepClock(L.Callback):
    """Wall time from the first timed step's start to the last step's end."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.end = warmup, 0.0, 0.0

    def _sync(self, trainer: L.Trainer) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.global_step == self.warmup:
            self._sync(trainer)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._sync(trainer)
        self.end = time.perf_counter()


def lightning_seconds(args, path: str, text: Path, device: torch.device) -> float:
    encoder = load_encoder(path, pooler="avg")
    optimizer = lambda params: torch.optim.AdamW(params, lr=3e-5, fused=device.type == "cuda")  # noqa: E731
    module = SimCSEModule(encoder, optimizer, compile=args.compile)  # the project's `compile=true`
    data = ContrastiveDataModule(path, args.data_dir, str(text), batch_size=args.batch_size,
                                 max_length=args.length, num_workers=args.workers,
                                 bucket_batches=args.bucket_batches, static_shapes=args.compile)  # fmt: skip
    clock = StepClock(args.warmup)
    trainer = L.Trainer(accelerator=device.type, devices=1, precision=args.precision,
                        max_steps=args.warmup + args.steps, limit_val_batches=0, num_sanity_val_steps=0,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[clock])  # fmt: skip
    trainer.fit(module, datamodule=data)
    return clock.end - clock.start


def batches(path: str, text: Path, args, device: torch.device) -> list[dict[str, torch.Tensor]]:
    tokenizer = load_tokenizer(path)
    sentences = text.read_text().splitlines()
    out = []
    for i in range(args.warmup + args.steps):
        chunk = sentences[i * args.batch_size : (i + 1) * args.batch_size]
        tokens = tokenizer(chunk, padding=True, truncation=True, max_length=args.length, return_tensors="pt")
        out.append({k: v.to(device) for k, v in tokens.items()})
    return out


def plain_seconds(args, path: str, text: Path, device: torch.device) -> float:
    encoder = load_encoder(path, pooler="avg").to(device).train()
    if args.compile:
        encoder.backbone = torch.compile(encoder.backbone)
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=3e-5, fused=device.type == "cuda")
    data = iter(batches(path, text, args, device))

    def step() -> None:
        tokens = {k: torch.cat([v, v]) for k, v in next(data).items()}  # two dropout views, (2 B, T)
        with torch.autocast(device.type, torch.bfloat16, enabled=args.precision == "bf16-mixed"):
            emb = encoder(**tokens).view(2, args.batch_size, -1)
        simcse_loss(emb).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return timed(step, args.warmup, args.steps, device.type == "cuda")


def sentence_transformers_seconds(args, path: str, text: Path, device: torch.device) -> float:
    from sentence_transformers import SentenceTransformer, losses, models

    word = models.Transformer(path, max_seq_length=args.length)
    st = SentenceTransformer(modules=[word, models.Pooling(word.get_word_embedding_dimension(), "mean")],
                             device=str(device))  # fmt: skip
    st.train()
    loss_fn = losses.MultipleNegativesRankingLoss(st, scale=20.0)
    optimizer = torch.optim.AdamW(st.parameters(), lr=3e-5, fused=device.type == "cuda")
    data = iter(batches(path, text, args, device))

    def step() -> None:
        features = next(data)
        with torch.autocast(device.type, torch.bfloat16, enabled=args.precision == "bf16-mixed"):
            loss = loss_fn([dict(features), dict(features)], labels=None)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return timed(step, args.warmup, args.steps, device.type == "cuda")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=["minilm", "bert-base"], default="minilm")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="each variant this many times, interleaved")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--corpus", choices=["filler", "snli"], default="filler")
    parser.add_argument(
        "--bucket-batches", type=int, default=0, help="the Lightning variant's data.bucket_batches"
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="Lightning: the project's compile=true (step compiled, batches padded to --length); "
        "plain loop: torch.compile of the backbone; sentence-transformers: eager",
    )
    parser.add_argument("--data-dir", default=None, help="SentEval folder (STS-B dev for the DataModule)")
    args = parser.parse_args()
    from sparsecse.core.paths import default_data_dir

    args.data_dir = args.data_dir or str(default_data_dir())
    device, where = pick_device()
    args.precision = "bf16-mixed" if device.type == "cuda" else "32-true"
    tokens = args.steps * args.batch_size * args.length
    variants = {"lightning": lightning_seconds, "plain": plain_seconds,
                "sentence-transformers": sentence_transformers_seconds}  # fmt: skip
    rates: dict[str, list[float]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as work:
        path = model_dir(args.shape, Path(work))
        lines = (args.warmup + args.steps + 1) * args.batch_size
        if args.bucket_batches:  # the grouped loader draws its first batches from the whole corpus
            lines = max(lines, args.bucket_batches * args.batch_size)
        text = corpus(Path(work) / "corpus.txt", lines, args.corpus, args.data_dir)
        peak: dict[str, float] = {}  # GiB of GPU memory allocated at the most, per variant
        for _ in range(args.rounds):  # interleaved, so that drifts in the machine's speed hit all three
            for name, run in variants.items():
                torch.manual_seed(0)
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                rates[name].append(tokens / run(args, path, text, device))
                if device.type == "cuda":
                    peak[name] = max(peak.get(name, 0.0), torch.cuda.max_memory_allocated() / 2**30)
    median = {name: statistics.median(values) for name, values in rates.items()}
    grouped = f" (Lightning's grouped by length, runs of {args.bucket_batches})" * bool(args.bucket_batches)
    setting = f"{args.shape}, {args.corpus} corpus{grouped}, batch {args.batch_size} x length {args.length}"
    setting += f", {args.precision}"
    timing = f"{args.steps} steps after {args.warmup} warm-up, median of {args.rounds} rounds"
    print(f"{setting}, {timing}, on {where}")
    print("tokens/s counts batch x length (the maximum length) per step, padding or not")
    for name, values in rates.items():
        memory = f", peak GPU memory {peak[name]:.2f} GiB" if name in peak else ""
        print(f"{name:>22}: {median[name]:10.0f} tokens/s  (rounds: {', '.join(f'{v:.0f}' for v in values)})"
              f"{memory}")  # fmt: skip
    print(f"lightning / sentence-transformers: {median['lightning'] / median['sentence-transformers']:.2f}x")
    print(f"lightning / plain loop:            {median['lightning'] / median['plain']:.2f}x")


if __name__ == "__main__":
    main()
