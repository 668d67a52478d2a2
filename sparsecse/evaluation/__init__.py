"""SentEval-protocol evaluation on an `encode(texts) -> Tensor` callable."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path

from sparsecse.errors import ConfigError
from sparsecse.evaluation.sts import STS_TASKS, evaluate_sts
from sparsecse.evaluation.table import format_table

TASK_SETS = {"sts": STS_TASKS}

__all__ = [
    "STS_TASKS",
    "TASK_SETS",
    "evaluate_encoder",
    "evaluate_sts",
    "expand_tasks",
    "format_table",
]


def expand_tasks(tasks: Sequence[str]) -> tuple[str, ...]:
    """Task names and set names (`sts`) -> task names, in order, without repeats."""
    names: list[str] = []
    for task in tasks:
        members = TASK_SETS.get(task, (task,))
        unknown = [m for m in members if m not in STS_TASKS]
        if unknown:
            known = ", ".join([*TASK_SETS, *STS_TASKS])
            raise ConfigError("tasks", f"unknown task {unknown[0]!r}; expected some of {known}")
        names.extend(m for m in members if m not in names)
    return tuple(names)


def evaluate_encoder(
    encoder, data_dir: str | Path, tasks: Sequence[str] = ("sts",), batch_size: int = 128
) -> dict[str, float]:
    """Evaluate a `SentenceEncoder` (anything with `encode(texts, batch_size=, show_progress=)`)."""
    encode = partial(encoder.encode, batch_size=batch_size, show_progress=True)
    return evaluate_sts(encode, data_dir, expand_tasks(tasks))


def write_results(path: str | Path, results: Mapping) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path
