"""The job a `sparsecse-prune` config describes, checked before any data or weights load: what to
evaluate, remove and recover, and the options that cannot go together."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from sparsecse.cli.evaluate import model_key
from sparsecse.core.errors import ConfigError
from sparsecse.core.validation import check_value
from sparsecse.evaluation import check_evaluation
from sparsecse.export.onnx_encoder import runtime_encode
from sparsecse.export.onnx_export import OnnxExport, check_onnx_available
from sparsecse.model.encoder import check_pooler
from sparsecse.model.loading import load_config
from sparsecse.pruning.layers import LayerDrop
from sparsecse.pruning.recovery import Recovery
from sparsecse.pruning.schedule import TARGETS, PruningEvent, one_shot_event
from sparsecse.pruning.sparsifier import Sparsifier
from sparsecse.pruning.speed_target import HEAD_WEIGHT_KEY, SpeedTarget, speed_target_from

TARGET_SPEEDUP = "target_speedup"


def build_sparsifier(options: dict, model_config):
    """(Sparsifier, its one event), checked against the model before anything loads."""
    names = [name for targets in TARGETS.values() for name in targets]  # of either granularity
    targets = {k: options.pop(k) for k in names if k in options}
    options.pop(TARGET_SPEEDUP, None)
    options.pop(HEAD_WEIGHT_KEY, None)
    try:
        sparsifier = Sparsifier(**options)
        event = one_shot_event(sparsifier.granularity, **targets)
        sparsifier.check_model(model_config)
        sparsifier.check_reachable(model_config, event)
    except ConfigError as err:
        raise err.under("pruning") from None
    return sparsifier, event


def under(group: str, build, *args, **kwargs):
    """`build(...)`, a ConfigError from it named under the config group `group`."""
    try:
        return build(*args, **kwargs)
    except ConfigError as err:
        raise err.under(group) from None


@dataclass
class PruneJob:
    """The checked settings of one run: what to evaluate, remove and recover."""

    tasks: tuple[str, ...]
    recovery: Recovery
    layer_drop: LayerDrop
    options: dict  # the Sparsifier's options and the event's targets, until the model is known
    speed_target: SpeedTarget | None = None
    sparsifier: Sparsifier | None = None
    event: PruningEvent | None = None
    dense_layers: int | None = None

    def check_model(self, model_config) -> None:
        self.sparsifier, self.event = build_sparsifier(dict(self.options), model_config)
        under("layers", self.layer_drop.check_model, model_config)
        self.dense_layers = model_config.num_hidden_layers


def check_job(cfg: DictConfig) -> PruneJob:
    """Every setting, before any data or weights load (a checkpoint's model only once it has loaded)."""
    if OmegaConf.is_missing(cfg, "output_dir"):
        raise ConfigError("output_dir", "is required: where to write the sparsified model")
    tasks = check_evaluation(cfg.tasks, cfg.transfer_preset) if cfg.tasks else ()
    check_pooler(cfg.pooler)
    check_value("onnx", cfg.onnx, OnnxExport)
    if cfg.onnx != "none":
        check_onnx_available(cfg.onnx)
    job = PruneJob(
        tasks,
        under("recovery", Recovery, **OmegaConf.to_container(cfg.recovery, resolve=True)),
        under("layers", LayerDrop, **OmegaConf.to_container(cfg.layers, resolve=True)),
        OmegaConf.to_container(cfg.pruning, resolve=True),
    )
    job.speed_target = check_speed_target(job, cfg)
    if not str(cfg.model).endswith(".ckpt"):
        with model_key():
            job.check_model(load_config(cfg.model))
    return job


def check_speed_target(job: PruneJob, cfg: DictConfig) -> SpeedTarget | None:
    """pruning.target_speedup, checked against the options it replaces."""
    if job.options.get(TARGET_SPEEDUP) is None:
        return None
    return under("pruning", speed_target_from, job.options, job.layer_drop.keep, cfg.onnx,
                 cfg.recovery.cache_dir, runtime_encode)  # fmt: skip


def removes_units(event: PruningEvent) -> bool:
    return any(target > 0 for target in event.targets)
