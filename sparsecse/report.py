"""Sweep reports: the runs of a Hydra multirun grouped by setting, as Markdown, CSV and PNG figures."""

from __future__ import annotations

import csv
import json
import math
import re
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, partial
from operator import attrgetter
from pathlib import Path

import yaml

from sparsecse import plots
from sparsecse.errors import ConfigError
from sparsecse.evaluation.table import (
    ANALYSIS_KEYS,
    COLUMN_NAMES,
    DECIMALS,
    EVALUATION_KEYS,
    STS_KEYS,
    TRANSFER_KEYS,
)

SIZE_KEYS = ("parameters", "parameter_sparsity")
# A run with `evaluate.final_step` also scored its last step's model ("final" in results.json) and
# says which step its best checkpoint came from.
FINAL_PREFIX = "final/"
FINAL_KEYS = tuple(FINAL_PREFIX + k for k in ("sts_avg", "transfer_avg", *ANALYSIS_KEYS))
METRICS = (*EVALUATION_KEYS, *SIZE_KEYS, "best_step", *FINAL_KEYS)
LABELS = {
    **COLUMN_NAMES,
    "transfer_avg": "transfer avg",
    "parameters": "params (M)",
    "parameter_sparsity": "param sparsity",
    "best_step": "best step",
}
LABELS |= {k: f"{LABELS[k.removeprefix(FINAL_PREFIX)]} (final step)" for k in FINAL_KEYS}
SECTIONS = (
    ("STS (Spearman × 100)", STS_KEYS),
    ("Transfer (accuracy)", TRANSFER_KEYS),
    ("Alignment, uniformity (lower is better) and size", (*ANALYSIS_KEYS, *SIZE_KEYS)),
    ("The best checkpoint's step, and the model of the final step", ("best_step", *FINAL_KEYS)),
)
RUN_DEPTH = 3  # Hydra puts runs one level below the sweep dir; custom subdirs may nest them deeper
# Study figures: one line per score mode against the sparsity, a panel per granularity, the dense
# model as reference: keys as `sparsecse-study` names them, then as a training multirun does.
LINE_KEYS = ("score", "pruning.score", "pruning")
SPARSITY_KEYS = ("sparsity", "pruning.head_sparsity", "pruning.weight_sparsity")
PANEL_KEYS = ("granularity", "pruning.granularity")
LINE_METRICS = ("sts_avg", "transfer_avg", *ANALYSIS_KEYS)
BETTER = {"sts_avg": 1, "transfer_avg": 1, "alignment": -1, "uniformity": -1}  # the sign of an improvement


@dataclass
class Run:
    path: Path
    overrides: dict[str, str]
    results: dict | None  # None: the job did not finish, see `reason`
    reason: str = ""

    @cached_property
    def metrics(self) -> dict[str, float]:
        return run_metrics(self.results or {})

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


def run_metrics(results: Mapping) -> dict[str, float]:
    """The evaluated model's scores (the "after" block, else "before"), its size, the best
    checkpoint's step and the final step's scores (`final/...`); numbers only."""
    block = dict(results.get("after") or results.get("before") or {})
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
    rows = group_rows([run for run in runs if run.results is not None], varying, seed_key)
    return Sweep(root, seed_key, runs, varying, constant, rows)


def format_cell(metric: str, mean: float, std: float | None) -> str:
    """`mean ± std`: scores to 2 decimals, alignment/uniformity/sparsity to 3, parameters in millions."""
    metric = metric.removeprefix(FINAL_PREFIX)
    scale = 1e-6 if metric == "parameters" else 1.0
    digits = {**DECIMALS, "parameter_sparsity": 3, "best_step": 0}.get(metric, 2)
    text = f"{mean * scale:.{digits}f}"
    return text if std is None else f"{text} ± {std * scale:.{digits}f}"


def markdown_table(rows: Sequence[Row], keys: Sequence[str]) -> str | None:
    """A padded Markdown table of the `keys` some row has; None if no row has any."""
    keys = [k for k in keys if any(k in row.stats for row in rows)]
    if not keys:
        return None
    header = ["setting", "n", *(LABELS[k] for k in keys)]
    cells = lambda row: [format_cell(k, *row.stats[k]) if k in row.stats else "" for k in keys]  # noqa: E731
    return padded_table(header, [[row.label.replace("|", r"\|"), str(row.n), *cells(row)] for row in rows])


def padded_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    """Markdown whose columns line up in plain text: the first left-aligned, the rest right-aligned."""
    widths = [max(3, *(len(line[i]) for line in [header, *body])) for i in range(len(header))]
    rule = [":" + "-" * (widths[0] - 1), *("-" * (w - 1) + ":" for w in widths[1:])]
    return "\n".join(_table_line(line, widths) for line in [header, rule, *body])


def _table_line(cells: Sequence[str], widths: Sequence[int]) -> str:
    """The setting left-aligned, the numbers right-aligned, so that the table reads as plain text too."""
    padded = [cells[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(cells[1:], widths[1:]))]
    return "| " + " | ".join(padded) + " |"


