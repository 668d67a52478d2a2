"""The runs of a Hydra multirun: their overrides and results, grouped by setting (mean ± std over
the seed key)."""

from __future__ import annotations

import json
import math
import re
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import yaml

from sparsecse.core.errors import ConfigError
from sparsecse.evaluation.sts import STS_TASKS
from sparsecse.evaluation.table import ANALYSIS_KEYS, EVALUATION_KEYS
from sparsecse.evaluation.transfer import TRANSFER_TASKS

SIZE_KEYS = ("parameters", "parameter_sparsity")
# A run with `evaluate.final_step` also scored its last step's model ("final" in results.json) and
# says which step its best checkpoint came from.
FINAL_PREFIX = "final/"
FINAL_KEYS = tuple(FINAL_PREFIX + k for k in ("sts_avg", "transfer_avg", *ANALYSIS_KEYS))
METRICS = (*EVALUATION_KEYS, *SIZE_KEYS, "best_step", *FINAL_KEYS)
RUN_DEPTH = 3  # Hydra puts runs one level below the sweep dir; custom subdirs may nest them deeper
# An average and the tasks it may average: runs that averaged other tasks are not put in one column.
AVERAGES = {"sts_avg": STS_TASKS, "transfer_avg": TRANSFER_TASKS}


@dataclass
class Run:
    path: Path
    overrides: dict[str, str]
    results: dict | None  # None: the job did not finish, see `reason`
    reason: str = ""
    # averages over other tasks than the sweep's column holds (set by load_sweep before `metrics`)
    left_out: set[str] = field(default_factory=set)

    @cached_property
    def metrics(self) -> dict[str, float]:
        metrics = run_metrics(self.results or {})
        return {k: v for k, v in metrics.items() if k.removeprefix(FINAL_PREFIX) not in self.left_out}

    def averaged(self, average: str) -> tuple[str, ...] | None:
        """The tasks this run's `average` (sts_avg, transfer_avg) is the mean of; None without it."""
        block = evaluated_block(self.results or {})
        if average not in block:
            return None
        return tuple(task for task in AVERAGES[average] if task in block)

    @cached_property
    def sparsity(self) -> float:
        return run_sparsity(self.results or {})


@dataclass
class Row:
    """The finished runs of one setting and, per metric, the mean and sample std over them."""

    setting: dict[str, str | None]  # each override that varies across the sweep; None where not given
    runs: list[Run]
    stats: dict[str, tuple[float, float | None]] = field(init=False)

    def __post_init__(self) -> None:
        values = {k: [run.metrics[k] for run in self.runs if k in run.metrics] for k in METRICS}
        self.stats = {k: summarize(v) for k, v in values.items() if v}

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={'(default)' if v is None else v}" for k, v in self.setting.items()) or "all"

    @property
    def n(self) -> int:
        return len(self.runs)


@dataclass
class Sweep:
    root: Path
    seed_key: str
    runs: list[Run]
    varying: list[str]
    constant: dict[str, str]
    rows: list[Row]
    averaged: dict[str, tuple[str, ...]] = field(default_factory=dict)  # average -> its column's tasks

    @property
    def failed(self) -> list[Run]:
        return [run for run in self.runs if run.results is None]


def sort_key(value: str | None) -> tuple:
    """Absent values first, then numbers in numeric order, then text in natural order (`b2` before `b10`)."""
    if value is None:
        return (0,)
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if math.isnan(number):
        return (2, tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", value)))
    return (1, number)


def summarize(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof=1), which is undefined (None) for a single value."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def find_runs(sweep_dir: Path) -> list[Path]:
    """Directories holding `.hydra/config.yaml` (a multirun's jobs) or a `results.json` that names its
    setting (a `sparsecse-study` point), `sweep_dir` itself included, in natural order."""
    configs = (p.parent.parent for p in _glob_depths(sweep_dir, ".hydra/config.yaml"))
    results = _glob_depths(sweep_dir, "results.json")
    points = (p.parent for p in results if not (p.parent / ".hydra").is_dir() and _names_setting(p))
    found = {*configs, *points}
    return sorted(found, key=lambda p: tuple(sort_key(part) for part in p.relative_to(sweep_dir).parts))


def _glob_depths(root: Path, name: str) -> list[Path]:
    return [path for depth in range(RUN_DEPTH + 1) for path in root.glob("*/" * depth + name)]


def _names_setting(results: Path) -> bool:
    try:
        return isinstance(json.loads(results.read_text()).get("setting"), dict)
    except (OSError, ValueError, AttributeError):
        return False


def read_overrides(run_dir: Path) -> dict[str, str]:
    """`.hydra/overrides.yaml` (a list of `key=value`) as a dict; ValueError naming the file if malformed."""
    path = run_dir / ".hydra" / "overrides.yaml"
    try:
        items = yaml.safe_load(path.read_text()) or []
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"unreadable {path.name}: {str(err).splitlines()[0]}") from None
    if not isinstance(items, list):
        raise ValueError(f"{path.name} holds a {type(items).__name__}, expected a list of key=value")
    pairs = (str(item).partition("=") for item in items)
    return {key.lstrip("+"): value for key, _, value in pairs}


