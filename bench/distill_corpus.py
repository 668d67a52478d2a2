"""The distillation corpus without captions of docs/compression.md ("Why the distilled student scores
above its teacher"): the distinct sentences of SentEval's SUBJ, MR and CR files (movie plots, movie
and product reviews), in file order, shuffled with seed 0, one per line. Writes a file; not a test.

    python bench/distill_corpus.py REVIEWS.txt
    sparsecse-prune model=minilm pooler=avg "tasks=[sts]" pruning.head_sparsity=0 pruning.ffn_sparsity=0 \
        recovery.steps=500 seed=1 evaluate_before=false train_file=REVIEWS.txt output_dir=DIR
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from sparsecse.core.paths import default_data_dir

FILES = ("SUBJ/subj.objective", "SUBJ/subj.subjective", "MR/rt-polarity.neg", "MR/rt-polarity.pos",
         "CR/custrev.neg", "CR/custrev.pos")  # fmt: skip


def reviews_corpus(data_dir: Path, seed: int = 0) -> list[str]:
    lines = [
        line.strip()
        for name in FILES
        for line in (data_dir / name).read_text(encoding="latin-1").splitlines()
    ]
    sentences = list(dict.fromkeys(line for line in lines if line))
    random.Random(seed).shuffle(sentences)
    return sentences


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the text file to write (outside the project)")
    args = parser.parse_args()
    sentences = reviews_corpus(Path(default_data_dir()))
    args.out.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    print(f"{len(sentences)} sentences -> {args.out}")


if __name__ == "__main__":
    main()
