"""Sweep reports: the runs of a Hydra multirun grouped by setting, as Markdown, CSV and PNG figures.

`sweep.py` reads and groups the runs, `tables.py` formats them, `study.py` draws the score modes
against the sparsity; this module writes report.md, report.csv and the figures."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from operator import attrgetter
from pathlib import Path

from sparsecse.core.errors import ConfigError
from sparsecse.report import plots
from sparsecse.report.study import BETTER, study_lines, study_section, write_study_figures
from sparsecse.report.sweep import (
    Row,
    Run,
    Sweep,
    group_rows,
    load_sweep,
    run_metrics,
    run_sparsity,
    sort_key,
    varying_keys,
)
from sparsecse.report.tables import (
    SECTIONS,
    average_label,
    average_notes,
    failed_section,
    markdown_table,
    write_csv,
)

__all__ = [
    "BETTER", "Row", "Run", "Sweep", "format_report", "group_rows", "load_sweep", "run_metrics",
    "run_sparsity", "sort_key", "study_lines", "varying_keys", "write_report",
]  # fmt: skip


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
    tables = [(title, markdown_table(sweep.rows, keys), keys) for title, keys in SECTIONS]
    parts += [
        "\n\n".join([f"## {title}", table, *average_notes(sweep, keys)])
        for title, table, keys in tables
        if table
    ] or ["No finished runs."]
    return "\n\n".join([*parts, failed_section(sweep)]) + "\n"


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
    label = lambda average: average_label(average, sweep.averaged.get(average, ()))  # noqa: E731
    score = partial(plots.score_vs_sparsity, xlabel=xlabel)
    figures = {  # file -> (what it needs, x, y, drawing)
        "align_uniform.png": ("alignment and uniformity", _metric("uniformity"), _metric("alignment"),
                              plots.align_uniform),
        "sparsity_sts.png": ("sts_avg", sparsity, _metric("sts_avg"),
                             partial(score, ylabel=label("sts_avg"))),
        "sparsity_transfer.png": ("transfer_avg", sparsity, _metric("transfer_avg"),
                                  partial(score, ylabel=label("transfer_avg"))),
    }  # fmt: skip
    written, notes = [], []
    for name, (needs, x, y, draw) in figures.items():
        points = _points(sweep.rows, x, y)
        if points:
            written.append(draw(points, output_dir / name))
        else:
            notes.append(f"skipped {name}: no finished run has {needs}")
    return written, notes


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
