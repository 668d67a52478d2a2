"""Config validation up front: each group against its `_target_`'s signature, the top-level keys
against TrainSettings; every mistake is one line naming its full dotted key."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Literal

import pytest
from bad_inputs import BAD_INPUTS, FOUND_AFTER_THE_CONFIG_CHECK
from helpers import EXPERIMENTS, compose_prune, compose_train, cpu_overrides
from omegaconf import OmegaConf
from transformers import BertConfig

from callbacks import ScheduledPruning
from sparsecse.cli import resolved as resolved_config
from sparsecse.cli.config import GROUPS, check_config, top_level_keys
from sparsecse.cli.training import build_pruning
from sparsecse.core.errors import ConfigError
from sparsecse.core.validation import Fraction, PositiveInt, check_value
from sparsecse.model.loading import load_config
from sparsecse.training.data import ContrastiveDataModule
from train import CONFIG_DIR

OPTION_GROUPS = ("data", "model", "pruning", "recovery", "callbacks", "logger", "trainer", "debug")
OPTIONS = [f"{g}={p.stem}" for g in OPTION_GROUPS for p in sorted((Path(CONFIG_DIR) / g).glob("*.yaml"))]


def resolved(tmp_path: Path, overrides: list[str]) -> dict:
    """The plain mapping train() checks: the composed config, resolved, without `hydra`."""
    cfg = compose_train([f"output_dir={tmp_path}", f"data_dir={tmp_path}", *overrides])
    config = resolved_config(cfg)
    config.pop("hydra", None)
    return config


@pytest.mark.parametrize("override", OPTIONS + [f"experiment={e}" for e in EXPERIMENTS])
def test_every_shipped_config_passes(override, tmp_path):
    """With the defaults, each config passes the checks train() makes before any data loads: the
    config check, then the pruning schedule against the model and the run's length (`debug=cpu_smoke`
    once stopped there: the demo's event at step 80 of a 20-step run)."""
    cfg = compose_train([f"output_dir={tmp_path}", f"data_dir={tmp_path}", override])
    check_config(resolved_config(cfg))
    name = cfg.model.encoder.name_or_path
    model_config = load_config(name) if name == "minilm" else BertConfig()  # bert-base's shape, offline
    pruning = build_pruning(cfg, model_config)
    assert (pruning is None) == (not cfg.pruning)


@pytest.mark.parametrize("max_steps, step", [(20, 10), (160, 80), (41, 20)])
def test_the_demo_prunes_halfway_through_the_run(max_steps, step, tmp_path):
    config = resolved(tmp_path, [f"trainer.max_steps={max_steps}"])
    assert config["pruning"]["schedule"] == [{"step": step}]


def test_the_demo_in_a_run_without_a_step_limit_is_one_line(tmp_path):
    cfg = compose_train([f"output_dir={tmp_path}", "trainer.max_steps=-1"])
    with pytest.raises(ConfigError, match=r"^trainer\.max_steps: is -1, and pruning=demo prunes halfway"):
        resolved_config(cfg)


def test_the_top_level_schema_is_train_yaml(tmp_path):
    config = resolved(tmp_path, [])
    assert set(config) == set(top_level_keys()) | set(GROUPS)


