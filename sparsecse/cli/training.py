"""The steps of `train(cfg)`: pre-flight checks, the trainer, resuming, evaluation on the training
device, and the results a run writes and publishes."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig

from callbacks.checkpointing import LastCheckpoint
from sparsecse.cli.jobs import instantiate_group
from sparsecse.core.console import say
from sparsecse.core.console import stage as console_stage
from sparsecse.core.errors import ConfigError
from sparsecse.core.runs import RESULTS, TrainingResults
from sparsecse.data.download import fetch_missing
from sparsecse.evaluation import (
    check_evaluation,
    check_senteval_files,
    evaluate_encoder,
    format_table,
    result_keys,
    task_files,
    write_results,
)
from sparsecse.export.model_card import (
    base_model,
    plural,
    pruning_sentence,
    recovery_sentence,
    speed_target_sentence,
)
from sparsecse.export.model_io import encoder_from_checkpoint, save_sparse_encoder
from sparsecse.export.onnx_export import check_onnx_available
from sparsecse.model.encoder import SentenceEncoder, check_pooler
from sparsecse.model.loading import load_checkpoint_file, load_config
from sparsecse.report.plots import align_uniform_path
from sparsecse.training.data import data_files


def preflight(cfg: DictConfig):
    """Checks that need no data and no weights, so that a typo fails in a second; returns the
    model's config."""
    try:
        check_evaluation(cfg.evaluate.tasks, cfg.evaluate.transfer_preset)
    except ConfigError as err:
        raise err.under("evaluate") from None
    if cfg.get("optimized_metric") is not None:
        check_optimized_metric(cfg.optimized_metric, cfg.evaluate)
    if cfg.evaluate.final_step and not (cfg.get("callbacks") or {}).get("last_checkpoint"):
        raise ConfigError("evaluate.final_step", "needs callbacks.last_checkpoint, whose last.ckpt holds the "
                          "final step")  # fmt: skip
    if cfg.save_model and cfg.get("onnx", "none") != "none":
        check_onnx_available(cfg.onnx)
    try:
        check_pooler(cfg.model.encoder.pooler)
        model_config = load_config(cfg.model.encoder.name_or_path)
    except ConfigError as err:
        raise err.under("model.encoder") from None
    fetch_data(cfg)
    if cfg.evaluate.before or cfg.evaluate.after:
        check_senteval_files(Path(cfg.data.data_dir), cfg.evaluate.tasks)
    return model_config


VALIDATION_METRICS = ("val/stsb_spearman", "best_val/stsb_spearman")  # the last and the best validation


def optimizable_metrics(evaluate: DictConfig) -> list[str]:
    """What a run can return to a sweeper: `before/` and `after/` each key of the evaluation asked
    for, and the STS-B dev validation."""
    keys = result_keys(evaluate.tasks)
    phases = [phase for phase in ("after", "before") if evaluate[phase]]
    return [f"{phase}/{key}" for phase in phases for key in keys] + list(VALIDATION_METRICS)


def check_optimized_metric(name: str, evaluate: DictConfig) -> None:
    known = optimizable_metrics(evaluate)
    if name not in known:
        shown = ", ".join(known[:6]) + (", ..." if len(known) > 6 else "")
        raise ConfigError("optimized_metric", f"{name!r} is not a metric this run measures ({shown})")


def optimized_value(results: TrainingResults, name: str) -> float:
    """The value of `name` (as `optimizable_metrics` names it) in a run's results."""
    phase, key = name.split("/", 1)
    found = results.get(phase, {}).get(key) if phase in ("before", "after") else results.get(name)
    found = results.get("val", {}).get(name) if found is None else found
    if found is None:  # e.g. best_val/ when no validation ran after the last pruning event
        raise ConfigError("optimized_metric", f"{name} was not measured by this run")
    return float(found)


def fetch_data(cfg: DictConfig) -> None:
    """What the run reads and the data folder lacks, downloaded before anything loads
    (`data.download=auto`; under DDP by rank 0 while the others wait), or one line on how to get it."""
    data_dir = Path(cfg.data.data_dir).expanduser()
    files = data_files(data_dir, cfg.data.train_file)
    if cfg.evaluate.before or cfg.evaluate.after:
        files += task_files(cfg.evaluate.tasks)
    fetch_missing(data_dir, files, cfg.data.get("download", "never"), wait=rank_zero_only.rank != 0)


def stage(name: str):
    """sparsecse.core.console.stage for the training job: its lines on rank 0 only."""
    return console_stage("sparsecse-train", name, shown=rank_zero_only.rank == 0)


