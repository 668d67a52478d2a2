"""`python train.py` / `sparsecse-train`: the Hydra entry point. See conf/train.yaml."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from sparsecse.encoder import check_pooler, load_config
from sparsecse.errors import ConfigError
from sparsecse.evaluation import evaluate_encoder, expand_tasks, format_table, write_results
from sparsecse.export import save_sparse_encoder
from sparsecse.paths import default_data_dir
from sparsecse.pruning import remove_pruned_units, sparsity_summary

REPO_ROOT = Path(__file__).resolve().parent
CONFIG_DIR = str(REPO_ROOT / "conf")
OmegaConf.register_new_resolver("sparsecse_data_dir", lambda: str(default_data_dir()), replace=True)


def instantiate_group(cfg: DictConfig, group: str, **kwargs):
    """Instantiate `cfg[group]`; a ConfigError from inside names the key under the group."""
    try:
        return instantiate(cfg[group], **kwargs)
    except Exception as err:
        cause = err if isinstance(err, ConfigError) else err.__cause__
        if isinstance(cause, ConfigError):
            raise cause.under(group) from None
        raise


def instantiate_dict(entries: DictConfig | None) -> list:
    """Named `_target_` entries (callbacks, loggers) -> objects; a null entry is dropped."""
    return [instantiate(entry) for entry in (entries or {}).values() if entry is not None]


def preflight(cfg: DictConfig):
    """Checks that need no data and no weights, so that a typo fails in a second; returns the
    model's config."""
    try:
        check_pooler(cfg.model.encoder.pooler)
        model_config = load_config(cfg.model.encoder.name_or_path)
    except ConfigError as err:
        raise err.under("model.encoder") from None
    try:
        expand_tasks(cfg.evaluate.tasks)
    except ConfigError as err:
        raise err.under("evaluate") from None
    return model_config


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
    model_config = preflight(cfg)
    pruning = build_pruning(cfg, model_config)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate_group(cfg, "data")
    module = instantiate_group(cfg, "model")
    loggers = instantiate_dict(cfg.get("logger"))
    callbacks = instantiate_dict(cfg.get("callbacks")) + ([pruning] if pruning else [])
    trainer = instantiate_group(cfg, "trainer", callbacks=callbacks, logger=loggers or False)
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    results: dict = {}
    evaluate = lambda: evaluate_encoder(  # noqa: E731
        module.encoder, datamodule.data_dir, cfg.evaluate.tasks, cfg.evaluate.batch_size
    )
    if pruning:  # here too, not only in the callback's setup: DDP spawn returns rank 0's gates
        pruning.sparsifier.attach(module.encoder)
    if cfg.evaluate.before:
        results["before"] = evaluate()
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    results["val"] = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    best = getattr(trainer.checkpoint_callback, "best_model_path", "")
    if best:
        results["best_val/stsb_spearman"] = float(trainer.checkpoint_callback.best_model_score)
        module.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["state_dict"])
        results["best_checkpoint"] = best
    if module.encoder.gates is not None or module.encoder.masks is not None:
        results["sparsity"] = sparsity_summary(module.encoder)
        remove_pruned_units(module.encoder)  # physical removal: smaller and faster from here on
    if cfg.evaluate.after:
        results["after"] = evaluate()
    report(cfg, module, results)
    return results


def report(cfg: DictConfig, module, results: dict) -> None:
    """Print the STS rows side by side; save the encoder and results.json in the run directory."""
    rows = {name: results[name] for name in ("before", "after") if name in results}
    if rows:
        print(format_table(rows))
    output_dir = Path(cfg.output_dir)
    if cfg.save_model:
        save_sparse_encoder(module.encoder, output_dir / "model")
    write_results(output_dir / "results.json", results)


@contextmanager
def exit_on_config_error(program: str) -> Iterator[None]:
    """A ConfigError becomes its one line on stderr and exit status 2, without a traceback."""
    try:
        yield
    except ConfigError as err:
        print(f"{program}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> None:
    try:
        with exit_on_config_error("sparsecse-train"):
            train(cfg)
    finally:
        import wandb

        wandb.finish()


if __name__ == "__main__":
    main()
