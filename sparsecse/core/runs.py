"""A run folder remembers the resolved config it was started with, so that a restart can tell a
requeued job (same config: resume, or report it finished) from an edited one (refuse to mix them)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from typing_extensions import TypedDict

from sparsecse.core.errors import ConfigError, first_few

RUN_CONFIG = "run_config.json"
RESULTS = "results.json"


# What `train()` returns and writes to results.json; a key is there when its step ran.
TrainingResults = TypedDict(
    "TrainingResults",
    {
        "before": dict[str, float],  # scores of the encoder before training (`evaluate.before`)
        "after": dict[str, float],  # after training: the best checkpoint's encoder, pruned units sliced out
        "final": dict[str, float],  # of the final step's encoder (`evaluate.final_step`)
        "val": dict[str, float],  # the last validation's `val/...` metrics
        "val_history": list[dict[str, float]],  # every validation: its step and metrics
        "steps": int,  # optimizer steps trained
        "best_step": int,  # the step of the best checkpoint
        "best_val/stsb_spearman": float,  # its STS-B dev score
        "checkpoints": dict[str, Any],  # best, last, best_before_final_pruning: their paths
        "parameters": int,  # parameters that still count (gated-off units excluded)
        "dense_parameters": int,
        "parameter_sparsity": float,  # 1 - parameters / dense_parameters
        "sparsity": dict[str, float],  # the pruning callback's `prune/...` summary, if anything was removed
        "recovery": list[dict],  # one record per recovery after an event
    },
    total=False,
)
# Keys that say where or how a run is watched, not what it computes: they may change between starts.
UNCOMPARED_RUN_KEYS = (
    "resume",
    "ckpt_path",
    "output_dir",
    "data_dir",
    "logger",
    "callbacks.progress_bar",
    "callbacks.last_checkpoint",
    "data.num_workers",
)
KEYS_NAMED = 4  # differing keys named in the error


def flatten(config: Mapping, prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> {"a.b.c": value}; lists are values."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat |= flatten(value, f"{name}.")
        else:
            flat[name] = value
    return flat


def compared(key: str, uncompared: Sequence[str] = UNCOMPARED_RUN_KEYS) -> bool:
    return not any(key == k or key.startswith(f"{k}.") for k in uncompared)


# Where each module went when sparsecse's modules were laid out by kind: run folders and sweeps
# recorded before name them as they were (`sparsecse.module.SimCSEModule`).
MOVED_MODULES = {
    "core": ("errors", "validation", "console", "paths", "runs", "writing"),
    "architecture": ("layout", "surgery"),
    "model": ("encoder", "loss", "metrics", "optim", "loading"),
    "data": ("corpora", "checked_lines", "download", "sources", "sampling"),
    "pruning": ("gates", "importance", "sparsifier", "removal", "layers", "recovery", "schedule", "study",
                "speed", "latency", "allocation", "speed_target"),
    "export": ("model_io", "onnx_export", "onnx_encoder", "model_card", "hub"),
    "training": ("module", "data"),
    "report": ("plots", "compression"),
}  # fmt: skip
_NOW = {f"sparsecse.{m}": f"sparsecse.{pkg}.{m}" for pkg, modules in MOVED_MODULES.items() for m in modules}
_BEFORE = re.compile(r"\bsparsecse([./])(" + "|".join(MOVED_MODULES) + r")[./](\w+)\b")


def named_now(target: str) -> str:
    """A `_target_` as it is named now: `sparsecse.module.SimCSEModule` ->
    `sparsecse.training.module.SimCSEModule`; any other name as it is."""
    module, _, name = target.rpartition(".")
    return f"{_NOW[module]}.{name}" if module in _NOW else target


def named_before(text: str) -> str:
    """A text with every moved module named as it was before the move (dotted, or as a path)."""

    def before(match: re.Match) -> str:
        sep, package, module = match.groups()
        return f"sparsecse{sep}{module}" if module in MOVED_MODULES[package] else match.group(0)

    return _BEFORE.sub(before, text)


def differences(old: Mapping, new: Mapping, uncompared: Sequence[str] = UNCOMPARED_RUN_KEYS) -> list[str]:
    """`key: old -> new` for every compared key whose value differs, in key order. A key one record
    lacks and the other holds at a value that turns it off (null, 0, false) is no difference: an
    option added since, at its default (off), leaves a run recorded before it the same run."""
    old_flat, new_flat = _targets_now(flatten(old)), _targets_now(flatten(new))
    keys = sorted(k for k in old_flat.keys() | new_flat.keys() if compared(k, uncompared))
    missing = "(absent)"
    pairs = {k: (old_flat.get(k, missing), new_flat.get(k, missing)) for k in keys}
    return [f"{k}: {a!r} -> {b!r}" for k, (a, b) in pairs.items() if a != b and not _added_off(a, b)]


def _targets_now(flat: dict) -> dict:
    """`_target_`s as named now: a run recorded before the modules moved is the same run."""
    return {k: named_now(v) if k.endswith("_target_") and isinstance(v, str) else v for k, v in flat.items()}


def _added_off(a: object, b: object) -> bool:
    """One side absent, the other off: null, 0 or false (not a string or a list)."""
    off = lambda value: value is None or (isinstance(value, (bool, int, float)) and not value)  # noqa: E731
    return (a == "(absent)" and off(b)) or (b == "(absent)" and off(a))


RUN_FOLDER = "<run folder>"


def in_own_folder(config: Mapping) -> dict:
    """`config` with every path inside its run's folder (`output_dir`) written from that folder
    (`<run folder>/checkpoints`): a run folder moved or copied elsewhere is the same run. Clusters
    move runs from scratch space to project storage and resume or re-evaluate them there."""
    root = str(config.get("output_dir") or "").rstrip("/")

    def relative(value):
        if isinstance(value, Mapping):
            return {k: relative(v) for k, v in value.items()}
        if isinstance(value, list):
            return [relative(v) for v in value]
        if root and isinstance(value, str) and (value == root or value.startswith(root + "/")):
            return RUN_FOLDER + value[len(root) :]
        return value

    return relative(dict(config))


def check_run_folder(
    output_dir: Path, config: Mapping, resume: bool, last_checkpoint: Path | None
) -> dict | None:
    """Before anything runs: None to go on (afresh, or resuming the same config), or the results of
    a run this folder finished with the same config. A folder that holds a run of another config
    (or one without a record of its config) is refused, with the two ways out."""
    results, saved = output_dir / RESULTS, output_dir / RUN_CONFIG
    started = results.is_file() or (last_checkpoint is not None and last_checkpoint.is_file())
    if not (resume and started):
        return None
    ways_out = (
        "resume=false starts afresh there; hydra.run.dir=DIR (hydra.sweep.dir in a multirun) runs elsewhere"
    )
    if not saved.is_file():
        problem = f"holds an earlier run with no record of its config ({RUN_CONFIG})"
        raise ConfigError("resume", f"{output_dir} {problem}; {ways_out}")
    recorded, now = json.loads(saved.read_text()), json.loads(json.dumps(config, default=str))
    changed = differences(in_own_folder(recorded), in_own_folder(now))
    if changed:
        problem = f"holds a run started with another config ({first_few(changed, KEYS_NAMED, '; ')})"
        raise ConfigError("resume", f"{output_dir} {problem}; {ways_out}")
    return json.loads(results.read_text()) if results.is_file() else None


def check_finished_output(
    output_dir: Path, config: Mapping, overwrite: bool, uncompared: Sequence[str]
) -> dict | None:
    """A tool's output folder, before anything runs (sparsecse-prune's): the results it holds when
    they were computed with the same config (`config` is recorded as their "config"), None to go on
    (nothing there yet, or `overwrite`). A result of another config, or one without a record of
    its config, is refused unless `overwrite`."""
    results_path = output_dir / RESULTS
    if overwrite or not results_path.is_file():
        return None
    results = json.loads(results_path.read_text())
    ways_out = "overwrite=true replaces it; another output_dir keeps both"
    if "config" not in results:
        raise ConfigError("output_dir", f"{output_dir} holds an earlier result with no record of its config; "
                          f"{ways_out}")  # fmt: skip
    changed = differences(results["config"], json.loads(json.dumps(config, default=str)), uncompared)
    if changed:
        problem = f"holds a result of another config ({first_few(changed, KEYS_NAMED, '; ')})"
        raise ConfigError("output_dir", f"{output_dir} {problem}; {ways_out}")
    return results


def record_config(output_dir: Path, config: Mapping) -> None:
    """Write the resolved config this run starts with (`check_run_folder` compares a restart to it)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / RUN_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True, default=str) + "\n")
