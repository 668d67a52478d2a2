"""The SentEval files each task reads (relative to data_dir), and one check that lists every missing one."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from sparsecse.core.errors import ConfigError, first_few
from sparsecse.evaluation.sts import STS_YEARS
from sparsecse.evaluation.transfer import BINARY_FILES

STSB_DEV = "STS/STSBenchmark/sts-dev.csv"  # validation during training
STSB_TEST = "STS/STSBenchmark/sts-test.csv"
SNLI_FILES = tuple(f"SNLI/{name}.{split}" for split in ("dev", "test") for name in ("s1", "s2", "labels"))
FILES_NAMED = 8  # missing files named in the message; the rest are counted


def _sts_year(folder: str, subsets: Sequence[str]) -> tuple[str, ...]:
    return tuple(f"STS/{folder}/STS.{kind}.{subset}.txt" for subset in subsets for kind in ("input", "gs"))


TASK_FILES: dict[str, tuple[str, ...]] = {
    **{task: _sts_year(folder, subsets) for task, (folder, subsets) in STS_YEARS.items()},
    "stsb": (STSB_TEST,),
    "sickr": ("SICK/SICK_test_annotated.txt",),
    **{task: (f"{folder}/{pos}", f"{folder}/{neg}") for task, (folder, pos, neg) in BINARY_FILES.items()},
    "sst2": tuple(f"SST/binary/sentiment-{split}" for split in ("train", "dev", "test")),
    "trec": ("TREC/train_5500.label", "TREC/TREC_10.label"),
    "mrpc": ("MRPC/msr_paraphrase_train.txt", "MRPC/msr_paraphrase_test.txt"),
    "alignment_uniformity": (STSB_TEST,),
}


def missing_files(data_dir: Path, needs: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """User (a task, say) -> the files it needs that data_dir lacks; users lacking none are left out."""
    missing = {
        user: [f for f in files if not (Path(data_dir) / f).is_file()] for user, files in needs.items()
    }
    return {user: files for user, files in missing.items() if files}


def how_to_get(data_dir: Path) -> str:
    """The two ways to a data folder that holds SentEval, for the end of an error line."""
    fetch = f"sparsecse-data download --data-dir {data_dir}"
    return f"(fetch it with `{fetch}`, or set SPARSECSE_DATA_DIR or data_dir)"


def check_files(data_dir: Path, needs: Mapping[str, Sequence[str]], noun: str = "task") -> None:
    """One ConfigError on `data_dir` that names every missing file and the users (`noun`s) that need it."""
    if not Path(data_dir).is_dir():
        raise ConfigError("data_dir", f"no such directory {data_dir} {how_to_get(data_dir)}")
    missing = missing_files(data_dir, needs)
    files = list(dict.fromkeys(f for user_files in missing.values() for f in user_files))
    if not files:
        return
    shown = first_few(files, FILES_NAMED)
    users = ", ".join(missing)
    if noun:
        users = f"{noun}{'s' if len(missing) > 1 else ''} {users}"
    raise ConfigError(
        "data_dir",
        f"{data_dir} lacks {len(files)} file{'s' if len(files) > 1 else ''} needed by {users}: {shown} "
        f"{how_to_get(data_dir)}",
    )
