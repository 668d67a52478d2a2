"""`python train.py` / `sparsecse-train`: the Hydra entry point. See conf/train.yaml."""

from __future__ import annotations

import json
import logging
import sys
import uuid
from functools import partial
from pathlib import Path

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from callbacks.checkpointing import LastCheckpoint
from sparsecse.cli import CONFIG_DIR, exit_on_config_error, run_checked
from sparsecse.cli.config import check_config
from sparsecse.encoder import check_pooler
from sparsecse.errors import ConfigError
from sparsecse.evaluation import (
    check_evaluation,
    check_senteval_files,
    evaluate_encoder,
    format_table,
    write_results,
)
from sparsecse.export import save_sparse_encoder
from sparsecse.loading import load_checkpoint_file, load_config
from sparsecse.paths import run_name
from sparsecse.plots import align_uniform_path
from sparsecse.pruning import counted_parameters, pruned_any, remove_pruned_units, sparsity_summary
from sparsecse.runs import RESULTS, check_run_folder, record_config

log = logging.getLogger("sparsecse.train")
NOT_IN_FOLDER_NAMES = ("resume", "ckpt_path")  # restarting a run must not move it to another folder


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def sweep_name() -> str:
    """A sweep's folder name: its command line's overrides (Hydra's own and restart keys left out)."""
    typed = [a for a in sys.argv[1:] if "=" in a and not a.startswith(("-", "hydra.", "hydra/"))]
    return run_name([a for a in typed if override_key(a) not in NOT_IN_FOLDER_NAMES])


def swept_overrides(sweep_dir: str, overrides: list[str], sweeper_params: DictConfig | None) -> list[str]:
    """A sweep job's overrides of the swept keys (all of them if the swept keys are unknown)."""
    swept = swept_keys(Path(sweep_dir), sweeper_params)
    return [o for o in overrides if swept is None or override_key(o) in swept]


def job_name(sweep_dir: str, overrides: list[str], sweeper_params: DictConfig | None) -> str:
    """A sweep job's folder name: its values of the swept keys ("default" for the one job of a
    multirun that sweeps nothing)."""
    return run_name(swept_overrides(sweep_dir, overrides, sweeper_params))


# Run folders are named by the overrides, not the clock, so a requeued job finds its checkpoints.
# Cached: a job launched elsewhere (submitit) gets the sweep's name from the sweep's pickled config.
OmegaConf.register_new_resolver("sparsecse_sweep_name", sweep_name, use_cache=True, replace=True)
OmegaConf.register_new_resolver("sparsecse_job_name", job_name, replace=True)
OmegaConf.register_new_resolver("sparsecse_run_name", run_name, replace=True)


def instantiate_group(cfg: DictConfig, group: str, **kwargs):
    """Instantiate `cfg[group]`; a ConfigError from inside names the key under the group."""
    try:
        return instantiate(cfg[group], **kwargs)
    except Exception as err:
        cause = err if isinstance(err, ConfigError) else err.__cause__
        if isinstance(cause, ConfigError):
            raise cause.under(group) from None
        raise


def instantiate_dict(entries: DictConfig | None, **extra_for: dict) -> list:
    """Named `_target_` entries (callbacks, loggers) -> objects; a null entry is dropped.
    `extra_for` maps a class-name suffix to keyword arguments given to those entries unless set."""
    objects = []
    for entry in (entries or {}).values():
        if entry is None:
            continue
        extra = next((kw for suffix, kw in extra_for.items() if entry._target_.endswith(suffix)), {})
        objects.append(instantiate(entry, **{k: v for k, v in extra.items() if not entry.get(k)}))
    return objects


def swept_keys(sweep_dir: Path, sweeper_params: DictConfig | None) -> set[str] | None:
    """Keys given several values in this sweep, on the command line (as `multirun.yaml`, written
    before the jobs start, records it) or in `hydra.sweeper.params`; None if unknown."""
    try:
        command_line = OmegaConf.load(sweep_dir / "multirun.yaml").hydra.overrides.task
    except (OSError, AttributeError):
        return None
    parsed = OverridesParser.create().parse_overrides(list(command_line))
    keys = {o.key_or_group for o in parsed if o.is_sweep_override()}
    return keys | {k for k, v in (sweeper_params or {}).items() if "," in str(v)}


