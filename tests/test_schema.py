"""Config validation up front: each group against its `_target_`'s signature, the top-level keys
against TrainSettings; every mistake is one line naming its full dotted key."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Literal

import pytest
from omegaconf import OmegaConf
from test_bad_input import BAD_INPUTS
from test_train import EXPERIMENTS, compose_train, cpu_overrides

from callbacks import StructuredPruning
from sparsecse.constraints import Fraction, OneOf, PositiveInt, check_value
from sparsecse.data import ContrastiveDataModule
from sparsecse.errors import ConfigError
from sparsecse.schema import GROUPS, TrainSettings, check_config
from train import CONFIG_DIR

OPTION_GROUPS = ("data", "model", "pruning", "callbacks", "logger", "trainer", "debug")
OPTIONS = [f"{g}={p.stem}" for g in OPTION_GROUPS for p in sorted((Path(CONFIG_DIR) / g).glob("*.yaml"))]


def resolved(tmp_path: Path, overrides: list[str]) -> dict:
    """The plain mapping train() checks: the composed config, resolved, without `hydra`."""
    cfg = compose_train([f"output_dir={tmp_path}", f"data_dir={tmp_path}", *overrides])
    config = OmegaConf.to_container(cfg, resolve=True)
    config.pop("hydra", None)
    return config


@pytest.mark.parametrize("override", OPTIONS + [f"experiment={e}" for e in EXPERIMENTS])
def test_every_shipped_config_passes(override, tmp_path):
    check_config(resolved(tmp_path, [override]))


def test_the_top_level_schema_is_train_yaml(tmp_path):
    config = resolved(tmp_path, [])
    assert set(config) == {f.name for f in fields(TrainSettings)} | set(GROUPS)


# overrides -> the exact message
MISTAKES = {
    # unknown keys, one per group
    "+data.batch_sise=4": "data.batch_sise: unknown key for sparsecse.data.ContrastiveDataModule; "
    "did you mean 'batch_size'?",
    "+model.temprature=0.1": "model.temprature: unknown key for sparsecse.module.SimCSEModule; "
    "did you mean 'temperature'?",
    "+model.encoder.pooling=cls": "model.encoder.pooling: unknown key for "
    "sparsecse.encoder.SentenceEncoder.from_pretrained; did you mean 'pooler'?",
    "+model.optimizer.learning_rate=1e-3": "model.optimizer.learning_rate: unknown key for "
    "torch.optim.AdamW; expected one of: params, lr, betas, eps, weight_decay, amsgrad, maximize, foreach, "
    "capturable, differentiable, fused",
    "+trainer.max_step=10": "trainer.max_step: unknown key for lightning.pytorch.Trainer; "
    "did you mean 'max_steps'?",
    "+pruning.head_sparsty=0.1": "pruning.head_sparsty: unknown key for callbacks.StructuredPruning; "
    "did you mean 'head_sparsity'?",
    "+callbacks.model_checkpoint.monitr=val/loss": "callbacks.model_checkpoint.monitr: unknown key for "
    "lightning.pytorch.callbacks.ModelCheckpoint; did you mean 'monitor'?",
    "logger=csv +logger.csv.nam=x": "logger.csv.nam: unknown key for lightning.pytorch.loggers.CSVLogger; "
    "did you mean 'name'?",
    "+sede=1": "sede: unknown key; did you mean 'seed'?",
    "+evaluate.taskz=[sts]": "evaluate.taskz: unknown key; did you mean 'tasks'?",
    "pruning.schedule=[{stp:10}]": "pruning.schedule[0].stp: unknown key; did you mean 'step'?",
    "callbacks=with_importance callbacks.importance.at=[{epok:1}]": "callbacks.importance.at[0].epok: "
    "unknown key; did you mean 'epoch'?",
    "data._target_=sparsecse.data.Nope": "data._target_: cannot import 'sparsecse.data.Nope'",
    "~save_model": "save_model: is missing",
    # wrong types
    "data.batch_size=abc": "data.batch_size: must be a positive integer, got 'abc'",
    "trainer.max_epochs=1.5": "trainer.max_epochs: expected an integer, got 1.5 (float)",
    "evaluate.before=maybe": "evaluate.before: expected true or false, got 'maybe' (str)",
    "evaluate.tasks=sts": "evaluate.tasks: expected a list, got 'sts' (str)",
    "seed=true": "seed: expected an integer, got True (bool)",
    "pruning.schedule=[5]": "pruning.schedule[0]: expected a mapping, got 5 (int)",
    "pruning.schedule=[{step:soon}]": "pruning.schedule[0].step: must be a non-negative integer, got 'soon'",
    "callbacks.lr_monitor.logging_interval=hour": "callbacks.lr_monitor.logging_interval: "
    "expected one of 'step', 'epoch', got 'hour' (str)",
    "+model.optimizer.betas=[0.9]": "model.optimizer.betas: expected a list of 2 items, got 1",
    # out of range
    "data.num_workers=-1": "data.num_workers: must be a non-negative integer, got -1",
    "data.max_length=0": "data.max_length: must be a positive integer, got 0",
    "model.temperature=0": "model.temperature: must be a number > 0, got 0",
    "model.scheduler.warmup_ratio=1.5": "model.scheduler.warmup_ratio: must be a fraction in [0, 1], got 1.5",
    "pruning.ffn_sparsity=1.2": "pruning.ffn_sparsity: must be a fraction in [0, 1), got 1.2",
    "pruning.schedule=[{epoch:1,head_sparsity:-0.1}]": "pruning.schedule[0].head_sparsity: "
    "must be a fraction in [0, 1), got -0.1",
    "pruning.num_batches=0": "pruning.num_batches: must be a positive integer, got 0",
    "evaluate.batch_size=0": "evaluate.batch_size: must be a positive integer, got 0",
    # choices
    "evaluate.transfer_preset=slow": "evaluate.transfer_preset: unknown preset 'slow'; "
    "expected one of test, fasttest",
    "data.on_bad_line=warn": "data.on_bad_line: expected one of fail, skip, got 'warn'",
    "model.encoder.pooler=mean": "model.encoder.pooler: unknown pooler 'mean'; expected one of cls, "
    "cls_before_pooler, avg, avg_first_last, avg_top2",
    "pruning.score=taylor": "pruning.score: unknown score mode 'taylor'; expected one of magnitude, signed, "
    "alignment, uniformity, random, weight_magnitude",
}


@pytest.mark.parametrize("overrides", MISTAKES)
def test_a_mistake_is_one_line_naming_its_key(overrides, tmp_path):
    with pytest.raises(ConfigError) as err:
        check_config(resolved(tmp_path, overrides.split()))
    assert str(err.value) == MISTAKES[overrides]


def test_accepted_variations(tmp_path):
    """Null and empty groups, nulls where the hint allows them, and keys a **kwargs target takes
    (WandbLogger passes them to wandb.init, so they cannot be checked here)."""
    for overrides in (
        ["pruning=none", "logger=none", "callbacks=none"],
        ["callbacks.lr_monitor=null", "model.scheduler=null", "data.max_length=null", "ckpt_path=null"],
        ["logger=wandb", "+logger.wandb.entity=me", "+trainer.fast_dev_run=true", "trainer.devices=[0]"],
    ):
        check_config(resolved(tmp_path, overrides))


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_the_bad_input_catalogue_reads_the_same_when_the_schema_catches_it(case, tmp_path):
    """Once train() checks the config first, a case the schema catches must keep its message."""
    overrides, message = BAD_INPUTS[case]
    overrides = [o.replace("{tmp}", str(tmp_path)) for o in overrides]
    config = resolved(tmp_path, cpu_overrides(tmp_path, tmp_path, tmp_path) + overrides)
    try:
        check_config(config)
    except ConfigError as err:
        assert re.search(message, str(err)), str(err)


class Opaque:
    pass


@pytest.mark.parametrize(
    "hint, value, message",
    [
        (int, True, "x: expected an integer, got True (bool)"),
        (float, 1, None),
        (bool, 0, "x: expected true or false, got 0 (int)"),
        (int | None, None, None),
        (int | str, 1.5, "x: expected an integer or a string, got 1.5 (float)"),
        (Literal["a", 1], True, "x: expected one of 'a', 1, got True (bool)"),
        (list[int], [1, "2"], "x[1]: expected an integer, got '2' (str)"),
        (tuple[int, ...], [1, 2, 3], None),
        (dict[str, float], {"a": "b"}, "x.a: expected a number, got 'b' (str)"),
        (Path, "a/b", None),
        (Path, 3, "x: expected a path, got 3 (int)"),
        (PositiveInt, 0, "x: must be a positive integer, got 0"),
        (PositiveInt | None, "8", "x: must be a positive integer, got '8'"),
        (Fraction, 1.0, "x: must be a fraction in [0, 1), got 1.0"),
        (Annotated[str, OneOf("fail", "skip")], "warn", "x: expected one of fail, skip, got 'warn'"),
        (Opaque, "anything", None),  # a class a config value cannot be checked against
    ],
)
def test_check_value(hint, value, message):
    if message is None:
        check_value("x", value, hint)
        return
    with pytest.raises(ConfigError) as err:
        check_value("x", value, hint)
    assert str(err.value) == message


def test_constructors_check_the_same_constraints(tmp_path):
    with pytest.raises(ConfigError, match=r"^head_sparsity: must be a fraction in \[0, 1\), got 1.0$"):
        StructuredPruning(schedule=[{"epoch": 1}], head_sparsity=1.0)
    with pytest.raises(ConfigError, match=r"^schedule\[0\].step: must be a non-negative integer, got -1$"):
        StructuredPruning(schedule=[{"step": -1}])
    with pytest.raises(ConfigError, match="^batch_size: must be a positive integer, got 0$"):
        ContrastiveDataModule("no-such-model", tmp_path / "nowhere", batch_size=0)