def failed_section(sweep: Sweep) -> str:
    lines = [f"## Failed or missing runs ({len(sweep.failed)})", ""]
    for run in sweep.failed:
        overrides = " ".join(f"{k}={v}" for k, v in run.overrides.items()) or "no overrides"
        lines.append(f"- `{run.path}` ({overrides}): {run.reason}")
    return "\n".join(lines if sweep.failed else [*lines, "None."])


def format_report(sweep: Sweep) -> str:
    """The whole of report.md: a summary line, one table per group of metrics, the failed runs."""
    finished = len(sweep.runs) - len(sweep.failed)
    constant = ", ".join(f"`{k}={v}`" for k, v in sweep.constant.items()) or "none"
    parts = [
        f"# Sweep report: {sweep.root}",
        f"{len(sweep.runs)} runs: {finished} finished, {len(sweep.failed)} failed or missing. "
        f"Rows group runs by their overrides less `{sweep.seed_key}`; constant overrides: {constant}. "
        "Cells are mean ± sample std over the runs (n); just the mean when n = 1.",
    ]
    parts += filter(None, [study_section(sweep)])
    tables = [(title, markdown_table(sweep.rows, keys)) for title, keys in SECTIONS]
    parts += [f"## {title}\n\n{table}" for title, table in tables if table] or ["No finished runs."]
    return "\n\n".join([*parts, failed_section(sweep)]) + "\n"


def write_csv(sweep: Sweep, path: Path) -> Path:
    """One row per setting: setting, each varying override, n, then `<metric>_mean`, `<metric>_std`."""
    metrics = [k for k in METRICS if any(k in row.stats for row in sweep.rows)]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        columns = [f"{k}_{stat}" for k in metrics for stat in ("mean", "std")]
        writer.writerow(["setting", *sweep.varying, "n", *columns])
        for row in sweep.rows:
            stats = [x for k in metrics for x in row.stats.get(k, (None, None))]
            numbers = ["" if x is None else repr(round(x, 10)) for x in stats]  # 0.02, not 0.019999999999999
            overrides = ["" if row.setting[k] is None else row.setting[k] for k in sweep.varying]
            writer.writerow([row.label, *overrides, row.n, *numbers])
    return path


def _metric(name: str) -> Callable[[Run], float | None]:
    return lambda run: run.metrics.get(name)


def _points(rows: Sequence[Row], x: Callable[[Run], float | None], y: Callable[[Run], float | None]):
    """Per row label, the (x, y) of every run that has both."""
    groups = {row.label: [(x(run), y(run)) for run in row.runs] for row in rows}
    groups = {label: [p for p in points if None not in p] for label, points in groups.items()}
    return {label: points for label, points in groups.items() if points}


def write_figures(sweep: Sweep, output_dir: Path) -> tuple[list[Path], list[str]]:
    """align_uniform.png, sparsity_sts.png, sparsity_transfer.png; returns (paths, notes on skipped ones)."""
    sparsity = attrgetter("sparsity")
    measured = all("parameter_sparsity" in run.metrics for row in sweep.rows for run in row.runs)
    xlabel = "parameter sparsity" if measured else "sparsity (parameter_sparsity, else prune/head_sparsity)"
    figures = {  # file -> (what it needs, x, y, drawing)
        "align_uniform.png": ("alignment and uniformity", _metric("uniformity"), _metric("alignment"),
                              plots.align_uniform),
        "sparsity_sts.png": ("sts_avg", sparsity, _metric("sts_avg"),
                             partial(plots.score_vs_sparsity, ylabel="STS avg", xlabel=xlabel)),
        "sparsity_transfer.png": ("transfer_avg", sparsity, _metric("transfer_avg"),
                                  partial(plots.score_vs_sparsity, ylabel="transfer avg", xlabel=xlabel)),
    }  # fmt: skip
    written, notes = [], []
    for name, (needs, x, y, draw) in figures.items():
        points = _points(sweep.rows, x, y)
        if points:
            written.append(draw(points, output_dir / name))
        else:
            notes.append(f"skipped {name}: no finished run has {needs}")
    return written, notes


def _first_key(sweep: Sweep, keys: Sequence[str]) -> str | None:
    present = {k for run in sweep.runs for k in run.overrides}
    return next((k for k in keys if k in present), None)


def is_dense(overrides: Mapping[str, str], line_key: str) -> bool:
    """The reference: the study's dense encoder, or a training run with `pruning=none`."""
    return overrides.get(line_key) == "dense" or overrides.get("pruning") == "none"


def study_lines(sweep: Sweep, metric: str) -> tuple[plots.Lines, list[float]] | None:
    """{panel: {score mode: {sparsity: values over seeds}}} and the dense values of `metric`; None
    when the sweep has no score mode and sparsity to draw lines of."""
    line_key, x_key = _first_key(sweep, LINE_KEYS), _first_key(sweep, SPARSITY_KEYS)
    if line_key is None or x_key is None:
        return None
    panel_key = _first_key(sweep, PANEL_KEYS)
    panels: dict = {}
    reference = []
    for run in (run for row in sweep.rows for run in row.runs if metric in run.metrics):
        overrides, value = run.overrides, run.metrics[metric]
        if is_dense(overrides, line_key):
            reference.append(value)
        elif line_key in overrides and x_key in overrides:
            panel = panels.setdefault(overrides.get(panel_key, "") if panel_key else "", {})
            panel.setdefault(overrides[line_key], {}).setdefault(float(overrides[x_key]), []).append(value)
    return (panels, reference) if panels else None