def sweep_identity(task_name: str) -> dict:
    """Inside a Hydra multirun: the wandb group (the sweep), and the run's name and tags: the values
    this job takes for the swept keys (the tags leave out the seed, so a setting's seeds share them)."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return {"name": task_name}
    hydra_cfg = HydraConfig.get()
    chosen = swept_overrides(
        hydra_cfg.sweep.dir, list(hydra_cfg.overrides.task), hydra_cfg.sweeper.get("params")
    )
    return {
        "group": f"{task_name}/{Path(hydra_cfg.sweep.dir).name}",
        "name": ",".join(chosen) or task_name,
        "tags": [o[:64] for o in chosen if override_key(o) != "seed"],  # wandb's limit: 64 characters
    }


def wandb_run_id(output_dir: Path) -> str:
    """The run folder's wandb id, created on first use: a restarted job logs into the same run."""
    path = output_dir / "wandb_run_id"
    if path.is_file():
        return path.read_text().strip()
    run_id = uuid.uuid4().hex[:12]
    if rank_zero_only.rank == 0:
        output_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(run_id + "\n")
    return run_id


def instantiate_loggers(cfg: DictConfig) -> list[Logger]:
    """The `logger` entries; wandb ones get the sweep's group, name and tags, and the run folder's
    id (resumed when the job restarts), unless set."""
    entries = cfg.get("logger") or {}
    if not any(e is not None and e._target_.endswith("WandbLogger") for e in entries.values()):
        return instantiate_dict(entries)
    identity = sweep_identity(cfg.task_name)
    identity |= {"id": wandb_run_id(Path(cfg.output_dir)), "resume": "allow"}
    return instantiate_dict(entries, WandbLogger=identity)


def preflight(cfg: DictConfig):
    """Checks that need no data and no weights, so that a typo fails in a second; returns the
    model's config."""
    try:
        check_pooler(cfg.model.encoder.pooler)
        model_config = load_config(cfg.model.encoder.name_or_path)
    except ConfigError as err:
        raise err.under("model.encoder") from None
    try:
        check_evaluation(cfg.evaluate.tasks, cfg.evaluate.transfer_preset)
    except ConfigError as err:
        raise err.under("evaluate") from None
    if cfg.evaluate.before or cfg.evaluate.after:
        check_senteval_files(Path(cfg.data_dir), cfg.evaluate.tasks)
    return model_config


def check_launch(trainer: L.Trainer) -> None:
    """Lightning's subprocess DDP launcher re-runs this script's command line for each extra device;
    inside a Hydra multirun that command is the whole sweep, so every job would start the sweep again."""
    launcher = trainer.strategy.launcher
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
        load_checkpoint_file(cfg.ckpt_path, "ckpt_path")  # refuses a missing or unsafe file up front
        return cfg.ckpt_path
    last = last_checkpoint(callbacks)
    if cfg.resume and last is not None and last.is_file():
        log.info(f"resuming from {last} (resume=false starts afresh)")
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


