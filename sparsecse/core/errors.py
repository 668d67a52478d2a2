from __future__ import annotations

from collections.abc import Sequence


class ConfigError(ValueError):
    """A bad setting or input file, reported in one line that names the culprit.

    `key` is the argument or config key at fault; the Hydra entry points prefix it with the
    config group (`data.batch_size`) so the message names what the user typed.
    """

    def __init__(self, key: str, message: str):
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}")

    def under(self, group: str) -> ConfigError:
        """The same error with its key placed under a config group."""
        return ConfigError(f"{group}.{self.key}", self.message)


class RunStopped(RuntimeError):
    """A run stopped for a reason one line explains (the entry points print it without a traceback)."""

    exit_code = 1


class TrainingDiverged(RunStopped):
    """The loss became NaN or infinite; raised before the update, so no checkpoint holds the fault."""


class OutputWriteError(RunStopped):
    """A file or folder could not be written (disk full, read-only folder); nothing half-written is
    left, and what was there before is intact (`kept` says so)."""

    def __init__(self, path: object, reason: str, kept: str, what: str = ""):
        self.path, self.reason = path, reason
        super().__init__(f"cannot write {what}{path}: {reason}; {kept}")


class CheckpointWriteError(OutputWriteError):
    """A checkpoint could not be written; the previous one is intact."""


class Preempted(RunStopped):
    """Stopped by a signal (SLURM preemption or time limit) after saving `last.ckpt`."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum  # the shell's convention for "killed by signal N"


def first_few(items: Sequence[str], shown: int, separator: str = ", ") -> str:
    """The first `shown` items, and how many more there are: a message names a few culprits, not all."""
    more = f", and {len(items) - shown} more" if len(items) > shown else ""
    return separator.join(items[:shown]) + more