def last_log_line(run_dir: Path, max_chars: int = 160) -> str | None:
    """The last non-empty line of the newest `*.log` in `run_dir`, shortened to `max_chars`."""
    for log in sorted(run_dir.glob("*.log"), key=lambda p: p.stat().st_mtime, reverse=True):
        with log.open("rb") as f:
            f.seek(max(0, log.stat().st_size - 8192))  # logs can be long; the end is enough
            lines = [line.strip() for line in f.read().decode(errors="replace").splitlines() if line.strip()]
        if lines:
            line = lines[-1]
            return line if len(line) <= max_chars else line[: max_chars - 3] + "..."
    return None


def read_results(run_dir: Path) -> tuple[dict | None, str]:
    """(results.json as a dict, "") or (None, why not)."""
    path = run_dir / "results.json"
    if not path.is_file():
        line = last_log_line(run_dir)
        return None, "no results.json; " + (f"last log line: {line}" if line else "no log")
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        return None, f"unreadable results.json: {err}"
    if not isinstance(results, dict):
        return None, f"results.json holds a {type(results).__name__}, expected an object"
    return results, ""


def load_run(run_dir: Path) -> Run:
    results, reason = read_results(run_dir)
    if not (run_dir / ".hydra" / "overrides.yaml").is_file() and results and "setting" in results:
        return Run(run_dir, {str(k): str(v) for k, v in results["setting"].items()}, results)
    try:
        overrides = read_overrides(run_dir)
    except ValueError as err:
        return Run(run_dir, {}, None, str(err))
    return Run(run_dir, overrides, results, reason)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def evaluated_block(results: Mapping) -> dict:
    """The scores of the evaluated model: the "after" block, else "before"."""
    return dict(results.get("after") or results.get("before") or {})


def run_metrics(results: Mapping) -> dict[str, float]:
    """The evaluated model's scores (`evaluated_block`), its size, the best checkpoint's step and
    the final step's scores (`final/...`); numbers only."""
    block = evaluated_block(results)
    final = {FINAL_PREFIX + k: v for k, v in (results.get("final") or {}).items()}
    found = {**block, **final, **{k: results[k] for k in (*SIZE_KEYS, "best_step") if k in results}}
    return {k: float(found[k]) for k in METRICS if _is_number(found.get(k))}


def run_sparsity(results: Mapping) -> float:
    """parameter_sparsity, else the head sparsity pruning reached, else 0 (a dense run)."""
    head_sparsity = (results.get("sparsity") or {}).get("prune/head_sparsity")
    for value in (results.get("parameter_sparsity"), head_sparsity):
        if _is_number(value):
            return float(value)
    return 0.0


def varying_keys(settings: Sequence[Mapping[str, str]]) -> list[str]:
    """Keys whose value differs between settings (or that some settings lack), in order of appearance."""
    keys = list(dict.fromkeys(k for setting in settings for k in setting))
    return [k for k in keys if len({setting.get(k) for setting in settings}) > 1]


def group_rows(runs: Sequence[Run], varying: Sequence[str], seed_key: str) -> list[Row]:
    """One row per setting, ordered by the varying values; runs within a row ordered by seed."""
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault(tuple((k, run.overrides.get(k)) for k in varying), []).append(run)
    by_seed = lambda run: sort_key(run.overrides.get(seed_key))  # noqa: E731
    rows = [Row(dict(setting), sorted(members, key=by_seed)) for setting, members in groups.items()]
    return sorted(rows, key=lambda row: tuple(sort_key(row.setting.get(k)) for k in varying))


def load_sweep(sweep_dir: str | Path, seed_key: str = "seed") -> Sweep:
    """Every run under `sweep_dir`; a ConfigError naming the directory if it is missing or holds no runs."""
    root = Path(sweep_dir)
    if not root.is_dir():
        raise ConfigError("SWEEP_DIR", f"{'not a' if root.exists() else 'no such'} directory {root}")
    runs = [load_run(path) for path in find_runs(root)]
    if not runs:
        raise ConfigError("SWEEP_DIR", f"no runs under {root} (no directory there holds .hydra/config.yaml)")
    settings = [{k: v for k, v in run.overrides.items() if k != seed_key} for run in runs]
    varying = varying_keys(settings)
    constant = {k: v for k, v in settings[0].items() if k not in varying}
    finished = [run for run in runs if run.results is not None]
    averaged = leave_out_other_averages(finished)
    rows = group_rows(finished, varying, seed_key)
    return Sweep(root, seed_key, runs, varying, constant, rows, averaged)


def leave_out_other_averages(runs: Sequence[Run]) -> dict[str, tuple[str, ...]]:
    """Per average, the tasks its column averages: those most runs averaged (the more tasks, on a
    tie). A run whose average is over other tasks is left out of that column (an STS-B-only run's
    "STS avg" is not the seven tasks' average); returns average -> tasks."""
    averaged = {}
    for average in AVERAGES:
        tasks = {id(run): run.averaged(average) for run in runs}
        counts = Counter(t for t in tasks.values() if t is not None)
        if not counts:
            continue
        averaged[average] = max(counts, key=lambda t: (counts[t], len(t)))
        for run in runs:
            if tasks[id(run)] not in (None, averaged[average]):
                run.left_out.add(average)
    return averaged
