"""`python train.py` / `sparsecse-train`: the Hydra entry point. See conf/train.yaml."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig

from sparsecse.cli import CONFIG_DIR, resolved, run_checked
from sparsecse.cli.config import check_config
from sparsecse.cli.jobs import (
    check_sweep_configs,
    check_warning_signal,
    instantiate_dict,
    instantiate_group,
    instantiate_loggers,
    job_exit,
)
from sparsecse.cli.training import (
    build_pruning,
    build_trainer,
    checkpoint_files,
    evaluate_before,
    evaluate_final_step,
    evaluate_on_training_device,
    last_checkpoint,
    optimized_value,
    preflight,
    publish,
    report,
    resume_from,
    stage,
    where_written,
)
from sparsecse.core.console import say
from sparsecse.core.runs import RESULTS, TrainingResults, check_run_folder, record_config
from sparsecse.model.loading import load_checkpoint_file
from sparsecse.pruning.gates import counted_parameters, pruned_any, sparsity_summary
from sparsecse.pruning.removal import remove_pruned_units


def train(cfg: DictConfig) -> TrainingResults:
    """Evaluate, fit, evaluate again; returns {"before": ..., "after": ..., "val": ...}."""
    config = resolved(cfg)
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        check_sweep_configs(Path(HydraConfig.get().sweep.dir), Path(CONFIG_DIR))
    check_config(config)  # every key, type and range, in a second
    check_warning_signal(cfg.get("callbacks"))
    model_config = preflight(cfg)
    pruning = build_pruning(cfg, model_config)
    callbacks = instantiate_dict(cfg.get("callbacks")) + ([pruning] if pruning else [])
    finished = check_run_folder(Path(cfg.output_dir), config, cfg.resume, last_checkpoint(callbacks))
    if finished is not None:
        print(f"{cfg.output_dir} already finished with this config; its results are in "
              f"{Path(cfg.output_dir) / RESULTS} (resume=false trains it again)")  # fmt: skip
        return finished
    if rank_zero_only.rank == 0:
        record_config(Path(cfg.output_dir), config)
    loggers = instantiate_loggers(cfg)
    trainer = build_trainer(cfg, callbacks, loggers)
    ckpt_path = resume_from(cfg, callbacks)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate_group(cfg, "data")
    module = instantiate_group(cfg, "model")
    for logger in loggers:
        logger.log_hyperparams(config)

    results: TrainingResults = {}
    evaluate = partial(
        evaluate_on_training_device, trainer, settings=cfg.evaluate, data_dir=datamodule.data_dir
    )
    if pruning:  # under ddp_spawn the main process runs no setup hook, and receives rank 0's gates
        pruning.attach(module.encoder)
    dense_parameters = counted_parameters(module.encoder)
    if cfg.evaluate.before and rank_zero_only.rank == 0:
        with stage("evaluation before training"):
            results["before"] = evaluate_before(
                cfg, partial(evaluate, module.encoder), resuming=ckpt_path is not None
            )
    with stage("training"):
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    trainer.strategy.barrier("sparsecse-fit-done")
    if not trainer.is_global_zero:
        return results  # under DDP, rank 0 alone evaluates, writes and publishes
    results["val"] = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    results["val_history"] = module.val_history
    results["steps"] = trainer.global_step
    results["checkpoints"] = checkpoint_files(trainer, callbacks, pruning)
    if "best" in results["checkpoints"]:
        results["best_val/stsb_spearman"] = float(trainer.checkpoint_callback.best_model_score)
        best = load_checkpoint_file(results["checkpoints"]["best"], "best_checkpoint")
        module.load_state_dict(best["state_dict"])
        results["best_step"] = best["global_step"]
    results["parameters"] = counted_parameters(module.encoder)
    results["dense_parameters"] = dense_parameters
    results["parameter_sparsity"] = 1.0 - results["parameters"] / dense_parameters
    if pruned_any(module.encoder):
        results["sparsity"] = sparsity_summary(module.encoder).metrics()
        results |= pruning.speed_record(module.encoder) if pruning else {}
    remove_pruned_units(module.encoder)  # evaluated and exported smaller and faster (METHOD.md section 5)
    if pruning and pruning.recoveries:
        results["recovery"] = pruning.recoveries
    if cfg.evaluate.after:
        with stage("evaluation after training"):
            results["after"] = evaluate(module.encoder)
    if cfg.evaluate.after and cfg.evaluate.final_step:
        results["final"] = evaluate_final_step(results, evaluate)
    rows = {name: results[name] for name in ("before", "after") if name in results}
    with stage("writing results" + (", the model" if cfg.save_model else "") + " and plots"):
        calibration = datamodule.sentences if cfg.onnx == "openvino-int8" else ()
        plots = report(cfg, module, results, rows, calibration, pruning)
    publish(loggers, results, rows, plots, trainer.global_step)
    for line in where_written(Path(cfg.output_dir), results, cfg.save_model):
        say(line)
    return results


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    """One job; returns `optimized_metric` (if set) to the sweeper, e.g. Optuna's."""
    with job_exit("sparsecse-train"):
        results = train(cfg)
        if cfg.optimized_metric is not None and rank_zero_only.rank == 0:
            return optimized_value(results, cfg.optimized_metric)
    return None


def main() -> None:
    run_checked("sparsecse-train", CONFIG_DIR, "train", hydra_main)


if __name__ == "__main__":
    main()
