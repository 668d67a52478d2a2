"""Resident memory of training on a 1M-line corpus against a 10k-line one (generated here): the
corpus is indexed by byte offset and read lazily, so the difference should be the offsets and the
epoch's permutation (8 + 8 bytes a line). Each size trains a few steps of MiniLM in a fresh process;
prints its peak RSS. Not a test.

    python bench/corpus_memory.py                    # 10k and 1M lines, 5 steps each
    python bench/corpus_memory.py --lines 10000 3000000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# glibc raises its mmap threshold each time a large block is freed, so training tensors land in the
# heap and the peak drifts by +-80 MB from run to run; a fixed threshold makes a run repeat within 1 MB.
FIXED_MALLOC = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
WORDS = "a man in a red shirt is riding a bike down the street while two dogs run beside him".split()


def write_corpus(path: Path, lines: int) -> Path:
    with open(path, "w") as f:
        for i in range(lines):
            # the number's digits are bounded, so that both corpora tokenise to the same batch lengths
            f.write(" ".join(WORDS[(i + j) % len(WORDS)] for j in range(8 + i % 12)) + f" {i % 10_000} .\n")
    return path


def train_once(corpus: Path, data_dir: str, steps: int) -> dict:
    """In this process: index the corpus, train `steps` steps; peak RSS in MB and the timings."""
    import lightning as L
    import torch

    from sparsecse.export.model_io import load_encoder
    from sparsecse.training.data import ContrastiveDataModule
    from sparsecse.training.module import SimCSEModule

    start = time.perf_counter()
    data = ContrastiveDataModule("minilm", data_dir, str(corpus), batch_size=64, num_workers=1)
    indexed = time.perf_counter() - start
    module = SimCSEModule(load_encoder("minilm", pooler="avg"),
                          lambda params: torch.optim.AdamW(params, lr=3e-5))  # fmt: skip
    trainer = L.Trainer(accelerator="cpu", max_steps=steps, limit_val_batches=0, num_sanity_val_steps=0,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)  # fmt: skip
    trainer.fit(module, datamodule=data)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    return {"lines": len(data.train_set), "peak_mb": peak_kb / 1024, "index_s": indexed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--data-dir", default=None, help="SentEval folder (STS-B dev for the DataModule)")
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # child mode: train on this corpus
    args = parser.parse_args()
    from sparsecse.core.paths import default_data_dir

    data_dir = args.data_dir or str(default_data_dir())
    if args.one:
        print(json.dumps(train_once(args.one, data_dir, args.steps)))
        return
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for lines in args.lines:
            corpus = write_corpus(Path(work) / f"corpus_{lines}.txt", lines)
            command = [sys.executable, __file__, "--one", str(corpus), "--steps", str(args.steps),
                       "--data-dir", data_dir]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True, check=True, env=FIXED_MALLOC)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append({**row, "file_mb": corpus.stat().st_size / 2**20})
    print(f"peak resident memory, training {args.steps} steps of MiniLM (batch 64) on a generated corpus")
    for row in rows:
        print(f"{row['lines']:>9} lines ({row['file_mb']:6.1f} MB file): peak RSS {row['peak_mb']:7.1f} MB, "
              f"indexed in {row['index_s']:.1f} s")  # fmt: skip
    print(f"difference, largest - smallest: {rows[-1]['peak_mb'] - rows[0]['peak_mb']:.1f} MB")


if __name__ == "__main__":
    main()
