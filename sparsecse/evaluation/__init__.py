"""SentEval-protocol evaluation on an `encode(texts) -> Tensor` callable."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path

from sparsecse.core.errors import ConfigError
from sparsecse.core.writing import write_text
from sparsecse.evaluation.analysis import ANALYSIS_TASKS, stsb_alignment_uniformity
from sparsecse.evaluation.files import TASK_FILES, check_files, missing_files
from sparsecse.evaluation.mteb_tasks import PREFIX, evaluate_mteb, is_mteb, load_tasks
from sparsecse.evaluation.names import display_name
from sparsecse.evaluation.sts import STS_TASKS, caching_encodings, evaluate_sts
from sparsecse.evaluation.table import ANALYSIS_KEYS, format_table
from sparsecse.evaluation.transfer import TRANSFER_TASKS, check_preset, evaluate_transfer

TASK_SETS = {"sts": STS_TASKS, "transfer": TRANSFER_TASKS, "analysis": ANALYSIS_TASKS}
ALL_TASKS = STS_TASKS + TRANSFER_TASKS + ANALYSIS_TASKS

__all__ = [
    "ALL_TASKS",
    "STS_TASKS",
    "TASK_SETS",
    "TRANSFER_TASKS",
    "check_evaluation",
    "check_senteval_files",
    "task_files",
    "result_keys",
    "evaluate_encoder",
    "evaluate_sts",
    "evaluate_transfer",
    "expand_tasks",
    "format_table",
    "missing_senteval_files",
]


def expand_tasks(tasks: Sequence[str]) -> tuple[str, ...]:
    """Task names and set names (`sts`, `transfer`, `analysis`) -> task names, in order, without repeats;
    `mteb:<Task>` entries pass through (checked by check_evaluation)."""
    names: list[str] = []
    for task in tasks:
        if is_mteb(task):
            names.extend([task] if task not in names else [])
            continue
        members = TASK_SETS.get(task, (task,))
        unknown = [m for m in members if m not in ALL_TASKS]
        if unknown:
            known = ", ".join([*TASK_SETS, *ALL_TASKS])
            raise ConfigError("tasks", f"unknown task {unknown[0]!r}; expected some of {known}")
        names.extend(m for m in members if m not in names)
    return tuple(names)


def check_evaluation(tasks: Sequence[str], transfer_preset: str = "test") -> tuple[str, ...]:
    """expand_tasks, and the transfer preset checked when transfer tasks are asked."""
    names = expand_tasks(tasks)
    if any(name in TRANSFER_TASKS for name in names):
        check_preset(transfer_preset)
    if mteb := [name.removeprefix(PREFIX) for name in names if is_mteb(name)]:
        load_tasks(mteb)  # the package is there and knows every name
    return names


def senteval_tasks(tasks: Iterable[str]) -> tuple[str, ...]:
    """The SentEval tasks among `tasks` (names or sets): those that read the data folder."""
    return tuple(t for t in expand_tasks(tuple(tasks)) if not is_mteb(t))


def task_files(tasks: Iterable[str]) -> list[str]:
    """The files (relative to the data folder) that `tasks` (names or sets) read, in task order."""
    return list(dict.fromkeys(f for t in senteval_tasks(tasks) for f in TASK_FILES[t]))


def missing_senteval_files(data_dir: Path, tasks: Iterable[str]) -> list[str]:
    """The files (relative to data_dir) that `tasks` (names or sets, as expand_tasks takes them) read
    and data_dir lacks, in task order."""
    missing = missing_files(Path(data_dir), {t: TASK_FILES[t] for t in senteval_tasks(tasks)})
    return list(dict.fromkeys(f for files in missing.values() for f in files))


def check_senteval_files(data_dir: Path, tasks: Iterable[str]) -> None:
    """One ConfigError on `data_dir` naming every file that `tasks` read and data_dir lacks."""
    check_files(Path(data_dir), {t: TASK_FILES[t] for t in senteval_tasks(tasks)})


def result_keys(tasks: Sequence[str]) -> list[str]:
    """The keys `evaluate_encoder(tasks=...)` returns, in its order."""
    names = expand_tasks(tasks)
    sts = [t for t in names if t in STS_TASKS]
    transfer = [t for t in names if t in TRANSFER_TASKS]
    analysis = list(ANALYSIS_KEYS) if "alignment_uniformity" in names else []
    return [
        *sts,
        *(["sts_avg"] if sts else []),
        *transfer,
        *(["transfer_avg"] if transfer else []),
        *analysis,
        *(t for t in names if is_mteb(t)),
    ]


def evaluate_encoder(
    encoder,
    data_dir: str | Path,
    tasks: Sequence[str] = ("sts",),
    batch_size: int = 128,
    transfer_preset: str = "test",
) -> dict[str, float]:
    """Evaluate a `SentenceEncoder` (anything with `encode(texts, batch_size=, show_progress=)`).

    STS tasks give `sts_avg`, transfer tasks `transfer_avg`, each only when tasks of its kind were asked;
    `alignment_uniformity` gives `alignment` and `uniformity` on STS-B test.
    """
    encode = partial(encoder.encode, batch_size=batch_size)
    names = expand_tasks(tasks)
    sts = [t for t in names if t in STS_TASKS]
    transfer = [t for t in names if t in TRANSFER_TASKS]
    # the STS tasks' sentences are encoded together, each distinct one once, and alignment/uniformity
    # reuses the STS-B test sentences among them (a tenth of the STS sentences)
    sentences = caching_encodings(encode)
    sts_label = f"{'STS' if len(sts) > 1 else display_name(sts[0])} encode" if sts else ""
    results = evaluate_sts(partial(sentences, show_progress=sts_label), data_dir, sts) if sts else {}
    if transfer:
        results |= evaluate_transfer(encode, data_dir, transfer, transfer_preset, show_progress=True)
    if "alignment_uniformity" in names:
        label = "alignment/uniformity encode"
        results |= stsb_alignment_uniformity(partial(sentences, show_progress=label), data_dir)
    if mteb := [name.removeprefix(PREFIX) for name in names if is_mteb(name)]:
        results |= evaluate_mteb(encoder, mteb, batch_size, getattr(encoder, "name_or_path", "model"))
    return results


def write_results(path: str | Path, results: Mapping) -> Path:
    """`results` as JSON, written whole or not at all (a full disk leaves no truncated file)."""
    return write_text(Path(path), json.dumps(results, indent=2) + "\n")
