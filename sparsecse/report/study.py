"""The study's view of a sweep: each metric against the sparsity, one line per score mode, a panel
per granularity, against the dense model (tables and figures)."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

from sparsecse.evaluation.table import ANALYSIS_KEYS, DECIMALS
from sparsecse.report import plots
from sparsecse.report.sweep import Sweep, summarize
from sparsecse.report.tables import LABELS, format_cell, padded_table

# Study figures: one line per score mode against the sparsity, a panel per granularity, the dense
# model as reference: keys as `sparsecse-study` names them, then as a training multirun does.
LINE_KEYS = ("score", "pruning.score", "pruning")
SPARSITY_KEYS = ("sparsity", "pruning.head_sparsity", "pruning.weight_sparsity")
PANEL_KEYS = ("granularity", "pruning.granularity")
LINE_METRICS = ("sts_avg", "transfer_avg", *ANALYSIS_KEYS)
BETTER = {"sts_avg": 1, "transfer_avg": 1, "alignment": -1, "uniformity": -1}  # the sign of an improvement


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
