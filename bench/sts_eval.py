"""Wall time of the 7-task STS evaluation (STS12-16, STS-B, SICK-R; SentEval's "all" protocol) of
all-MiniLM-L6-v2, with its scores. SentEval's own run of the same took 190 s on a 2-core CPU;
the scores must equal SentEval's (tests/test_sts.py checks them). Not a test.

    python bench/sts_eval.py
    python bench/sts_eval.py --batch-size 256
    python bench/sts_eval.py --compile      # static shapes, CUDA graphs on a GPU (compile time included)
"""

from __future__ import annotations

import argparse
import time

from machine import pick_device

from sparsecse.core.paths import default_data_dir
from sparsecse.evaluation import evaluate_encoder
from sparsecse.export.model_io import load_encoder

SENTEVAL_SECONDS = 190.0  # SentEval on the same 2-core CPU


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--compile", action="store_true", help="SentenceEncoder.compile_for_inference")
    args = parser.parse_args()
    device, where = pick_device()
    encoder = load_encoder("minilm", pooler="avg").to(device).eval()
    start = time.perf_counter()
    if args.compile:
        encoder.compile_for_inference()
    scores = evaluate_encoder(encoder, args.data_dir or default_data_dir(), ["sts"], args.batch_size)
    seconds = time.perf_counter() - start
    print(
        f"MiniLM STS on {where}, batch {args.batch_size}{', compiled' * args.compile}: "
        + " ".join(f"{k} {v:.2f}" for k, v in scores.items())
    )
    print(f"{seconds:.1f} s ({seconds / SENTEVAL_SECONDS:.2f} of SentEval's {SENTEVAL_SECONDS:.0f} s)")


if __name__ == "__main__":
    main()
