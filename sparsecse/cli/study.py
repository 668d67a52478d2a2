"""`sparsecse-study`: the study after training, one command. See conf/tools/study.yaml."""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from sparsecse.cli import tool_main
from sparsecse.cli.evaluate import model_key, pick_device
from sparsecse.core.console import stage
from sparsecse.core.errors import ConfigError, first_few
from sparsecse.core.runs import KEYS_NAMED, RESULTS, differences
from sparsecse.core.validation import Fraction, Speedup, check_value
from sparsecse.evaluation import check_evaluation, evaluate_encoder, write_results
from sparsecse.evaluation.table import headline
from sparsecse.export.model_io import load_encoder
from sparsecse.model.encoder import check_pooler
from sparsecse.pruning.gates import counted_parameters
from sparsecse.pruning.recovery import default_cache_dir
from sparsecse.pruning.sparsifier import Sparsifier
from sparsecse.pruning.speed_target import SpeedTarget
from sparsecse.pruning.study import JOINT, StudyPoint, run_study, study_points
from sparsecse.training.data import ContrastiveDataModule

SWEPT = ("granularity", "score", "seed")  # set per point from the study's lists
DENSE = {"granularity": "dense", "score": "dense", "sparsity": "0"}
STUDY_CONFIG = "study_config.json"
# A restarted study may ask for more points than the first start, and find its data elsewhere;
# everything else must be the same.
UNCOMPARED_STUDY_KEYS = ("granularities", "scores", "seeds", "sparsities", "target_speedups", "output_dir",
                         "data_dir")  # fmt: skip


def point_dir(output_dir: Path, point: StudyPoint) -> Path:
    amount = "speedup" if point.granularity == JOINT else "sparsity"
    return output_dir / point.granularity / point.score / f"{amount}={point.sparsity:g},seed={point.seed}"


def check_study_folder(output_dir: Path, config: dict) -> None:
    """Before anything loads: a folder with points of another study (another model, scoring or
    evaluation) is refused, so that a restart never mixes two studies; a new folder records `config`."""
    saved = output_dir / STUDY_CONFIG
    kept = lambda c: {k: v for k, v in c.items() if k not in UNCOMPARED_STUDY_KEYS}  # noqa: E731
    if saved.is_file():
        changed = differences(kept(json.loads(saved.read_text())), kept(json.loads(json.dumps(config))))
        if changed:
            which = first_few(changed, KEYS_NAMED, "; ")
            raise ConfigError("output_dir", f"{output_dir} holds a study of another config ({which}); "
                              "choose another output_dir")  # fmt: skip
        return
    if any(output_dir.rglob(RESULTS)):
        raise ConfigError("output_dir", f"{output_dir} holds results with no record of their config "
                          f"({STUDY_CONFIG}); choose another output_dir")  # fmt: skip
    output_dir.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def check_study(cfg: DictConfig, options: dict) -> list[StudyPoint]:
    """Every list and option checked before anything loads; the points of the study."""
    for index, p in enumerate(cfg.sparsities):
        check_value(f"sparsities[{index}]", p, Fraction)
    for index, x in enumerate(cfg.target_speedups):
        check_value(f"target_speedups[{index}]", x, Speedup)
    for granularity in cfg.granularities:
        for score in cfg.scores:
            try:
                Sparsifier(granularity=granularity, score=score, **options)
            except ConfigError as err:  # the lists are named in the plural
                lists = {"granularity": "granularities", "score": "scores"}
                raise ConfigError(lists.get(err.key, f"sparsifier.{err.key}"), err.message) from None
    if not (cfg.granularities and cfg.scores and cfg.seeds and cfg.sparsities):
        raise ConfigError("sparsities", "granularities, scores, seeds and sparsities must each be non-empty")
    return study_points(list(cfg.granularities), list(cfg.scores), list(cfg.seeds), list(cfg.sparsities),
                        list(cfg.target_speedups))  # fmt: skip


