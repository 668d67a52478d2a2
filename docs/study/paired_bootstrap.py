"""Paired bootstrap over the STS test pairs for the study's headline comparisons: is the gain of a
pruned encoder over the dense one larger than the sampling of the test sets would make it? The ± of
the study's tables covers seeds (scoring batches, dropout, random scores), not test-set sampling.
docs/study.md cites its output. Not a test.

After training, each point is rebuilt as `sparsecse-study` built it (the study folder's recorded
config, the same scoring and removal) and checked against its committed results.json first:

    python docs/study/paired_bootstrap.py after docs/study/minilm-structured --score magnitude --p 0.1
    python docs/study/paired_bootstrap.py after docs/study/minilm-unstructured --score alignment --p 0.3

During training, each arm's checkpoint against the SimCSE arm's of the same seeds, as the runs
selected them (`best.ckpt`, "after") and at the final step (`last.ckpt`, "final"):

    python docs/study/paired_bootstrap.py during SWEEP_DIR --arm demo --reference none
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path

from sparsecse.evaluation.bootstrap import paired_bootstrap
from sparsecse.evaluation.sts import STS_TASKS, spearman_x100, sts_similarities
from sparsecse.export.model_io import load_encoder
from sparsecse.pruning.sparsifier import Sparsifier
from sparsecse.pruning.study import pruned_copy, score_dense
from sparsecse.training.data import ContrastiveDataModule

SWEPT = ("granularity", "score", "seed")


def sts_avg(similarities: dict) -> float:
    return sum(spearman_x100(*pair) for pair in similarities.values()) / len(similarities)


TOLERANCE = 0.005  # float noise of another transformers or BLAS build; another model moves it by far more


def checked(similarities: dict, results: Path, key: str = "after") -> dict:
    """The similarities, once their STS avg is the one `results` recorded (the same model rebuilt)."""
    recorded = json.loads(results.read_text())[key]["sts_avg"]
    got = sts_avg(similarities)
    print(f"{results.parent.name} ({key}): STS avg {got:.4f} rebuilt, {recorded:.4f} recorded")
    if abs(got - recorded) > TOLERANCE:
        raise SystemExit(f"{results}: rebuilt STS avg {got:.6f}, recorded {recorded:.6f}")
    return similarities


def after_training(study_dir: Path, score: str, p: float, seeds: Sequence[int], resamples: int) -> None:
    config = json.loads((study_dir / "study_config.json").read_text())
    data_dir = os.environ.get("SPARSECSE_DATA_DIR", config["data_dir"])
    dense = load_encoder(config["model"], config["pooler"]).eval()
    data = ContrastiveDataModule(dense.name_or_path, data_dir, config["train_file"], config["batch_size"],
                                 config["max_length"])  # fmt: skip
    similarities = lambda encoder: sts_similarities(encoder.encode, data.data_dir, STS_TASKS)  # noqa: E731
    granularity = config["granularities"][0]
    reference = checked(similarities(dense), study_dir / "dense" / "results.json")
    options = {k: v for k, v in config["sparsifier"].items() if k not in SWEPT}
    options.setdefault("ffn_multiple_of", 1)  # a study config without the key ran the plain ranking
    pruned = []
    for seed in seeds:
        sparsifier = Sparsifier(granularity=granularity, score=score, seed=seed, **options)
        importance = score_dense(dense, sparsifier, iter(data.scoring_dataloader(seed)))
        encoder = pruned_copy(dense, sparsifier, importance, p)[0]
        point = study_dir / granularity / score / f"sparsity={p:g},seed={seed}" / "results.json"
        pruned.append(checked(similarities(encoder), point))
        difference = paired_bootstrap([reference], pruned[-1:], resamples)
        print(f"{granularity} {score} p={p:g} seed {seed} - dense: {difference}")
    print(f"{granularity} {score} p={p:g} seeds {list(seeds)} (mean) - dense: "
          f"{paired_bootstrap([reference], pruned, resamples)}")  # fmt: skip


def scored_run(run: Path, checkpoint: str, key: str, data_dir: str) -> dict:
    encoder = load_encoder(str(run / "checkpoints" / checkpoint)).eval()
    return checked(sts_similarities(encoder.encode, data_dir, STS_TASKS), run / "results.json", key)


def during_training(sweep: Path, arm: str, reference_arm: str, seeds: Sequence[int], resamples: int) -> None:
    data_dir = os.environ["SPARSECSE_DATA_DIR"]
    for checkpoint, key in (("best.ckpt", "after"), ("last.ckpt", "final")):
        runs = {
            name: [sweep / f"pruning={name},seed={seed}" for seed in seeds] for name in (arm, reference_arm)
        }
        scored = {
            name: [scored_run(run, checkpoint, key, data_dir) for run in folders]
            for name, folders in runs.items()
        }
        for index, seed in enumerate(seeds):
            difference = paired_bootstrap([scored[reference_arm][index]], [scored[arm][index]], resamples)
            print(f"{key}: {arm} - {reference_arm}, seed {seed}: {difference}")
        means = paired_bootstrap(scored[reference_arm], scored[arm], resamples)
        print(f"{key}: {arm} - {reference_arm}, mean over seeds {list(seeds)}: {means}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=["after", "during"])
    parser.add_argument("folder", type=Path, help="a sparsecse-study output_dir, or a during-training sweep")
    parser.add_argument("--score", default="magnitude")
    parser.add_argument("--p", type=float, default=0.1)
    parser.add_argument("--arm", default="demo")
    parser.add_argument("--reference", default="none")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    if args.kind == "after":
        after_training(args.folder, args.score, args.p, args.seeds, args.resamples)
    else:
        during_training(args.folder, args.arm, args.reference, args.seeds, args.resamples)


if __name__ == "__main__":
    main()
