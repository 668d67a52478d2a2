"""Plain-text tables of evaluation results, printed by the entry points."""

from __future__ import annotations

from collections.abc import Mapping

from sparsecse.evaluation.sts import STS_TASKS
from sparsecse.evaluation.transfer import TRANSFER_TASKS

COLUMN_NAMES = {
    "sts12": "STS12", "sts13": "STS13", "sts14": "STS14", "sts15": "STS15", "sts16": "STS16",
    "stsb": "STS-B", "sickr": "SICK-R", "sts_avg": "STS avg",
    "mr": "MR", "cr": "CR", "subj": "SUBJ", "mpqa": "MPQA", "sst2": "SST-2", "trec": "TREC",
    "mrpc": "MRPC", "transfer_avg": "Tr. avg", "alignment": "alignment", "uniformity": "uniformity",
}  # fmt: skip
DECIMALS = {"alignment": 3, "uniformity": 3}  # scores x 100 get 2
DEFAULT_KEYS = (*STS_TASKS, "sts_avg", *TRANSFER_TASKS, "transfer_avg", "alignment", "uniformity")


def format_table(rows: Mapping[str, Mapping[str, float]], keys: tuple[str, ...] = DEFAULT_KEYS) -> str:
    """One row per model (e.g. `before`, `after`), one column per task, scores to two decimals."""
    keys = tuple(k for k in keys if any(k in row for row in rows.values()))
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
