"""Training corpora: plain-text sentences, SimCSE's NLI CSV, and defaults built from SentEval's SNLI.

Every reader checks its input up front and names the file and line of the first problem.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from sparsecse.errors import ConfigError

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

    def __init__(self, path: str | Path, key: str = "train_file"):
        self.path = require_file(path, key)
        offsets, self.empty_lines = [], 0
        with open(self.path, "rb") as f:
            offset = 0
            for lineno, raw in enumerate(f, start=1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise ConfigError(key, f"{self.path}:{lineno}: not valid UTF-8") from None
                if text.strip():
                    offsets.append(offset)
                else:
                    self.empty_lines += 1
                offset += len(raw)
        if not offsets:
            raise ConfigError(key, f"{self.path} has no sentences (empty corpus)")
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self._handle = None

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, index: int) -> str:
        if self._handle is None:  # opened per worker process, after fork
            self._handle = open(self.path, "rb")
        self._handle.seek(int(self.offsets[index]))
        return self._handle.readline().decode("utf-8").strip()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handle": None}


def read_nli_csv(path: str | Path, key: str = "train_file") -> list[tuple[str, ...]]:
    """SimCSE's supervised format: a header `sent0,sent1[,hard_neg]`, then one example a row."""
    path = require_file(path, key)
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(header[:2]) != NLI_COLUMNS[:2] or len(header) > 3:
            raise ConfigError(key, f"{path}:1: expected the header sent0,sent1[,hard_neg], got {header}")
        width = len(header)
        rows = []
        for row in reader:
            if len(row) != width or not all(cell.strip() for cell in row):
                raise ConfigError(
                    key, f"{path}:{reader.line_num}: expected {width} non-empty fields, got {row}"
                )
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


def load_corpus(train_file: str, data_dir: str | Path) -> Sequence:
    """A training corpus by name (`snli_sentences`, `snli_triplets`) or by path (.txt, .csv)."""
    if train_file in EMBEDDED:
        return EMBEDDED[train_file](data_dir)
    if str(train_file).endswith(".csv"):
        return read_nli_csv(train_file)
    return TextLines(train_file)