def study(cfg: DictConfig) -> dict:
    """Evaluate the dense encoder, then every point; write each results.json; returns the timing.
    A restart in the same output_dir keeps the points already written and runs the rest."""
    if OmegaConf.is_missing(cfg, "output_dir"):
        raise ConfigError("output_dir", "is required: where to write the study's results")
    if cfg.seed != 0:
        raise ConfigError("seed", f"sparsecse-study takes its seeds from `seeds` (e.g. seeds=[{cfg.seed}]); "
                          "`seed` is sparsecse-prune's")  # fmt: skip
    tasks = check_evaluation(cfg.tasks, cfg.transfer_preset)
    check_pooler(cfg.pooler)
    node = OmegaConf.to_container(cfg.sparsifier, resolve=True)
    options = {k: v for k, v in node.items() if k not in SWEPT}
    points = check_study(cfg, options)
    output_dir = Path(cfg.output_dir)
    config = OmegaConf.to_container(cfg, resolve=True)
    check_study_folder(output_dir, config)
    todo = [point for point in points if not (point_dir(output_dir, point) / RESULTS).is_file()]
    if len(todo) < len(points):
        print(f"{len(points) - len(todo)} of {len(points)} points already in {output_dir}: kept")
    with model_key():
        dense = load_encoder(cfg.model, cfg.pooler).to(pick_device(cfg.device))
    # The encoder's own name: a checkpoint (*.ckpt) records the model its tokenizer comes from.
    tokenizer = dense.name_or_path
    data = ContrastiveDataModule(tokenizer, cfg.data_dir, cfg.train_file, cfg.batch_size, cfg.max_length)
    evaluate = partial(evaluate_encoder, data_dir=data.data_dir, tasks=tasks, batch_size=cfg.eval_batch_size,
                       transfer_preset=cfg.transfer_preset)  # fmt: skip
    timing = {"dense": 0.0, "scoring": 0.0, "evaluation": 0.0}
    if not (output_dir / "dense" / RESULTS).is_file():
        started = time.perf_counter()
        dense_results = {"setting": DENSE, "after": evaluate(dense), "parameters": counted_parameters(dense),
                         "parameter_sparsity": 0.0}  # fmt: skip
        timing["dense"] = time.perf_counter() - started
        dense_results["seconds"] = {"evaluation": timing["dense"]}
        write_results(output_dir / "dense" / RESULTS, dense_results)
    batches = lambda seed: iter(data.scoring_dataloader(seed))  # noqa: E731
    latency = None
    if any(point.granularity == JOINT for point in todo):
        what = "latency model of the encoder in PyTorch (timed once per machine, cached)"
        with stage("sparsecse-study", what):
            target = SpeedTarget(max(cfg.target_speedups))
            latency, _ = target.latency(dense, data.sentences, default_cache_dir().parent)
    for point, results in run_study(dense, evaluate, batches, todo, options, latency):
        write_results(point_dir(output_dir, point) / RESULTS, {"setting": point.setting, **results})
        timing["scoring"] += results["seconds"]["scoring"]
        timing["evaluation"] += results["seconds"]["evaluation"]
        amount = f"{point.sparsity:g}x" if point.granularity == JOINT else f"p={point.sparsity:g}"
        print(f"{point.granularity} {point.score} seed={point.seed} {amount}: {headline(results['after'])}")
    timing["points"] = len(todo)
    record_path = output_dir / "study.json"  # one entry per start: a restart adds its own timing
    starts = json.loads(record_path.read_text())["starts"] if record_path.is_file() else []
    write_results(record_path, {"config": config, "starts": [*starts, {"timing_seconds": timing}]})
    print(f"{len(todo)} points in {sum(v for k, v in timing.items() if k != 'points'):.0f} s; "
          f"`sparsecse-report {output_dir}` for the tables and plots")  # fmt: skip
    return timing


main = tool_main("sparsecse-study", "study", study)

if __name__ == "__main__":
    main()
