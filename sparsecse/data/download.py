"""Fetching SimCSE's training corpora and SentEval's data into the data folder, and checking them
(file by file, line counts): from the Hub dataset princeton-nlp/datasets-for-simcse through
huggingface_hub, or from a plain http(s):// or file:// folder. `sparsecse-data` (sparsecse.cli.data)
is its command line; the main job fetches what its data folder lacks (`fetch_missing`).
"""

from __future__ import annotations

import copy
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Literal, get_args

from sparsecse.core.errors import ConfigError, first_few
from sparsecse.core.paths import DATA_DIR_ENV
from sparsecse.data.sources import CHUNK_BYTES, SIMCSE_HUB, DownloadError, Hub, Mirror, hub_retries_unlogged

PROG = "sparsecse-data"
SENTEVAL_TAR = "senteval.tar"
WIKI1M = "wiki1m_for_simcse.txt"
NLI = "nli_for_simcse.csv"
DATASETS: dict[str, str] = {"senteval": SENTEVAL_TAR, "wiki1m": WIKI1M, "nli": NLI}
ARCHIVE_PREFIX = "downstream"  # senteval.tar keeps the task folders under downstream/
# Lines of the files a check reads, as SentEval's data has them (each ends with a newline): a file cut
# short or overwritten fails the check before anything reads it.
SENTEVAL_LINES: dict[str, int] = {
    "STS/STS12-en-test/STS.input.MSRpar.txt": 750,
    "STS/STS12-en-test/STS.gs.MSRpar.txt": 750,
    "STS/STS13-en-test/STS.input.headlines.txt": 750,
    "STS/STS14-en-test/STS.input.images.txt": 750,
    "STS/STS15-en-test/STS.input.images.txt": 1500,
    "STS/STS16-en-test/STS.input.headlines.txt": 1498,
    "STS/STSBenchmark/sts-train.csv": 5749,
    "STS/STSBenchmark/sts-dev.csv": 1500,
    "STS/STSBenchmark/sts-test.csv": 1379,
    "SICK/SICK_train.txt": 4501,
    "SICK/SICK_trial.txt": 501,
    "SICK/SICK_test_annotated.txt": 4928,
    "MR/rt-polarity.pos": 5331,
    "MR/rt-polarity.neg": 5331,
    "CR/custrev.pos": 2407,
    "SUBJ/subj.objective": 5000,
    "MPQA/mpqa.pos": 3312,
    "SST/binary/sentiment-test": 1821,
    "TREC/TREC_10.label": 500,
    "MRPC/msr_paraphrase_test.txt": 1726,
    "SNLI/s1.test": 9824,
    "SNLI/s2.test": 9824,
    "SNLI/labels.test": 9824,
}
SENTEVAL_FILES: tuple[str, ...] = tuple(SENTEVAL_LINES)
LINE_COUNTS: dict[str, int] = {
    WIKI1M: 1_000_000,
    NLI: 275_602,  # header + 275,601 triplets (princeton-nlp/SimCSE#238)
    **SENTEVAL_LINES,
}


def count_lines(path: Path) -> int:
    """Lines in a file; a last line without a newline still counts."""
    count, last = 0, b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


def check_lines(path: Path, expected: int, name: str | None = None) -> None:
    actual = count_lines(path)
    if actual != expected:
        raise ConfigError(name or str(path), f"expected {expected} lines, found {actual}")


def missing_files(data_dir: Path, dataset: str, senteval_files: Sequence[str] = SENTEVAL_FILES) -> list[Path]:
    """The files of `dataset` that are not in `data_dir`."""
    names = senteval_files if dataset == "senteval" else [DATASETS[dataset]]
    return [data_dir / name for name in names if not (data_dir / name).is_file()]


def check_dataset(
    data_dir: Path,
    dataset: str,
    line_counts: Mapping[str, int] = LINE_COUNTS,
    senteval_files: Sequence[str] = SENTEVAL_FILES,
) -> None:
    """Raise a one-line ConfigError naming the first missing file or wrong line count."""
    missing = missing_files(data_dir, dataset, senteval_files)
    if missing:
        raise ConfigError(str(missing[0]), f"missing ({len(missing)} file(s) of {dataset})")
    for name in senteval_files if dataset == "senteval" else [DATASETS[dataset]]:
        if name in line_counts:
            check_lines(data_dir / name, line_counts[name])


def check(
    data_dir: Path,
    datasets: Iterable[str] = DATASETS,
    line_counts: Mapping[str, int] = LINE_COUNTS,
    senteval_files: Sequence[str] = SENTEVAL_FILES,
) -> None:
    for dataset in datasets:
        check_dataset(data_dir, dataset, line_counts, senteval_files)


def _member_path(member: tarfile.TarInfo, source: str) -> PurePosixPath | None:
    """Where a member goes once `downstream/` is stripped; None for the prefix folder itself."""
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts:
        raise ConfigError(source, f"unsafe member {member.name!r} (absolute or '..' path)")
    if not (member.isfile() or member.isdir()):
        raise ConfigError(source, f"unsafe member {member.name!r} (not a file or folder)")
    parts = path.parts[1:] if path.parts[:1] == (ARCHIVE_PREFIX,) else path.parts
    return PurePosixPath(*parts) if parts else None


