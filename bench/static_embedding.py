"""The static-embedding reference: model2vec distilled from the same embedded MiniLM (its vocabulary's
token embeddings through the encoder, PCA to 256 dimensions, SIF weighting; no transformer at
inference), scored on the 7 STS tasks with this project's evaluator and timed with its harness
(sparsecse.pruning.speed) against the dense PyTorch model. Prints figures; not a test.

    python bench/static_embedding.py --out /work/m2v-minilm --rounds 5

It marks what a user gets at the extreme of speed: every pruned transformer is judged against it.
Needs the `[bench]` extra (model2vec, and skeletoken for its distillation).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from sparsecse.core.paths import default_data_dir, resolve_model_path
from sparsecse.evaluation import evaluate_encoder
from sparsecse.evaluation.sts import read_stsb
from sparsecse.pruning.speed import measure

PCA_DIMS = 256  # model2vec's default


class StaticEncoder:
    """`encode(texts) -> Tensor` over a model2vec model: the mean of its tokens' static vectors."""

    def __init__(self, path: Path):
        from model2vec import StaticModel

        self.model = StaticModel.from_pretrained(str(path))

    def encode(
        self, texts: Sequence[str], batch_size: int = 1024, show_progress: bool | str = False
    ) -> Tensor:
        return torch.from_numpy(self.model.encode(list(texts), batch_size=batch_size)).float()


def distilled(out: Path) -> tuple[Path, float]:
    """The model2vec model of the embedded MiniLM, distilled into `out` once; (path, seconds taken)."""
    if (out / "config.json").is_file():
        return out, 0.0
    from model2vec.distill import distill

    start = time.perf_counter()
    distill(model_name=resolve_model_path("minilm"), pca_dims=PCA_DIMS, device="cpu").save_pretrained(
        str(out)
    )
    return out, time.perf_counter() - start


def main() -> None:
    from sentence_transformers import SentenceTransformer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where the distilled model is kept")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    path, seconds = distilled(args.out)
    if seconds:
        print(f"distilled {path} in {seconds:.0f} s")
    data_dir = Path(default_data_dir())
    static = StaticEncoder(path)
    dense = SentenceTransformer(resolve_model_path("minilm"), device="cpu")
    encoders = {
        "dense PyTorch": lambda texts: dense.encode(list(texts), batch_size=64),
        "model2vec": lambda texts: static.encode(texts, batch_size=64),
    }
    stsb = read_stsb(data_dir, "dev")
    sentences = stsb.sent1 + stsb.sent2
    with torch.inference_mode():
        run = measure(encoders, sentences, "dense PyTorch", args.rounds, progress=print)
    scores = evaluate_encoder(static, data_dir, ["sts"], 128)
    print(f"model2vec ({PCA_DIMS} dims) of all-MiniLM-L6-v2, {torch.get_num_threads()} threads, "
          f"median of {args.rounds} rounds")  # fmt: skip
    print(
        f"speed-up over dense PyTorch: {run.speedups()['model2vec']:.1f}x (its rounds spread "
        f"{run.spread('model2vec'):.0%}); dense {run.reference_per_second():.1f} sentences/s at its fastest"
    )
    print("STS: " + ", ".join(f"{k} {v:.2f}" for k, v in scores.items()))


if __name__ == "__main__":
    main()
