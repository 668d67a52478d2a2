"""The training config checked whole, before any data or model loads.

Takes the resolved config as a plain mapping. Each group is checked against the signature of its
`_target_`, whose type hints are the group's schema (`sparsecse.core.validation`); the top-level keys and
`evaluate` against the records below. The first problem found is raised as one ConfigError naming
its full dotted key (`data.batch_size: must be greater than or equal to 1, got 0`).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping
from typing import Any

from typing_extensions import TypedDict, get_type_hints

from sparsecse.core.errors import ConfigError
from sparsecse.core.validation import STRICT_RECORD, PositiveInt, check_arguments, check_value, unknown_key
from sparsecse.evaluation.transfer import TransferPreset
from sparsecse.export.onnx_export import OnnxExport

HYDRA_KEYS = frozenset({"_target_", "_partial_", "_recursive_", "_convert_", "_args_"})
TARGET_GROUPS = ("data", "model", "trainer")  # one `_target_` each
NAMED_GROUPS = ("logger", "callbacks")  # named `_target_` entries; a null entry is dropped
OPTIONAL_GROUPS = ("pruning",)  # a `_target_`, or empty under `pruning=none`
GROUPS = (*TARGET_GROUPS, *NAMED_GROUPS, *OPTIONAL_GROUPS)


class EvaluateSettings(TypedDict):
    """The `evaluate` block of conf/train.yaml."""

    __pydantic_config__ = STRICT_RECORD
    before: bool
    after: bool
    final_step: bool  # also the last step's model, when the best checkpoint is an earlier one
    tasks: list[str]  # names and sets, checked by sparsecse.evaluation.check_evaluation
    transfer_preset: TransferPreset
    batch_size: PositiveInt


class TrainSettings(TypedDict):
    """The top-level keys of conf/train.yaml, besides the groups."""

    __pydantic_config__ = STRICT_RECORD
    task_name: str
    seed: int
    data_dir: str
    output_dir: str
    ckpt_path: str | None
    save_model: bool
    resume: bool  # carry on from ${output_dir}/checkpoints/last.ckpt
    compile: bool  # model.compile and data.static_shapes
    evaluate: EvaluateSettings
    optimized_metric: str | None  # returned to Hydra's sweeper (Optuna), e.g. after/sts_avg
    onnx: OnnxExport


def top_level_keys() -> list[str]:
    return list(get_type_hints(TrainSettings))


@functools.cache
def _import(path: str) -> Callable | None:
    """The callable a dotted path names: the longest importable module, then attributes."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            module = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        try:
            return functools.reduce(getattr, parts[cut:], module)
        except AttributeError:
            return None
    return None


def resolve_target(key: str, path: Any) -> Callable:
    target = _import(str(path))
    if target is None:
        raise ConfigError(f"{key}._target_", f"cannot import {path!r}")
    return target


def is_target(value: Any) -> bool:
    return isinstance(value, Mapping) and "_target_" in value


def is_nested(value: Any) -> bool:
    """A value given as its own `_target_` mapping (model.encoder), or a list of them (trainer.plugins)."""
    return is_target(value) or (isinstance(value, list) and any(is_target(item) for item in value))


def check_target(key: str, config: Mapping) -> None:
    """`config`'s keys against its `_target_`'s parameters; nested targets against theirs. Missing
    arguments are never reported here (`_partial_: true` leaves some to the caller)."""
    target = resolve_target(key, config["_target_"])
    arguments = {name: value for name, value in config.items() if name not in HYDRA_KEYS}
    nested = {name for name, value in arguments.items() if is_nested(value)}
    check_arguments(target, arguments, prefix=key, owner=str(config["_target_"]), checked_elsewhere=nested)
    for name in nested:
        value = arguments[name]
        for index, item in enumerate(value) if isinstance(value, list) else [(None, value)]:
            where = f"{key}.{name}" if index is None else f"{key}.{name}[{index}]"
            if is_target(item):
                check_target(where, item)


def check_group_entry(key: str, value: Any, expected: str) -> None:
    if not is_target(value):
        raise ConfigError(key, f"expected a mapping with {expected}, got {value!r}")
    check_target(key, value)


def check_group(group: str, config: Mapping) -> None:
    """One group, by its kind (see the GROUPS tuples)."""
    value = config.get(group)
    if group in OPTIONAL_GROUPS and not value:
        return
    if group == "pruning" and isinstance(value, Mapping) and set(value) == {"recovery"}:
        raise ConfigError("recovery", "recovers after pruning events, and pruning=none has none: "
                          "choose a pruning config or drop recovery")  # fmt: skip
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


def check_config(config: Mapping) -> None:
    """The whole resolved training config (`hydra` may be left in; it is not checked)."""
    known = top_level_keys() + list(GROUPS) + ["hydra"]
    for name in config:
        if name not in known:
            raise ConfigError(str(name), unknown_key(str(name), known))
    check_value("", {k: v for k, v in config.items() if k not in (*GROUPS, "hydra")}, TrainSettings)
    for group in GROUPS:
        check_group(group, config)
