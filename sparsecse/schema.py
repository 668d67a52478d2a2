"""The training config checked whole, before any data or model loads.

Takes the resolved config as a plain mapping (no Hydra here). Each group is checked against the
signature of its `_target_`, whose type hints and `Annotated` constraints are the group's schema;
the top-level keys and `evaluate` against the dataclasses below. The first problem found is raised
as one ConfigError naming its full dotted key (`data.batch_size: must be a positive integer, got 0`).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from sparsecse.constraints import PositiveInt, check_arguments, check_fields, check_value, unknown_key
from sparsecse.errors import ConfigError
from sparsecse.evaluation.transfer import TransferPreset

HYDRA_KEYS = frozenset({"_target_", "_partial_", "_recursive_", "_convert_", "_args_"})
TARGET_GROUPS = ("data", "model", "trainer")  # one `_target_` each
NAMED_GROUPS = ("logger", "callbacks")  # named `_target_` entries; a null entry is dropped
OPTIONAL_GROUPS = ("pruning",)  # a `_target_`, or empty under `pruning=none`
GROUPS = (*TARGET_GROUPS, *NAMED_GROUPS, *OPTIONAL_GROUPS)


@dataclass(frozen=True)
class EvaluateSettings:
    """The `evaluate` block of conf/train.yaml."""

    before: bool
    after: bool
    tasks: list[str]  # names and sets, checked by sparsecse.evaluation.check_evaluation
    transfer_preset: TransferPreset
    batch_size: PositiveInt


@dataclass(frozen=True)
class TrainSettings:
    """The top-level keys of conf/train.yaml, besides the groups."""

    task_name: str
    seed: int
    data_dir: str
    output_dir: str
    ckpt_path: str | None
    save_model: bool
    resume: bool  # carry on from ${output_dir}/checkpoints/last.ckpt
    evaluate: EvaluateSettings


def resolve_target(key: str, path: Any) -> Callable:
    """The callable a dotted `_target_` names: the longest importable module, then attributes."""
    parts = str(path).split(".")
    for cut in range(len(parts), 0, -1):
        try:
            module = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        try:
            return functools.reduce(getattr, parts[cut:], module)
        except AttributeError:
            break
    raise ConfigError(join_target(key), f"cannot import {path!r}")


def join_target(key: str) -> str:
    return f"{key}._target_"


def is_target(value: Any) -> bool:
    return isinstance(value, Mapping) and "_target_" in value


def check_target(key: str, config: Mapping) -> None:
    """`config`'s keys against its `_target_`'s parameters; under `_partial_: true` the given keys
    are all there is to check (missing arguments are never reported here)."""
    target = resolve_target(key, config["_target_"])
    arguments = {name: value for name, value in config.items() if name not in HYDRA_KEYS}
    check_arguments(target, arguments, prefix=key, owner=str(config["_target_"]), check=check_nested)


def check_nested(key: str, value: Any, hint: Any) -> None:
    """A value given as its own `_target_` mapping (model.encoder), or a list of them
    (trainer.plugins), is checked against those targets rather than the hint."""
    if is_target(value):
        check_target(key, value)
    elif isinstance(value, list) and any(is_target(item) for item in value):
        for index, item in enumerate(value):
            check_nested(f"{key}[{index}]", item, Any)
    else:
        check_value(key, value, hint)


def check_group(group: str, config: Mapping) -> None:
    """One group, by its kind (see the GROUPS tuples)."""
    value = config.get(group)
    if group in OPTIONAL_GROUPS and not value:
        return
    if group in NAMED_GROUPS:
        if value is None:
            return
        if not isinstance(value, Mapping):
            raise ConfigError(group, f"expected named entries with a _target_ each, got {value!r}")
        for name, entry in value.items():
            if entry is not None:
                check_group_entry(f"{group}.{name}", entry, "a _target_ or null")
        return
    check_group_entry(group, value, "a _target_")


def check_group_entry(key: str, value: Any, expected: str) -> None:
    if not is_target(value):
        raise ConfigError(key, f"expected a mapping with {expected}, got {value!r}")
    check_target(key, value)


def check_config(config: Mapping) -> None:
    """The whole resolved training config (`hydra` may be left in; it is not checked)."""
    known = [f.name for f in fields(TrainSettings)] + list(GROUPS) + ["hydra"]
    for name in config:
        if name not in known:
            raise ConfigError(str(name), unknown_key(str(name), known))
    settings = {name: value for name, value in config.items() if name not in (*GROUPS, "hydra")}
    check_fields("", settings, TrainSettings)
    for group in GROUPS:
        check_group(group, config)
