"""Files and folders written whole or not at all. A full disk or a read-only folder stops the program
with one line naming the path and the reason, the half-written copy is removed, and what was there
before stays as it was."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sparsecse.core.errors import OutputWriteError

# safetensors' and torch's writers report an OS error inside their own exception's message
_OS_ERROR_IN_MESSAGE = re.compile(r"os error (\d+)", re.IGNORECASE)


def write_failure(err: BaseException) -> str | None:
    """Why a write failed, when the cause is the file system ("No space left on device"): from an
    OSError in the exception's chain (torch.save into a file object keeps it there), or the OS error
    number in its message (safetensors). None for any other error, which is a bug to see whole."""
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, OSError):
            return cause.strerror or str(cause)
        found = _OS_ERROR_IN_MESSAGE.search(str(cause))
        if found:
            return os.strerror(int(found.group(1)))
        cause = cause.__cause__ or cause.__context__
    return None


def temporary_beside(path: Path, kind: str = "tmp") -> Path:
    """A hidden name in the same folder (so that a rename onto `path` is atomic), unique to the process."""
    return path.with_name(f".{path.name}.{kind}{os.getpid()}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def written_whole(target: Path) -> Iterator[Path]:
    """Write a file or folder at the temporary path this yields; on success it replaces `target` in
    one rename (an earlier folder there is removed after the swap). On any failure the temporary copy
    is removed and `target` is untouched; a file-system failure becomes an OutputWriteError naming
    `target`."""
    target = Path(target)
    temporary = temporary_beside(target)
    _remove(temporary)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        yield temporary
        if target.is_dir() and not target.is_symlink():
            old = temporary_beside(target, "old")
            os.replace(target, old)
            os.replace(temporary, target)
            _remove(old)
        else:
            os.replace(temporary, target)
    except BaseException as err:
        _remove(temporary)
        reason = write_failure(err)
        if reason is None:
            raise
        kept = f"{target} is as it was" if target.exists() else f"nothing was written to {target}"
        raise OutputWriteError(target, reason, kept) from None


def write_text(path: Path, text: str) -> Path:
    """`text` into `path`, whole or not at all."""
    with written_whole(Path(path)) as temporary:
        with open(temporary, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)