def check_launch(trainer: L.Trainer) -> None:
    """Lightning's subprocess DDP launcher re-runs this script's command line for each extra device;
    inside a Hydra multirun that command is the whole sweep, so every job would start the sweep again."""
    launcher = trainer.strategy.launcher  # no public way to ask whether it starts the other ranks itself
    in_multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    spawns = isinstance(launcher, _SubprocessScriptLauncher) and launcher.num_processes > 1
    if in_multirun and spawns and not launcher.cluster_environment.creates_processes_externally:
        raise ConfigError(
            "trainer.strategy",
            "Lightning's ddp launcher cannot run inside a Hydra multirun; start one process per device from "
            "outside (torchrun, srun, hydra/launcher=slurm) or use trainer.strategy=ddp_spawn",
        )


def last_checkpoint(callbacks: list) -> Path | None:
    """Where the LastCheckpoint callback writes `last.ckpt` (None without one)."""
    return next((c.path for c in callbacks if isinstance(c, LastCheckpoint)), None)


def resume_from(cfg: DictConfig, callbacks: list) -> str | None:
    """`ckpt_path` if given; else, with `resume`, the run folder's `last.ckpt` if a previous start of
    this job left one (a requeued or restarted job carries on where it stopped)."""
    if cfg.get("ckpt_path"):
        checkpoint = load_checkpoint_file(cfg.ckpt_path, "ckpt_path")  # a missing or unsafe file, up front
        if "loops" not in checkpoint:  # best.ckpt and step checkpoints keep weights only (save_weights_only)
            raise ConfigError("ckpt_path", f"{cfg.ckpt_path} holds weights only, not a training state to "
                              "resume; resume from the run's checkpoints/last.ckpt")  # fmt: skip
        return cfg.ckpt_path
    last = last_checkpoint(callbacks)
    if cfg.resume and last is not None and last.is_file():
        if rank_zero_only.rank == 0:
            say(f"sparsecse-train: resuming from {last} (resume=false starts afresh)")
        return str(last)
    return None


def build_trainer(cfg: DictConfig, callbacks: list, loggers: list[Logger]) -> L.Trainer:
    """The Trainer, refused before any compute if its launcher cannot work here. On SLURM, our
    LastCheckpoint saves and requeues on the preemption signal, so Lightning must not requeue too."""
    plugins = [instantiate(plugin) for plugin in cfg.trainer.get("plugins") or []]
    if SLURMEnvironment.detect():  # added to the configured plugins (AtomicCheckpointIO), not instead
        plugins.append(SLURMEnvironment(auto_requeue=False))
    trainer = instantiate_group(cfg, "trainer", callbacks=callbacks, logger=loggers or False, plugins=plugins)
    check_launch(trainer)
    return trainer


def evaluate_before(cfg: DictConfig, evaluate, resuming: bool) -> dict:
    """Scores of the encoder before training; a job resumed in its own folder reads those of its
    first start instead of evaluating again."""
    path = Path(cfg.output_dir) / "before.json"
    if resuming and path.is_file():
        return json.loads(path.read_text())
    scores = evaluate()
    write_results(path, scores)
    return scores


def evaluate_on_training_device(trainer: L.Trainer, encoder, settings: DictConfig, data_dir: Path) -> dict:
    """The tasks of the `evaluate` config (`settings`), on the device the trainer trains on (Lightning's
    teardown has moved the module back to the CPU after fit) and under its precision (autocast for
    `*-mixed`)."""
    encoder.to(trainer.strategy.root_device)
    with trainer.precision_plugin.forward_context():
        return evaluate_encoder(
            encoder, data_dir, settings.tasks, settings.batch_size, settings.transfer_preset
        )


def evaluate_final_step(results: TrainingResults, evaluate: Callable[[SentenceEncoder], dict]) -> dict:
    """Scores of the model of the last step ("final"): those of "after" when the best checkpoint is
    that step, else the encoder read back from `last.ckpt` by the loader `sparsecse-eval` uses. A
    study reports both, because arms that select among different steps are not comparable by "after"
    alone."""
    if results.get("best_step", results["steps"]) == results["steps"]:
        return dict(results["after"])
    with stage(f"evaluation of the final step ({results['steps']}; the best was {results['best_step']})"):
        return evaluate(encoder_from_checkpoint(results["checkpoints"]["last"]))


def build_pruning(cfg: DictConfig, model_config):
    """The pruning callback (None under `pruning=none`), checked against the model and the run."""
    if not cfg.get("pruning"):
        return None
    pruning = instantiate_group(cfg, "pruning")
    try:
        pruning.check(model_config, cfg.trainer.get("max_epochs"), cfg.trainer.get("max_steps"))
    except ConfigError as err:
        raise err.under("pruning") from None
    return pruning


def checkpoint_files(trainer: L.Trainer, callbacks: list, pruning) -> dict:
    """Which checkpoint file is which: `best` is the final best (reloaded, evaluated and exported),
    `best_before_final_pruning` the best ones from before the last pruning event, `last` where a
    restart resumes."""
    files: dict = {}
    if best := getattr(trainer.checkpoint_callback, "best_model_path", ""):
        files["best"] = best
    if pruning is not None and pruning.earlier_best:
        files["best_before_final_pruning"] = list(pruning.earlier_best)
    last = last_checkpoint(callbacks)
    if last is not None and last.is_file():
        files["last"] = str(last)
    return files


