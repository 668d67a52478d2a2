"""Plain-text tables of evaluation results, printed by the entry points."""

from __future__ import annotations

from collections.abc import Mapping

from sparsecse.evaluation.names import COLUMN_NAMES
from sparsecse.evaluation.sts import STS_TASKS
from sparsecse.evaluation.transfer import TRANSFER_TASKS

# Every key evaluate_encoder can return (mteb:<Task> keys come after them), in table order.
STS_KEYS = (*STS_TASKS, "sts_avg")
TRANSFER_KEYS = (*TRANSFER_TASKS, "transfer_avg")
ANALYSIS_KEYS = ("alignment", "uniformity")  # Wang & Isola (2020): lower is better for both
EVALUATION_KEYS = (*STS_KEYS, *TRANSFER_KEYS, *ANALYSIS_KEYS)
AVERAGES = {"sts_avg": STS_TASKS, "transfer_avg": TRANSFER_TASKS}  # a column only over several tasks
DECIMALS = dict.fromkeys(ANALYSIS_KEYS, 3)  # scores x 100 get 2


def format_score(key: str, value: float, width: int = 0) -> str:
    """A score as every table shows it: Spearman or accuracy x 100 to 2 decimals, alignment and
    uniformity to 3."""
    return f"{value:{width}.{DECIMALS.get(key, 2)}f}"


def headline(scores: Mapping[str, float]) -> str:
    """One model's scores in a few words: its averages over several tasks, else each task's score."""
    tasks = [k for k in scores if k not in AVERAGES]
    shown = [k for k in AVERAGES if k in scores and len(set(AVERAGES[k]) & set(tasks)) > 1]
    shown += [k for k in tasks if not any(k in AVERAGES[a] for a in shown)]
    return ", ".join(f"{COLUMN_NAMES.get(k, k)} {format_score(k, scores[k])}" for k in shown)


def format_table(rows: Mapping[str, Mapping[str, float]], keys: tuple[str, ...] | None = None) -> str:
    """One row per model (e.g. `before`, `after`), one column per task, scores to two decimals;
    `keys` None: the SentEval columns in their order, then any other (`mteb:...`) as they come."""
    if keys is None:
        found = dict.fromkeys(k for row in rows.values() for k in row)
        keys = (*EVALUATION_KEYS, *(k for k in found if k not in EVALUATION_KEYS))
    keys = tuple(k for k in keys if any(k in row for row in rows.values()))
    keys = tuple(k for k in keys if k not in AVERAGES or len(set(AVERAGES[k]) & set(keys)) > 1)
    names = {k: COLUMN_NAMES.get(k, k) for k in keys}
    widths = {k: max(6, len(name)) for k, name in names.items()}
    label_width = max(len(name) for name in rows)
    header = " " * label_width + " | " + " | ".join(f"{names[k]:>{widths[k]}}" for k in keys)
    lines = [header, "-" * len(header)]
    for name, row in rows.items():
        cells = " | ".join(format_score(k, row[k], widths[k]) if k in row else " " * widths[k] for k in keys)
        lines.append(f"{name:<{label_width}} | {cells}")
    return "\n".join(lines)
