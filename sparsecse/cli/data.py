"""`sparsecse-data`: fetch SimCSE's training corpora and SentEval's data, then check them.

The files come from the Hub dataset princeton-nlp/datasets-for-simcse through huggingface_hub
(its cache, retries and resumed transfers; `$HF_ENDPOINT` or `--endpoint` names a mirror), or
from a plain http(s):// or file:// folder given with `--base-url` (sparsecse.data.download does the work).

Usage:
    sparsecse-data download [--data-dir DIR] [--only senteval wiki1m nli] [--force]
                            [--endpoint URL | --base-url URL]
    sparsecse-data check [--data-dir DIR]
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from sparsecse.core.console import failed
from sparsecse.core.errors import ConfigError
from sparsecse.core.paths import DATA_DIR_ENV, default_data_dir
from sparsecse.data import download as dl
from sparsecse.data import sources

PROG = dl.PROG


def _state(
    data_dir: Path, dataset: str, line_counts: Mapping[str, int], senteval_files: Sequence[str]
) -> str:
    """One report line: `ok`, `missing` with the files, or `bad` with the check's error."""
    missing = dl.missing_files(data_dir, dataset, senteval_files)
    if missing:
        return f"missing  {dataset}: {dl.listing(missing)}"
    try:
        dl.check_dataset(data_dir, dataset, line_counts, senteval_files)
    except ConfigError as err:
        return f"bad      {dataset}: {err}"
    return f"ok       {dataset}"


def report(
    data_dir: Path,
    datasets: Iterable[str] = dl.DATASETS,
    line_counts: Mapping[str, int] = dl.LINE_COUNTS,
    senteval_files: Sequence[str] = dl.SENTEVAL_FILES,
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
        sub.add_argument("--data-dir", "--dir", type=Path, help=f"default: ${DATA_DIR_ENV} or the cache")
    fetch_cmd.add_argument("--only", nargs="+", choices=list(dl.DATASETS), default=list(dl.DATASETS))
    where = fetch_cmd.add_mutually_exclusive_group()
    where.add_argument("--endpoint", help="a Hub mirror (default: $HF_ENDPOINT, else huggingface.co)")
    where.add_argument(
        "--base-url", help="a plain http(s):// or file:// folder holding the files, not the Hub"
    )
    fetch_cmd.add_argument("--force", action="store_true", help="fetch even files already present")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (the console script passes it to sys.exit)."""
    args = _parser().parse_args(argv)
    data_dir = (args.data_dir or default_data_dir()).expanduser()
    try:
        if args.command == "check":
            return report(data_dir, dl.DATASETS, dl.LINE_COUNTS, dl.SENTEVAL_FILES)
        source = sources.Mirror(args.base_url) if args.base_url else sources.Hub(endpoint=args.endpoint)
        with sources.hub_retries_unlogged():
            fetched = dl.download(data_dir, args.only, source, args.force, dl.LINE_COUNTS, dl.SENTEVAL_FILES)
    except sources.DownloadError as err:
        hint = f"Put the files in {data_dir} yourself and point {DATA_DIR_ENV} there."
        return failed(f"{PROG}: {err}. {hint}", 1)
    except (ConfigError, OSError) as err:
        return failed(f"{PROG}: {err}", 1)
    print(f"{PROG}: {', '.join(args.only)} ready in {data_dir}; fetched {len(fetched)} of them")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