def final_metrics(results: TrainingResults) -> dict[str, float]:
    """results.json flattened to `after/sts_avg`-style keys, the numbers only."""
    flat: dict[str, float] = {}
    for key, value in results.items():
        if isinstance(value, dict):
            numbers = {k: v for k, v in value.items() if isinstance(v, (int, float))}
            flat.update({k if "/" in k else f"{key}/{k}": float(v) for k, v in numbers.items()})
        elif isinstance(value, (int, float)):
            flat[key] = float(value)
    return flat


def publish(
    loggers: list[Logger], results: TrainingResults, rows: dict, plots: list[Path], step: int
) -> None:
    """Final numbers to every logger; for wandb also the results table (`rows`: model -> metrics)
    and the run's plots."""
    metrics = final_metrics(results)
    columns = list(dict.fromkeys(k for row in rows.values() for k in row))
    for logger in loggers:
        logger.log_metrics(metrics, step=step)
        if isinstance(logger, WandbLogger):
            logger.experiment.summary.update(metrics)
            if rows:
                data = [[name, *(row.get(k) for k in columns)] for name, row in rows.items()]
                logger.log_table("results", columns=["model", *columns], data=data, step=step)
            for plot in plots:
                logger.log_image(f"plots/{plot.stem}", [str(plot)], step=step)
        logger.save()


def where_written(output_dir: Path, results: TrainingResults, saved_model: bool) -> list[str]:
    """The lines that end a run: its folder, and where its results, model and checkpoints are (with
    overrides, a run folder's name cannot be guessed)."""
    folder = output_dir.resolve()
    lines = [f"sparsecse-train: run folder {folder}", f"  results: {folder / RESULTS}"]
    if saved_model:
        lines.append(f"  model: {folder / 'model'}")
    checkpoints = results.get("checkpoints", {})
    lines += [f"  {name} checkpoint: {checkpoints[name]}" for name in ("best", "last") if name in checkpoints]
    return lines


def how_trained(cfg: DictConfig, results: TrainingResults, pruning=None) -> list[str]:
    """The model card's account of the run: its training, and its pruning if any (`pruning`: the
    run's ScheduledPruning, which holds the scoring, the schedule and the recovery it ran)."""
    data, model = cfg.data, cfg.model
    lines = [
        f"Trained with SimCSE's contrastive objective (temperature {model.temperature}) on "
        f"`{data.train_file}` for {results['steps']} steps: batch {data.batch_size}, learning rate "
        f"{model.optimizer.lr}, max length {data.max_length}, seed {cfg.seed}."
    ]
    if pruning is None or not (results.get("target_speedup") or results.get("sparsity")):
        return lines
    sparsifier, score = pruning.sparsifier, pruning.sparsifier.scorer.mode
    when = f"during training (schedule {[{event.unit: event.at} for event in pruning.events]})"
    if results.get("target_speedup"):
        base = base_model(str(cfg.model.encoder.name_or_path))
        speed, kept = results["target_speedup"], results["layers_kept"]
        lines.append(speed_target_sentence(base, speed, kept, results["dense_layers"], score, when))
    else:
        scored_on = f"{plural(sparsifier.num_batches, 'batch')} of the training data"
        lines.append(pruning_sentence(when, score, sparsifier.granularity, results["sparsity"], scored_on))
    if results.get("recovery") and pruning.recovery is not None:
        teacher = "the encoder before each pruning event"
        lines.append(recovery_sentence(pruning.recovery, data.train_file, teacher))
    return lines


def report(
    cfg: DictConfig,
    module,
    results: TrainingResults,
    rows: dict,
    calibration: Sequence[str] = (),
    pruning=None,
) -> list[Path]:
    """Print the evaluation rows side by side; save the encoder (`calibration`: training sentences,
    for `onnx=openvino-int8`; `pruning`: the run's ScheduledPruning, for the card), results.json and
    the run's plots in the run directory; returns the plots."""
    if rows:
        print(format_table(rows))
    output_dir = Path(cfg.output_dir)
    if cfg.save_model:
        counts = {k: results[k] for k in ("parameters", "dense_parameters")}
        card = how_trained(cfg, results, pruning)
        save_sparse_encoder(module.encoder, output_dir / "model", card, rows, counts, cfg.onnx,
                            results.get("dense_layers"), calibration)  # fmt: skip
    write_results(output_dir / RESULTS, results)
    if len(results["val_history"]) < 2:
        return []
    return [align_uniform_path(results["val_history"], output_dir / "align_uniform_path.png")]
