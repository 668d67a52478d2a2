"""The lines a run shows its user: printed as they are, and kept with their times in the run folder's
log (`<run>/train.log`) when the entry point's logging configuration gives the `sparsecse.run`
logger a file (conf/hydra/job_logging/sparsecse.yaml). Progress bars and third-party output stay out
of that file, so that its last line says how the run ended (`sparsecse-report` shows it)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

RUN_LOG = logging.getLogger("sparsecse.run")


def say(line: str, error: bool = False) -> None:
    """One line for the user: on stdout (stderr for an `error`), and into the run's log."""
    print(line, file=sys.stderr if error else sys.stdout, flush=True)
    RUN_LOG.log(logging.ERROR if error else logging.INFO, line)


def failed(line: str, status: int = 1) -> int:
    """Say why a command failed, on stderr; returns its exit status."""
    say(line, error=True)
    return status


@contextmanager
def stage(program: str, name: str, shown: bool = True) -> Iterator[None]:
    """One line when a long stage starts (`program: name ...`) and one with its wall time when it ends."""
    if shown:
        say(f"{program}: {name} ...")
    started = time.perf_counter()
    yield
    if shown:
        say(f"{program}: {name} done in {format_seconds(time.perf_counter() - started)}")


def format_seconds(seconds: float) -> str:
    """`42.0 s`, `8 min 47 s`, `1 h 05 min`."""
    if round(seconds, 1) < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"
