"""Line-by-line reading of corpus files that reports each bad line by file and line number.

A bad line is one that is not valid UTF-8 or is longer than `max_line_length` characters (a corrupted
or binary file without newlines); `on_bad_line` says whether it stops the reader or is skipped and counted.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

from sparsecse.core.errors import ConfigError
from sparsecse.core.validation import check_value

ON_BAD_LINE = ("fail", "skip")
OnBadLine = Literal[ON_BAD_LINE]
MAX_LINE_LENGTH = 10_000  # characters
_CHUNK = 1 << 20  # bytes read at a time from the rest of an over-long line


def check_on_bad_line(value: str) -> str:
    check_value("on_bad_line", value, OnBadLine)
    return value


@dataclass
class LineReport:
    """The lines a reader left out of `path`: empty ones, and bad ones with the first few `file:line: why`."""

    path: Path
    key: str = "train_file"
    on_bad_line: str = "fail"
    empty: int = 0
    bad: int = 0
    first_bad: list[str] = field(default_factory=list)
    keep: int = 3

    def __post_init__(self) -> None:
        check_on_bad_line(self.on_bad_line)

    def bad_line(self, lineno: int, why: str) -> None:
        """A ConfigError under `fail`; counted under `skip`."""
        where = f"{self.path}:{lineno}: {why}"
        if self.on_bad_line == "fail":
            raise ConfigError(self.key, where)
        self.bad += 1
        if len(self.first_bad) < self.keep:
            self.first_bad.append(where)

    def bad_summary(self) -> str:
        """One line on the bad lines skipped, or "" if none were."""
        if not self.bad:
            return ""
        return f"{self.key}: skipped {self.bad} bad lines of {self.path} (first: {self.first_bad[0]})"

    def empty_summary(self) -> str:
        """One line on the empty lines skipped, or "" if none were."""
        return f"{self.key}: skipped {self.empty} empty lines of {self.path}" if self.empty else ""


class BadLine(Exception):
    def __init__(self, lineno: int, why: str):
        super().__init__(f"line {lineno}: {why}")
        self.lineno, self.why = lineno, why


def _rest_of_line(f: BinaryIO, head: bytes) -> tuple[int, int]:
    """Read a long line to its end in chunks: (its size in bytes, its characters, or -1 if not UTF-8)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    size, chars, chunk = 0, 0, head
    while True:
        size += len(chunk)
        end = not chunk or chunk.endswith(b"\n")
        if chars >= 0:
            try:
                chars += len(decoder.decode(chunk.rstrip(b"\r\n") if end else chunk, final=end))
            except UnicodeDecodeError:
                chars = -1
        if end:
            return size, chars
        chunk = f.readline(_CHUNK)


class CheckedLines:
    """The lines of a binary file, decoded; a bad line raises BadLine, after which iteration goes on.

    `lineno` and `start` (the byte offset) are those of the line last read. No more than
    4 * max_chars + 2 bytes of a line are held at once (UTF-8 spends at most 4 bytes a character).
    """

    def __init__(self, f: BinaryIO, max_chars: int = MAX_LINE_LENGTH):
        self.f, self.max_chars, self.limit = f, max_chars, 4 * max_chars + 2
        self.lineno = self.start = self.end = 0

    def __iter__(self) -> CheckedLines:
        return self

    def __next__(self) -> str:
        raw = self.f.readline(self.limit)
        if not raw:
            raise StopIteration
        self.lineno += 1
        self.start = self.end
        self.end += len(raw)
        if len(raw) == self.limit and not raw.endswith(b"\n"):  # certainly over max_chars
            size, chars = _rest_of_line(self.f, raw)
            self.end = self.start + size
            raise self._bad(chars)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self._bad(-1) from None
        if len(text) > self.max_chars and len(text.rstrip("\r\n")) > self.max_chars:
            raise self._bad(len(text.rstrip("\r\n")))
        return text

    def _bad(self, chars: int) -> BadLine:
        if chars < 0:
            return BadLine(self.lineno, "not valid UTF-8")
        return BadLine(self.lineno, f"line of {chars} characters exceeds max_line_length={self.max_chars}")