def study_table(lines: Mapping[str, Mapping[float, Sequence[float]]], metric: str,
                reference: Sequence[float]) -> str:  # fmt: skip
    """Score mode against sparsity: mean ± std over seeds, `(n)` where a cell has fewer seeds than the
    fullest, bold where the mean beats the dense reference (the study's question: does removing the
    least-contributing fraction p help?)."""
    sparsities = sorted({p for by_p in lines.values() for p in by_p})
    most = max(len(values) for by_p in lines.values() for values in by_p.values())
    dense = statistics.fmean(reference) if reference else None

    def cell(values: Sequence[float] | None) -> str:
        if not values:
            return ""
        mean, std = summarize(values)
        text = format_cell(metric, mean, std) + (f" ({len(values)})" if len(values) < most else "")
        better = dense is not None and (mean - dense) * BETTER[metric] > 0
        return f"**{text}**" if better else text

    header = ["score", *(f"p={p:g}" for p in sparsities)]
    return padded_table(
        header, [[label, *(cell(by_p.get(p)) for p in sparsities)] for label, by_p in lines.items()]
    )


def study_difference_table(lines: Mapping[str, Mapping[float, Sequence[float]]], metric: str,
                           reference: Sequence[float]) -> str:  # fmt: skip
    """Score mode against sparsity: the mean over seeds minus the dense mean, from the raw values (not
    the rounded cells of `study_table`), and (k/n): how many of the n seeds are better than dense."""
    sparsities = sorted({p for by_p in lines.values() for p in by_p})
    dense = statistics.fmean(reference)
    digits = DECIMALS.get(metric, 2)

    def cell(values: Sequence[float] | None) -> str:
        if not values:
            return ""
        better = sum((value - dense) * BETTER[metric] > 0 for value in values)
        return f"{statistics.fmean(values) - dense:+.{digits}f} ({better}/{len(values)})"

    header = ["score", *(f"p={p:g}" for p in sparsities)]
    return padded_table(
        header, [[label, *(cell(by_p.get(p)) for p in sparsities)] for label, by_p in lines.items()]
    )


def study_section(sweep: Sweep) -> str | None:
    """The study's tables, one per metric and granularity, with the dense value in the heading; None for
    a sweep without score modes over sparsities."""
    tables = []
    for metric in LINE_METRICS:
        found = study_lines(sweep, metric)
        if found is None:
            continue
        panels, reference = found
        dense = f"dense {format_cell(metric, *summarize(reference))}" if reference else "no dense run"
        for panel, lines in panels.items():
            title = ", ".join(filter(None, [LABELS.get(metric, metric), panel]))
            tables.append(f"### {title} ({dense})\n\n{study_table(lines, metric, reference)}")
            if reference:
                differences = study_difference_table(lines, metric, reference)
                tables.append(
                    f"### {title}: difference from dense (seeds better than dense)\n\n{differences}"
                )
    if not tables:
        return None
    intro = ("## Score mode against sparsity\n\nCells are mean ± sample std over seeds; (n) marks a cell "
             "with fewer seeds than the fullest. Bold: better than dense (STS and transfer higher, alignment "
             "and uniformity lower). Each table's differences are the mean over seeds minus dense, from the "
             "unrounded values, with how many seeds are better than dense. The ± covers seeds (scoring "
             "batches, dropout, random scores), not the sampling of the test sets.")  # fmt: skip
    return "\n\n".join([intro, *tables])


def write_study_figures(sweep: Sweep, output_dir: Path) -> list[Path]:
    """`sparsity_lines_<metric>.png`: each metric against the sparsity, one line per score mode."""
    written = []
    for metric in LINE_METRICS:
        found = study_lines(sweep, metric)
        if found is not None:
            path = output_dir / f"sparsity_lines_{metric}.png"
            written.append(plots.lines_vs_sparsity(found[0], path, LABELS.get(metric, metric), found[1]))
    return written


def write_report(sweep: Sweep, output_dir: str | Path | None = None) -> tuple[list[Path], list[str]]:
    """report.md, report.csv and the figures in `output_dir` (default: the sweep dir); (paths, notes)."""
    output_dir = Path(output_dir) if output_dir is not None else sweep.root
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        markdown = output_dir / "report.md"
        markdown.write_text(format_report(sweep))
        figures, notes = write_figures(sweep, output_dir)
        figures += write_study_figures(sweep, output_dir)
        return [markdown, write_csv(sweep, output_dir / "report.csv"), *figures], notes
    except OSError as err:
        raise ConfigError("output", f"cannot write {err.filename or output_dir}: {err.strerror}") from None