def extract_senteval(archive: Path, dest: Path, source: str | None = None) -> None:
    """Extract `archive` into `dest` without its `downstream/` prefix; refuse unsafe members.

    Every member is checked before anything is written. `source` names the archive in errors.
    """
    source = source or str(archive)
    options = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    try:
        with tarfile.open(archive) as tar:
            placed = [(m, _member_path(m, source)) for m in tar.getmembers()]
            for member, path in placed:
                if path is not None:
                    renamed = copy.copy(member)
                    renamed.name = str(path)
                    tar.extract(renamed, dest, **options)
    except tarfile.TarError as err:
        reason = " ".join(str(err).split())
        raise ConfigError(source, f"unreadable tar archive ({reason})") from None


def _install_tree(staging: Path, data_dir: Path) -> None:
    """Move each top-level entry of `staging` into `data_dir`, replacing what was there."""
    for entry in sorted(staging.iterdir()):
        target = data_dir / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        os.replace(entry, target)


def _fetch_checked(
    source: Hub | Mirror,
    dataset: str,
    data_dir: Path,
    force: bool,
    line_counts: Mapping[str, int],
    senteval_files: Sequence[str],
) -> None:
    """Fetch one dataset into a staging folder inside `data_dir`, check it, then move it into place.

    A transfer that breaks off or a file that fails a check leaves `data_dir` as it was.
    """
    name = DATASETS[dataset]
    url = source.url(name)
    with tempfile.TemporaryDirectory(prefix=f".{dataset}.", dir=data_dir) as tmp:
        staged = Path(tmp) / name
        source.fetch(name, staged, force)
        if dataset == "senteval":
            tree = Path(tmp) / "tree"
            extract_senteval(staged, tree, url)
            missing = [file for file in senteval_files if not (tree / file).is_file()]
            if missing:
                raise ConfigError(url, f"archive lacks {missing[0]} ({len(missing)} expected file(s))")
            for file in senteval_files:
                if file in line_counts:
                    check_lines(tree / file, line_counts[file], f"{url}: {file}")
            _install_tree(tree, data_dir)
            return
        if name in line_counts:
            check_lines(staged, line_counts[name], url)
        os.replace(staged, data_dir / name)


def download(
    data_dir: Path,
    datasets: Iterable[str] = DATASETS,
    source: Hub | Mirror = SIMCSE_HUB,
    force: bool = False,
    line_counts: Mapping[str, int] = LINE_COUNTS,
    senteval_files: Sequence[str] = SENTEVAL_FILES,
) -> list[str]:
    """Fetch what is missing from `data_dir` (everything with `force`); check; return what came."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fetched = []
    for dataset in datasets:
        if force or missing_files(data_dir, dataset, senteval_files):
            _fetch_checked(source, dataset, data_dir, force, line_counts, senteval_files)
            fetched.append(dataset)
        check_dataset(data_dir, dataset, line_counts, senteval_files)
    return fetched


DownloadMode = Literal["auto", "never"]  # data.download: fetch what a run lacks, or stop and say how
DOWNLOAD_MODES = get_args(DownloadMode)
WAIT_SECONDS = 3600.0  # how long a rank that does not download waits for the one that does


def dataset_of(file: str) -> str:
    """The dataset a file in the data folder comes from: SimCSE's training files by name, else SentEval."""
    return next((dataset for dataset, name in DATASETS.items() if name == file), "senteval")


def fetch_missing(
    data_dir: Path,
    files: Sequence[str],
    mode: DownloadMode,
    wait: bool = False,
    source: Hub | Mirror | None = None,
) -> list[str]:
    """With `mode="auto"`, fetch the datasets that `files` (paths relative to `data_dir`) come from
    when any is missing: downloaded, checked, then put in place; returns the datasets fetched. When
    nothing can be reached, one ConfigError names the folder, the command that fetches the data and
    the variable that points elsewhere. `"never"` fetches nothing (the caller's file check says what
    is missing). `wait`: another process (DDP rank 0) downloads; poll until the files are there."""
    if mode not in DOWNLOAD_MODES:
        raise ConfigError("data.download", f"must be one of {', '.join(DOWNLOAD_MODES)}, got {mode!r}")
    missing = [file for file in files if not (data_dir / file).is_file()]
    if mode == "never" or not missing:
        return []
    datasets = list(dict.fromkeys(dataset_of(file) for file in missing))
    what = f"{data_dir} lacks the {' and '.join(datasets)} data ({listing([Path(f) for f in missing], 1)})"
    command = f"`{PROG} download --data-dir {data_dir} --only {' '.join(datasets)}`"
    ways_out = f"fetch it with {command}, or set {DATA_DIR_ENV} (or data_dir=) to a folder that holds it"
    if wait:
        return _wait_for(data_dir, missing, what, ways_out)
    print(f"{what}: downloading it (data.download=auto; data.download=never stops instead)", flush=True)
    started = time.monotonic()
    try:
        with hub_retries_unlogged():
            fetched = download(data_dir, datasets, source or SIMCSE_HUB, False, LINE_COUNTS, SENTEVAL_FILES)
    except DownloadError as err:
        raise ConfigError("data_dir", f"{what}, and {err}; {ways_out}") from None
    took = f"{time.monotonic() - started:.1f} s"
    print(f"{' and '.join(datasets)} data downloaded, checked and placed in {data_dir} in {took}", flush=True)
    return fetched


def _wait_for(data_dir: Path, files: Sequence[str], what: str, ways_out: str) -> list[str]:
    deadline = time.monotonic() + WAIT_SECONDS
    while any(not (data_dir / file).is_file() for file in files):
        if time.monotonic() > deadline:
            raise ConfigError("data_dir", f"{what} after {WAIT_SECONDS:.0f} s waiting for rank 0; {ways_out}")
        time.sleep(5.0)
    return []


def listing(paths: Sequence[Path], shown: int = 3) -> str:
    return first_few([str(path) for path in paths], shown)
