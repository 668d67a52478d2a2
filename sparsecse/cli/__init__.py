"""The command-line tools (`sparsecse-eval`, `sparsecse-prune`, `sparsecse-report`) and what every
entry point shares. They live inside the package: top-level modules named `evaluate`, `prune` or
`report` would collide with other packages in users' environments (Hugging Face's `evaluate`)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sparsecse.errors import ConfigError, RunStopped

# the checkout the package is installed from in editable mode, whose conf/ Hydra reads
REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = str(REPO_ROOT / "conf")
TOOLS_CONFIG_DIR = str(REPO_ROOT / "conf" / "tools")


@contextmanager
def exit_on_config_error(program: str) -> Iterator[None]:
    """A ConfigError becomes its one line on stderr and exit status 2, a RunStopped (divergence,
    unwritable checkpoint, preemption) its line and its exit status, without a traceback."""
    try:
        yield
    except ConfigError as err:
        print(f"{program}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except RunStopped as err:
        print(f"{program}: {err}", file=sys.stderr)
        raise SystemExit(err.exit_code) from None