# overrides -> the exact message
MISTAKES = {
    "+data.batch_sise=4": "data.batch_sise: unknown key for sparsecse.training.data.ContrastiveDataModule; "
    "did you mean 'batch_size'?",
    "+model.temprature=0.1": "model.temprature: unknown key for sparsecse.training.module.SimCSEModule; "
    "did you mean 'temperature'?",
    "+model.encoder.pooling=cls": "model.encoder.pooling: unknown key for "
    "sparsecse.export.model_io.load_encoder; did you mean 'pooler'?",
    "+trainer.max_step=10": "trainer.max_step: unknown key for lightning.pytorch.Trainer; did you mean "
    "'max_steps'?",
    "+pruning.head_sparsty=0.1": "pruning.head_sparsty: unknown key for callbacks.ScheduledPruning; did "
    "you mean 'head_sparsity'?",
    "+callbacks.model_checkpoint.monitr=val/loss": "callbacks.model_checkpoint.monitr: unknown key for "
    "callbacks.BestCheckpoint; did you mean 'monitor'?",
    "recovery=distill +pruning.recovery.stpes=10": "pruning.recovery.stpes: unknown key for "
    "sparsecse.pruning.recovery.Recovery; did you mean 'steps'?",
    "recovery=distill pruning.recovery.lr=0": "pruning.recovery.lr: must be greater than 0, got 0",
    "recovery=distill pruning=none": "recovery: recovers after pruning events, and pruning=none has none: "
    "choose a pruning config or drop recovery",
    "logger=csv +logger.csv.nam=x": "logger.csv.nam: unknown key for lightning.pytorch.loggers.CSVLogger; "
    "did you mean 'name'?",
    "+pruning.scroe=random": "pruning.scroe: unknown key for callbacks.ScheduledPruning; "
    "did you mean 'score'?",
    "callbacks=with_importance +callbacks.importance.num_batchs=2": "callbacks.importance.num_batchs: "
    "unknown key for callbacks.ImportanceScoring; did you mean 'num_batches'?",
    "+sede=1": "sede: unknown key; did you mean 'seed'?",
    "+evaluate.taskz=[sts]": "evaluate.taskz: unknown key; did you mean 'tasks'?",
    "pruning.schedule=[{stp:10}]": "pruning.schedule[0].stp: unknown key; did you mean 'step'?",
    "callbacks=with_importance callbacks.importance.at=[{epok:1}]": "callbacks.importance.at[0].epok: "
    "unknown key; did you mean 'epoch'?",
    "data._target_=sparsecse.training.data.Nope": "data._target_: cannot import "
    "'sparsecse.training.data.Nope'",
    "~save_model": "save_model: is missing",
    "data.batch_size=abc": "data.batch_size: must be a valid integer, got 'abc'",
    "trainer.max_epochs=1.5": "trainer.max_epochs: must be a valid integer, got 1.5",
    "evaluate.before=maybe": "evaluate.before: must be a valid boolean, got 'maybe'",
    "evaluate.tasks=sts": "evaluate.tasks: must be a valid list, got 'sts'",
    "seed=true": "seed: must be a valid integer, got True",
    "pruning.schedule=[5]": "pruning.schedule[0]: must be a valid dictionary, got 5",
    "pruning.schedule=[{step:soon}]": "pruning.schedule[0].step: must be a valid integer, got 'soon'",
    "callbacks.lr_monitor.logging_interval=hour": "callbacks.lr_monitor.logging_interval: must be 'step' "
    "or 'epoch', got 'hour'",
    "+model.optimizer.betas=[0.9]": "model.optimizer.betas[1]: is missing",
    "data.num_workers=-1": "data.num_workers: must be greater than or equal to 0, got -1",
    "data.max_length=0": "data.max_length: must be greater than or equal to 1, got 0",
    "model.temperature=0": "model.temperature: must be greater than 0, got 0",
    "model.scheduler.warmup_ratio=1.5": "model.scheduler.warmup_ratio: must be less than or equal to 1, "
    "got 1.5",
    "pruning.ffn_sparsity=1.2": "pruning.ffn_sparsity: must be less than 1, got 1.2",
    "pruning.schedule=[{epoch:1,head_sparsity:-0.1}]": "pruning.schedule[0].head_sparsity: must be greater "
    "than or equal to 0, got -0.1",
    "pruning.num_batches=0": "pruning.num_batches: must be greater than or equal to 1, got 0",
    "evaluate.batch_size=0": "evaluate.batch_size: must be greater than or equal to 1, got 0",
    "evaluate.transfer_preset=slow": "evaluate.transfer_preset: must be 'test' or 'fasttest', got 'slow'",
    "data.on_bad_line=warn": "data.on_bad_line: must be 'fail' or 'skip', got 'warn'",
    "model.encoder.pooler=mean": "model.encoder.pooler: must be 'cls', 'cls_before_pooler', 'avg', "
    "'avg_first_last' or 'avg_top2', got 'mean'",
    "pruning.score=taylor": "pruning.score: must be 'magnitude', 'signed', 'alignment', 'uniformity', "
    "'random' or 'weight_magnitude', got 'taylor'",
}