def train(cfg: DictConfig) -> dict:
    """Evaluate, fit, evaluate again; returns {"before": ..., "after": ..., "val": ...}."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    check_config(resolved)  # every key, type and range, in a second
    model_config = preflight(cfg)
    pruning = build_pruning(cfg, model_config)
    callbacks = instantiate_dict(cfg.get("callbacks")) + ([pruning] if pruning else [])
    finished = check_run_folder(Path(cfg.output_dir), resolved, cfg.resume, last_checkpoint(callbacks))
    if finished is not None:
        print(f"{cfg.output_dir} already finished with this config; its results are in "
              f"{Path(cfg.output_dir) / RESULTS} (resume=false trains it again)")  # fmt: skip
        return finished
    if rank_zero_only.rank == 0:
        record_config(Path(cfg.output_dir), resolved)
    loggers = instantiate_loggers(cfg)
    trainer = build_trainer(cfg, callbacks, loggers)
    ckpt_path = resume_from(cfg, callbacks)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate_group(cfg, "data")
    module = instantiate_group(cfg, "model")
    for logger in loggers:
        logger.log_hyperparams(resolved)

    results: dict = {}
    evaluate = partial(
        evaluate_on_training_device, trainer, module.encoder, cfg.evaluate, datamodule.data_dir
    )
    if pruning:  # here too, not only in the callback's setup: DDP spawn returns rank 0's gates
        pruning.sparsifier.attach(module.encoder)
    dense_parameters = counted_parameters(module.encoder)
    if cfg.evaluate.before and rank_zero_only.rank == 0:
        results["before"] = evaluate_before(cfg, evaluate, resuming=ckpt_path is not None)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    trainer.strategy.barrier("sparsecse-fit-done")
    if not trainer.is_global_zero:
        return results  # under DDP, rank 0 alone evaluates, writes and publishes
    results["val"] = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    results["val_history"] = module.val_history
    results["checkpoints"] = checkpoint_files(trainer, callbacks, pruning)
    if "best" in results["checkpoints"]:
        results["best_val/stsb_spearman"] = float(trainer.checkpoint_callback.best_model_score)
        best = load_checkpoint_file(results["checkpoints"]["best"], "best_checkpoint")
        module.load_state_dict(best["state_dict"])
    results["parameters"] = counted_parameters(module.encoder)
    results["dense_parameters"] = dense_parameters
    results["parameter_sparsity"] = 1.0 - results["parameters"] / dense_parameters
    if pruned_any(module.encoder):
        results["sparsity"] = sparsity_summary(module.encoder)
    remove_pruned_units(module.encoder)  # physical removal: smaller and faster from here on
    if cfg.evaluate.after:
        results["after"] = evaluate()
    rows = {name: results[name] for name in ("before", "after") if name in results}
    plots = report(cfg, module, results, rows)
    publish(loggers, results, rows, plots, trainer.global_step)
    return results


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


def final_metrics(results: dict) -> dict[str, float]:
    """results.json flattened to `after/sts_avg`-style keys, the numbers only."""
    flat: dict[str, float] = {}
    for key, value in results.items():
        if isinstance(value, dict):
            numbers = {k: v for k, v in value.items() if isinstance(v, (int, float))}
            flat.update({k if "/" in k else f"{key}/{k}": float(v) for k, v in numbers.items()})
        elif isinstance(value, (int, float)):
            flat[key] = float(value)
    return flat


def publish(loggers: list[Logger], results: dict, rows: dict, plots: list[Path], step: int) -> None:
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


def report(cfg: DictConfig, module, results: dict, rows: dict) -> list[Path]:
    """Print the evaluation rows side by side; save the encoder, results.json and the run's plots
    in the run directory; returns the plots."""
    if rows:
        print(format_table(rows))
    output_dir = Path(cfg.output_dir)
    if cfg.save_model:
        save_sparse_encoder(module.encoder, output_dir / "model")
    write_results(output_dir / RESULTS, results)
    if len(results["val_history"]) < 2:
        return []
    return [align_uniform_path(results["val_history"], output_dir / "align_uniform_path.png")]


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def hydra_main(cfg: DictConfig) -> None:
    exit_code = 1
    try:
        with exit_on_config_error("sparsecse-train"):
            train(cfg)
        exit_code = 0
    finally:
        import wandb

        # every job of a multirun closes its own run, failed ones with a non-zero exit code;
        # otherwise the next job would log into this one ("run already in progress")
        wandb.finish(exit_code=exit_code)


def main() -> None:
    run_checked("sparsecse-train", CONFIG_DIR, "train", hydra_main)


if __name__ == "__main__":
    main()
