"""A sweep's tables: Markdown whose columns line up in plain text, and CSV."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from sparsecse.evaluation.names import display_name
from sparsecse.evaluation.table import ANALYSIS_KEYS, COLUMN_NAMES, DECIMALS, STS_KEYS, TRANSFER_KEYS
from sparsecse.report.sweep import FINAL_KEYS, FINAL_PREFIX, METRICS, SIZE_KEYS, Row, Sweep

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


def task_names(tasks: Sequence[str]) -> str:
    return ", ".join(display_name(task) for task in tasks)


def average_label(average: str, tasks: Sequence[str]) -> str:
    """A figure's axis label for an average that names what it averages: `STS avg (7 tasks)`."""
    what = f"{len(tasks)} tasks" if len(tasks) > 2 else task_names(tasks)
    return f"{LABELS[average]} ({what})"


def average_notes(sweep: Sweep, keys: Sequence[str]) -> list[str]:
    """For each average among `keys`: the tasks its column is the mean of, and the runs left out of
    it because they averaged other tasks."""
    notes = []
    for average in (k for k in keys if k in sweep.averaged):
        label = LABELS[average]
        note = f"{label[0].upper()}{label[1:]} is the mean of {task_names(sweep.averaged[average])}."
        left = [run for run in sweep.runs if average in run.left_out]
        if left:
            named = "; ".join(f"`{run.path}` ({task_names(run.averaged(average))})" for run in left)
            note += f" Left out of that column, as the mean of other tasks: {named}."
        notes.append(note)
    return notes


def failed_section(sweep: Sweep) -> str:
    lines = [f"## Failed or missing runs ({len(sweep.failed)})", ""]
    for run in sweep.failed:
        overrides = " ".join(f"{k}={v}" for k, v in run.overrides.items()) or "no overrides"
        lines.append(f"- `{run.path}` ({overrides}): {run.reason}")
    return "\n".join(lines if sweep.failed else [*lines, "None."])


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
