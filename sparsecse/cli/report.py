"""`sparsecse-report SWEEP_DIR`: tables and figures of a Hydra multirun, one row per setting."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from sparsecse.cli import exit_on_config_error
from sparsecse.report import format_report, load_sweep, write_report

PROGRAM = "sparsecse-report"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.split(":", 1)[1].strip())
    parser.add_argument("sweep_dir", metavar="SWEEP_DIR", type=Path, help="a Hydra multirun directory")
    output_help = "where to write report.md, report.csv and the PNGs (default: SWEEP_DIR)"
    parser.add_argument("--output", metavar="DIR", type=Path, help=output_help)
    seed_help = "the override that tells repeats of one setting apart (default: seed)"
    parser.add_argument("--seed-key", default="seed", help=seed_help)
    return parser.parse_args(argv)


def report(sweep_dir: Path, output: Path | None = None, seed_key: str = "seed") -> list[Path]:
    """Write the report files, print the tables, the failed runs and the paths written; returns the paths."""
    sweep = load_sweep(sweep_dir, seed_key)
    written, notes = write_report(sweep, output)
    print(format_report(sweep))
    for line in [*notes, *(f"wrote {path}" for path in written)]:
        print(line)
    return written


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    with exit_on_config_error(PROGRAM):  # one line and exit status 2, as the other entry points do
        report(args.sweep_dir, args.output, args.seed_key)


if __name__ == "__main__":
    main()
