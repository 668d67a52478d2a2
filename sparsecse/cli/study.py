"""`sparsecse-study`: the study after training, one command. See conf/tools/study.yaml."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from sparsecse.cli import tool_main
from sparsecse.cli.evaluate import model_key, pick_device
from sparsecse.data import ContrastiveDataModule
from sparsecse.encoder import check_pooler
from sparsecse.errors import ConfigError
from sparsecse.evaluation import check_evaluation, evaluate_encoder, write_results
from sparsecse.gates import counted_parameters
from sparsecse.importance import Sparsifier
from sparsecse.model_io import load_encoder
from sparsecse.study import StudyPoint, run_study, study_points
from sparsecse.validation import Fraction, check_value

SWEPT = ("granularity", "score", "seed")  # set per point from the study's lists
DENSE = {"granularity": "dense", "score": "dense", "sparsity": "0"}


def point_dir(output_dir: Path, point: StudyPoint) -> Path:
    return output_dir / point.granularity / point.score / f"sparsity={point.sparsity:g},seed={point.seed}"


def check_study(cfg: DictConfig, options: dict) -> list[StudyPoint]:
    """Every list and option checked before anything loads; the points of the study."""
    for index, p in enumerate(cfg.sparsities):
        check_value(f"sparsities[{index}]", p, Fraction)
    for granularity in cfg.granularities:
        for score in cfg.scores:
            try:
                Sparsifier(granularity=granularity, score=score, **options)
            except ConfigError as err:  # the lists are named in the plural
                lists = {"granularity": "granularities", "score": "scores"}
                raise ConfigError(lists.get(err.key, f"sparsifier.{err.key}"), err.message) from None
    if not (cfg.granularities and cfg.scores and cfg.seeds and cfg.sparsities):
        raise ConfigError("sparsities", "granularities, scores, seeds and sparsities must each be non-empty")
    return study_points(list(cfg.granularities), list(cfg.scores), list(cfg.seeds), list(cfg.sparsities))


def study(cfg: DictConfig) -> dict:
    """Evaluate the dense encoder, then every point; write each results.json; returns the timing."""
    if OmegaConf.is_missing(cfg, "output_dir"):
        raise ConfigError("output_dir", "is required: where to write the study's results")
    tasks = check_evaluation(cfg.tasks, cfg.transfer_preset)
    check_pooler(cfg.pooler)
    node = OmegaConf.to_container(cfg.sparsifier, resolve=True)
    options = {k: v for k, v in node.items() if k not in SWEPT}
    points = check_study(cfg, options)
    with model_key():
        data = ContrastiveDataModule(cfg.model, cfg.data_dir, cfg.train_file, cfg.batch_size, cfg.max_length)
        dense = load_encoder(cfg.model, cfg.pooler).to(pick_device(cfg.device))
    evaluate = partial(evaluate_encoder, data_dir=data.data_dir, tasks=tasks, batch_size=cfg.eval_batch_size,
                       transfer_preset=cfg.transfer_preset)  # fmt: skip
    output_dir = Path(cfg.output_dir)
    started = time.perf_counter()
    dense_results = {"setting": DENSE, "after": evaluate(dense), "parameters": counted_parameters(dense),
                     "parameter_sparsity": 0.0}  # fmt: skip
    dense_results["seconds"] = {"evaluation": time.perf_counter() - started}
    write_results(output_dir / "dense" / "results.json", dense_results)
    batches = lambda seed: iter(data.scoring_dataloader(seed))  # noqa: E731
    timing = {"dense": dense_results["seconds"]["evaluation"], "scoring": 0.0, "evaluation": 0.0}
    for point, results in run_study(dense, evaluate, batches, points, options):
        write_results(point_dir(output_dir, point) / "results.json", {"setting": point.setting, **results})
        timing["scoring"] += results["seconds"]["scoring"]
        timing["evaluation"] += results["seconds"]["evaluation"]
        print(f"{point.granularity} {point.score} seed={point.seed} p={point.sparsity:g}: "
              f"STS avg {results['after'].get('sts_avg', float('nan')):.2f}")  # fmt: skip
    timing["points"] = len(points)
    record = {"timing_seconds": timing, "config": OmegaConf.to_container(cfg, resolve=True)}
    write_results(output_dir / "study.json", record)
    print(f"{len(points)} points in {sum(v for k, v in timing.items() if k != 'points'):.0f} s; "
          f"`sparsecse-report {output_dir}` for the tables and plots")  # fmt: skip
    return timing


main = tool_main("sparsecse-study", "study", study)

if __name__ == "__main__":
    main()
