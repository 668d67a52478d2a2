"""Training corpora: plain-text sentences, SimCSE's NLI CSV, and defaults built from SentEval's SNLI.

Every reader checks its input up front and names the file and line of each problem. A bad line (not
UTF-8, longer than `max_line_length`, a malformed CSV row) stops the reader under `on_bad_line="fail"`
and is skipped and counted under `on_bad_line="skip"`; empty lines are always skipped and counted.
"""

from __future__ import annotations

import csv
import reprlib
from array import array
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from sparsecse.core.errors import ConfigError
from sparsecse.core.validation import PositiveInt, check_value
from sparsecse.data.checked_lines import MAX_LINE_LENGTH, BadLine, CheckedLines, LineReport

NLI_COLUMNS = ("sent0", "sent1", "hard_neg")  # SimCSE's nli_for_simcse.csv header


def require_file(path: str | Path, key: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(key, f"no such file {path}")
    return path


class TextLines(Dataset):
    """The non-empty lines of a text file, one sentence each, read lazily by byte offset.

    Only the offsets stay in memory (8 bytes a line), so a 1M-line corpus costs ~8 MB.
    """

    def __init__(
        self,
        path: str | Path,
        key: str = "train_file",
        on_bad_line: str = "fail",
        max_line_length: int = MAX_LINE_LENGTH,
    ):
        self.path = require_file(path, key)
        self.report = LineReport(self.path, key, on_bad_line)
        check_value("max_line_length", max_line_length, PositiveInt)
        with open(self.path, "rb") as f:
            offsets = self._index(CheckedLines(f, max_line_length))
        if not offsets:
            raise ConfigError(key, f"{self.path} has no sentences (empty corpus)")
        self.offsets = np.frombuffer(offsets, dtype=np.int64)
        self._handle = None

    def _index(self, lines: CheckedLines) -> array:
        """The byte offsets of the non-empty lines, 8 bytes each (no Python int is kept)."""
        offsets = array("q")
        while True:
            try:
                for text in lines:
                    if text.strip():
                        offsets.append(lines.start)
                    else:
                        self.report.empty += 1
                return offsets
            except BadLine as bad:
                self.report.bad_line(bad.lineno, bad.why)

    @property
    def empty_lines(self) -> int:
        return self.report.empty

    @property
    def bad_lines(self) -> int:
        return self.report.bad

    def __len__(self) -> int:
        return len(self.offsets)

    def byte_lengths(self) -> np.ndarray:
        """(N,) bytes from each line's start to the next one's: its length, plus any empty lines after it."""
        return np.diff(self.offsets, append=self.path.stat().st_size)

    def __getitem__(self, index: int) -> str:
        if self._handle is None:  # opened per worker process, after fork
            self._handle = open(self.path, "rb")
        self._handle.seek(int(self.offsets[index]))
        return self._handle.readline().decode("utf-8").strip()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handle": None}


class Examples(list):
    """A list of examples that carries the LineReport of the file it was read from."""

    def __init__(self, report: LineReport):
        super().__init__()
        self.report = report


def _read_header(reader: Iterator[list[str]], path: Path, key: str) -> int:
    """The number of columns the header announces."""
    try:
        header = next(reader, None)
    except (BadLine, csv.Error) as err:
        got = f"a bad line ({getattr(err, 'why', err)})"
    else:
        if header is not None and tuple(header[:2]) == NLI_COLUMNS[:2] and len(header) <= 3:
            return len(header)
        got = reprlib.repr(header)
    raise ConfigError(key, f"{path}:1: expected the header sent0,sent1[,hard_neg], got {got}")


def _csv_rows(
    reader: Iterator[list[str]], lines: CheckedLines, report: LineReport
) -> Iterator[tuple[int, list[str]]]:
    """(first line number, fields) of each non-empty row; bad lines and csv errors go to `report`."""
    while True:
        start = lines.lineno + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except BadLine as bad:
            report.bad_line(bad.lineno, bad.why)
            continue
        except csv.Error as err:
            report.bad_line(lines.lineno, str(err))
            continue
        if not row or (len(row) == 1 and not row[0].strip()):
            report.empty += 1
        else:
            yield start, row


def _row_problem(row: list[str], width: int, max_chars: int) -> str:
    if len(row) != width or not all(cell.strip() for cell in row):
        return f"expected {width} non-empty fields, got {reprlib.repr(row)}"
    longest = max(len(cell) for cell in row)
    return f"field of {longest} characters exceeds max_line_length={max_chars}" if longest > max_chars else ""


def read_nli_csv(
    path: str | Path,
    key: str = "train_file",
    on_bad_line: str = "fail",
    max_line_length: int = MAX_LINE_LENGTH,
) -> Examples:
    """SimCSE's supervised format: a header `sent0,sent1[,hard_neg]`, then one example a row."""
    path = require_file(path, key)
    rows = Examples(LineReport(path, key, on_bad_line))
    check_value("max_line_length", max_line_length, PositiveInt)
    with open(path, "rb") as f:
        lines = CheckedLines(f, max_line_length)
        reader = csv.reader(lines)
        width = _read_header(reader, path, key)
        for lineno, row in _csv_rows(reader, lines, rows.report):
            problem = _row_problem(row, width, max_line_length)
            if problem:
                rows.report.bad_line(lineno, problem)
            else:
                rows.append(tuple(cell.strip() for cell in row))
    if not rows:
        raise ConfigError(key, f"{path} has no examples (empty corpus)")
    return rows


def _read_lines(path: Path) -> list[str]:
    return [line.strip() for line in require_file(path, "data_dir").read_text("utf-8").splitlines()]


def _snli_splits(data_dir: Path) -> list[tuple[str, str, str]]:
    """(premise, hypothesis, label) rows of SentEval's SNLI dev and test files."""
    rows = []
    for split in ("dev", "test"):
        columns = [_read_lines(data_dir / "SNLI" / f"{name}.{split}") for name in ("s1", "s2", "labels")]
        if len({len(c) for c in columns}) != 1:
            raise ConfigError("data_dir", f"{data_dir / 'SNLI'}: s1/s2/labels.{split} differ in length")
        rows.extend(zip(*columns))
    return rows


def snli_sentences(data_dir: str | Path) -> list[str]:
    """The embedded unsupervised default: unique sentences of SNLI dev+test, first-seen order."""
    rows = _snli_splits(Path(data_dir))
    return list(dict.fromkeys(s for premise, hypothesis, _ in rows for s in (premise, hypothesis)))


def snli_triplets(data_dir: str | Path) -> list[tuple[str, str, str]]:
    """The embedded supervised default: (premise, entailment, contradiction), SimCSE's NLI form.

    A premise with several entailed and contradicting hypotheses yields them pairwise, in order.
    """
    by_premise: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for premise, hypothesis, label in _snli_splits(Path(data_dir)):
        by_premise[premise][label].append(hypothesis)
    return [
        (premise, entailed, contradicting)
        for premise, labels in by_premise.items()
        for entailed, contradicting in zip(labels["entailment"], labels["contradiction"])
    ]


EMBEDDED = {"snli_sentences": snli_sentences, "snli_triplets": snli_triplets}


def load_corpus(
    train_file: str,
    data_dir: str | Path,
    on_bad_line: str = "fail",
    max_line_length: int = MAX_LINE_LENGTH,
) -> Sequence:
    """A training corpus by name (`snli_sentences`, `snli_triplets`) or by path (.txt, .csv).

    `on_bad_line` and `max_line_length` apply to files; the embedded corpora ignore them.
    """
    if train_file in EMBEDDED:
        return EMBEDDED[train_file](data_dir)
    if str(train_file).endswith(".csv"):
        return read_nli_csv(train_file, on_bad_line=on_bad_line, max_line_length=max_line_length)
    return TextLines(train_file, on_bad_line=on_bad_line, max_line_length=max_line_length)


def corpus_sentences(corpus: Iterable[str | tuple[str, ...]]) -> list[str]:
    """The distinct sentences of a training corpus in first-seen order; every column of a tuple."""
    seen: dict[str, None] = {}
    for example in corpus:
        for sentence in (example,) if isinstance(example, str) else example:
            seen.setdefault(sentence, None)
    return list(seen)
