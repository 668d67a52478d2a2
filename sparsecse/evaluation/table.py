"""Plain-text tables of evaluation results, printed by the entry points."""

from __future__ import annotations

from collections.abc import Mapping

from sparsecse.evaluation.names import COLUMN_NAMES
from sparsecse.evaluation.sts import STS_TASKS
from sparsecse.evaluation.transfer import TRANSFER_TASKS

DECIMALS = {"alignment": 3, "uniformity": 3}  # scores x 100 get 2
DEFAULT_KEYS = (*STS_TASKS, "sts_avg", *TRANSFER_TASKS, "transfer_avg", "alignment", "uniformity")
AVERAGES = {"sts_avg": STS_TASKS, "transfer_avg": TRANSFER_TASKS}  # a column only over several tasks


def headline(scores: Mapping[str, float]) -> str:
    """One model's scores in a few words: its averages over several tasks, else each task's score."""
    tasks = [k for k in scores if k not in AVERAGES]
    shown = [k for k in AVERAGES if k in scores and len(set(AVERAGES[k]) & set(tasks)) > 1]
    shown += [k for k in tasks if not any(k in AVERAGES[a] for a in shown)]
    return ", ".join(f"{COLUMN_NAMES.get(k, k)} {scores[k]:.{DECIMALS.get(k, 2)}f}" for k in shown)


def format_table(rows: Mapping[str, Mapping[str, float]], keys: tuple[str, ...] | None = None) -> str:
    """One row per model (e.g. `before`, `after`), one column per task, scores to two decimals;
    `keys` None: the SentEval columns in their order, then any other (`mteb:...`) as they come."""
    if keys is None:
        found = dict.fromkeys(k for row in rows.values() for k in row)
        keys = (*DEFAULT_KEYS, *(k for k in found if k not in DEFAULT_KEYS))
    keys = tuple(k for k in keys if any(k in row for row in rows.values()))
    keys = tuple(k for k in keys if k not in AVERAGES or len(set(AVERAGES[k]) & set(keys)) > 1)
    names = {k: COLUMN_NAMES.get(k, k) for k in keys}
    widths = {k: max(6, len(name)) for k, name in names.items()}
    label_width = max(len(name) for name in rows)
    header = " " * label_width + " | " + " | ".join(f"{names[k]:>{widths[k]}}" for k in keys)
    lines = [header, "-" * len(header)]
    for name, row in rows.items():
        cells = " | ".join(
            f"{row[k]:{widths[k]}.{DECIMALS.get(k, 2)}f}" if k in row else " " * widths[k] for k in keys
        )
        lines.append(f"{name:<{label_width}} | {cells}")
    return "\n".join(lines)