def test_an_unknown_key_of_a_class_with_no_close_match_lists_its_parameters(tmp_path):
    with pytest.raises(ConfigError) as err:
        check_config(resolved(tmp_path, ["+model.optimizer.learning_rate=1e-3"]))
    key, message = str(err.value).split(": ", 1)
    assert key == "model.optimizer.learning_rate"
    assert message.startswith("unknown key for torch.optim.AdamW; expected one of: params, lr, ")
    assert "weight_decay" in message.split("expected one of: ")[1].split(", ")


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
def test_the_config_check_reports_every_bad_input_it_can_see_with_the_catalogue_message(case, tmp_path):
    """The config check catches every case of the catalogue that needs no data, model or schedule,
    with the catalogue's message; the others pass it (train() reports them next)."""
    overrides, message = BAD_INPUTS[case]
    overrides = [o.replace("{tmp}", str(tmp_path)) for o in overrides]
    config = resolved(tmp_path, cpu_overrides(tmp_path, tmp_path, tmp_path) + overrides)
    if case in FOUND_AFTER_THE_CONFIG_CHECK:
        check_config(config)
        return
    with pytest.raises(ConfigError) as err:
        check_config(config)
    assert re.search(message, str(err.value)), str(err.value)


class Opaque:
    pass


@pytest.mark.parametrize(
    "hint, value, message",
    [
        (int, True, "x: must be a valid integer, got True"),
        (float, 1, None),
        (bool, 0, "x: must be a valid boolean, got 0"),
        (int | None, None, None),
        (int | str, 1.5, "x: must be a valid integer or a valid string, got 1.5"),
        (Literal["a", "b"], 1, "x: must be 'a' or 'b', got 1"),
        (list[int], [1, "2"], "x[1]: must be a valid integer, got '2'"),
        (tuple[int, ...], [1, 2, 3], None),
        (tuple[float, float], [0.9], "x[1]: is missing"),
        (dict[str, float], {"a": "b"}, "x.a: must be a valid number, got 'b'"),
        (Path, "a/b", None),
        (Path, 3, "x: must be a valid string or an instance of Path, got 3"),
        (PositiveInt, 0, "x: must be greater than or equal to 1, got 0"),
        (PositiveInt | None, "8", "x: must be a valid integer, got '8'"),
        (Fraction, 1.0, "x: must be less than 1, got 1.0"),
        (Literal["fail", "skip"], "warn", "x: must be 'fail' or 'skip', got 'warn'"),
        (Opaque, Opaque(), None),
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
    with pytest.raises(ConfigError, match=r"^head_sparsity: must be less than 1, got 1.0$"):
        ScheduledPruning(schedule=[{"epoch": 1}], head_sparsity=1.0)
    with pytest.raises(
        ConfigError, match=r"^schedule\[0\].step: must be greater than or equal to 0, got -1$"
    ):
        ScheduledPruning(schedule=[{"step": -1}])
    with pytest.raises(ConfigError, match="^batch_size: must be greater than or equal to 1, got 0$"):
        ContrastiveDataModule("no-such-model", tmp_path / "nowhere", batch_size=0)


def test_the_sparsifier_options_are_one_node_in_training_pictures_and_the_prune_tool(tmp_path):
    """Pruning during training, the importance pictures and sparsecse-prune read the same options,
    with the Sparsifier's own defaults; a change on the command line reaches each of them."""
    from sparsecse.pruning.sparsifier import Sparsifier

    defaults = {n: p.default for n, p in inspect.signature(Sparsifier).parameters.items()}
    options = list(defaults)
    train = resolved(tmp_path, ["pruning=structured", "callbacks=with_importance", "seed=7"])
    prune = OmegaConf.to_container(compose_prune(["seed=7", "output_dir=x"]), resolve=True)
    expected = defaults | {"seed": 7}
    assert {k: train["pruning"][k] for k in options} == expected
    assert {k: train["callbacks"]["importance"][k] for k in options} == expected
    assert {k: prune["pruning"][k] for k in options} == expected
    changed = resolved(tmp_path, ["pruning.score=random"])["pruning"]["score"]
    assert changed == "random" != defaults["score"]
