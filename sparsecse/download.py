"""`sparsecse-data`: fetch SimCSE's training corpora and SentEval's data, then check them.

Usage:
    sparsecse-data download [--data-dir DIR] [--only senteval wiki1m nli] [--base-url URL] [--force]
    sparsecse-data check [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import copy
import functools
import http.client
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from tqdm import tqdm

from sparsecse.errors import ConfigError
from sparsecse.paths import DATA_DIR_ENV, default_data_dir

PROG = "sparsecse-data"
DEFAULT_BASE_URL = "https://huggingface.co/datasets/princeton-nlp/datasets-for-simcse/resolve/main/"
SENTEVAL_TAR = "senteval.tar"
WIKI1M = "wiki1m_for_simcse.txt"
NLI = "nli_for_simcse.csv"
DATASETS: dict[str, str] = {"senteval": SENTEVAL_TAR, "wiki1m": WIKI1M, "nli": NLI}
LINE_COUNTS: dict[str, int] = {
    WIKI1M: 1_000_000,
    NLI: 275_602,  # header + 275,601 triplets (princeton-nlp/SimCSE#238)
}
ARCHIVE_PREFIX = "downstream"  # senteval.tar keeps the task folders under downstream/
SENTEVAL_FILES: tuple[str, ...] = (
    "STS/STS12-en-test/STS.input.MSRpar.txt",
    "STS/STS12-en-test/STS.gs.MSRpar.txt",
    "STS/STS13-en-test/STS.input.headlines.txt",
    "STS/STS14-en-test/STS.input.images.txt",
    "STS/STS15-en-test/STS.input.images.txt",
    "STS/STS16-en-test/STS.input.headlines.txt",
    "STS/STSBenchmark/sts-train.csv",
    "STS/STSBenchmark/sts-dev.csv",
    "STS/STSBenchmark/sts-test.csv",
    "SICK/SICK_train.txt",
    "SICK/SICK_trial.txt",
    "SICK/SICK_test_annotated.txt",
    "MR/rt-polarity.pos",
    "MR/rt-polarity.neg",
    "CR/custrev.pos",
    "SUBJ/subj.objective",
    "MPQA/mpqa.pos",
    "SST/binary/sentiment-test",
    "TREC/TREC_10.label",
    "MRPC/msr_paraphrase_test.txt",
    "SNLI/s1.test",
    "SNLI/s2.test",
    "SNLI/labels.test",
)
CHUNK_BYTES = 1 << 20


class DownloadError(RuntimeError):
    """A server that could not be reached or a transfer that broke off."""

    def __init__(self, url: str, reason: str):
        self.url = url
        self.reason = " ".join(reason.split()).rstrip(".")
        super().__init__(f"cannot reach {url}: {self.reason}")


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
    name = DATASETS[dataset]
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


def _read(response: BinaryIO, url: str) -> bytes:
    try:
        return response.read(CHUNK_BYTES)
    except (OSError, http.client.HTTPException) as err:
        raise DownloadError(url, str(err) or type(err).__name__) from None


def _open(url: str, timeout: float) -> BinaryIO:
    try:
        return urllib.request.urlopen(url, timeout=timeout)
    except urllib.error.HTTPError as err:
        raise DownloadError(url, f"HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        raise DownloadError(url, str(err.reason)) from None
    except (OSError, ValueError, http.client.HTTPException) as err:
        raise DownloadError(url, str(err) or type(err).__name__) from None


def _stream(url: str, out: BinaryIO, timeout: float) -> None:
    with _open(url, timeout) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        done = 0
        with tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1]) as bar:
            while chunk := _read(response, url):
                out.write(chunk)
                done += len(chunk)
                bar.update(len(chunk))
    if total is not None and done != total:
        raise DownloadError(url, f"the transfer stopped after {done} of {total} bytes")


def fetch(
    url: str, dest: Path, validate: Callable[[Path], None] | None = None, timeout: float = 60.0
) -> None:
    """Stream `url` into a temporary file beside `dest`, validate it, then rename it into place.

    A failure leaves no partial file and an existing `dest` untouched.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            _stream(url, out, timeout)
        if validate is not None:
            validate(tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


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


def _fetch_senteval(url: str, data_dir: Path, senteval_files: Sequence[str]) -> None:
    with tempfile.TemporaryDirectory(prefix=".senteval.", dir=data_dir) as tmp:
        archive, tree = Path(tmp) / SENTEVAL_TAR, Path(tmp) / "tree"
        fetch(url, archive)
        extract_senteval(archive, tree, url)
        missing = [name for name in senteval_files if not (tree / name).is_file()]
        if missing:
            raise ConfigError(url, f"archive lacks {missing[0]} ({len(missing)} expected file(s))")
        _install_tree(tree, data_dir)


def _fetch_file(url: str, dest: Path, expected_lines: int | None) -> None:
    """Fetch one file; one with the wrong line count never replaces `dest`."""
    validate = None
    if expected_lines is not None:
        validate = functools.partial(check_lines, expected=expected_lines, name=url)
    fetch(url, dest, validate)


def download(
    data_dir: Path,
    datasets: Iterable[str] = DATASETS,
    base_url: str = DEFAULT_BASE_URL,
    force: bool = False,
    line_counts: Mapping[str, int] = LINE_COUNTS,
    senteval_files: Sequence[str] = SENTEVAL_FILES,
) -> list[str]:
    """Fetch what is missing from `data_dir` (everything with `force`); check; return what came."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fetched = []
    for dataset in datasets:
        name = DATASETS[dataset]
        url = f"{base_url.rstrip('/')}/{name}"
        if force or missing_files(data_dir, dataset, senteval_files):
            if dataset == "senteval":
                _fetch_senteval(url, data_dir, senteval_files)
            else:
                _fetch_file(url, data_dir / name, line_counts.get(name))
            fetched.append(dataset)
        check_dataset(data_dir, dataset, line_counts, senteval_files)
    return fetched


def _listing(paths: Sequence[Path], shown: int = 3) -> str:
    more = f" and {len(paths) - shown} more" if len(paths) > shown else ""
    return ", ".join(str(p) for p in paths[:shown]) + more


def _state(
    data_dir: Path, dataset: str, line_counts: Mapping[str, int], senteval_files: Sequence[str]
) -> str:
    """One report line: `ok`, `missing` with the files, or `bad` with the check's error."""
    missing = missing_files(data_dir, dataset, senteval_files)
    if missing:
        return f"missing  {dataset}: {_listing(missing)}"
    try:
        check_dataset(data_dir, dataset, line_counts, senteval_files)
    except ConfigError as err:
        return f"bad      {dataset}: {err}"
    return f"ok       {dataset}"


def report(
    data_dir: Path,
    datasets: Iterable[str] = DATASETS,
    line_counts: Mapping[str, int] = LINE_COUNTS,
    senteval_files: Sequence[str] = SENTEVAL_FILES,
) -> int:
    """Print the state of each dataset, checking those present; 0 when all are there and right."""
    lines = [_state(data_dir, d, line_counts, senteval_files) for d in datasets]
    print("\n".join(lines))
    if all(line.startswith("ok") for line in lines):
        return 0
    print(f"Run `{PROG} download`, or place the files in {data_dir} yourself.")
    return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fetch_cmd = commands.add_parser("download", help="fetch the data, then check it")
    check_cmd = commands.add_parser("check", help="check the data already in place")
    for sub in (fetch_cmd, check_cmd):
        sub.add_argument("--data-dir", type=Path, help=f"default: ${DATA_DIR_ENV} or the cache")
    fetch_cmd.add_argument("--only", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    fetch_cmd.add_argument("--base-url", default=DEFAULT_BASE_URL)
    fetch_cmd.add_argument("--force", action="store_true", help="fetch even files already present")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (the console script passes it to sys.exit)."""
    args = _parser().parse_args(argv)
    data_dir = (args.data_dir or default_data_dir()).expanduser()
    try:
        if args.command == "check":
            return report(data_dir, DATASETS, LINE_COUNTS, SENTEVAL_FILES)
        fetched = download(data_dir, args.only, args.base_url, args.force, LINE_COUNTS, SENTEVAL_FILES)
    except DownloadError as err:
        hint = f"Put the files in {data_dir} yourself and point {DATA_DIR_ENV} there."
        print(f"{PROG}: {err}. {hint}", file=sys.stderr)
        return 1
    except (ConfigError, OSError) as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 1
    print(f"{PROG}: {', '.join(args.only)} ready in {data_dir}; fetched {len(fetched)} of them")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
