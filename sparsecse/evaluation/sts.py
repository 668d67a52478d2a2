"""STS12-16 ("all" setting), STS-B test and SICK-R test, read and scored exactly as SentEval does.

SentEval (Conneau & Kiela 2018), as SimCSE runs it: sentences are split on white space and joined
with single spaces, scored by the cosine of their embeddings, and compared with the gold scores by
Spearman's rho. For STS12-16 the subsets of a year are pooled into one correlation ("all").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import Tensor

from sparsecse.core.errors import ConfigError

Encode = Callable[[Sequence[str]], Tensor]

# SentEval's subsets per year; STS13 has no SMT (licence), as in SentEval.
STS_YEARS: dict[str, tuple[str, tuple[str, ...]]] = {
    "sts12": (
        "STS12-en-test",
        ("MSRpar", "MSRvid", "SMTeuroparl", "surprise.OnWN", "surprise.SMTnews"),
    ),
    "sts13": ("STS13-en-test", ("FNWN", "headlines", "OnWN")),
    "sts14": (
        "STS14-en-test",
        ("deft-forum", "deft-news", "headlines", "images", "OnWN", "tweet-news"),
    ),
    "sts15": (
        "STS15-en-test",
        ("answers-forums", "answers-students", "belief", "headlines", "images"),
    ),
    "sts16": (
        "STS16-en-test",
        ("answer-answer", "headlines", "plagiarism", "postediting", "question-question"),
    ),
}
STS_TASKS = ("sts12", "sts13", "sts14", "sts15", "sts16", "stsb", "sickr")


@dataclass(frozen=True)
class ScoredPairs:
    """Sentence pairs with gold similarity scores."""

    sent1: list[str]
    sent2: list[str]
    gold: np.ndarray  # (N,)

    def __len__(self) -> int:
        return len(self.gold)

    def __add__(self, other: ScoredPairs) -> ScoredPairs:
        return ScoredPairs(
            self.sent1 + other.sent1,
            self.sent2 + other.sent2,
            np.concatenate([self.gold, other.gold]),
        )


def _normalise(text: str) -> str:
    return " ".join(text.split())  # SentEval's s.split() then the batcher's ' '.join(s)


def _require(path: Path) -> Path:
    if not path.is_file():
        raise ConfigError("data_dir", f"missing SentEval file {path}")
    return path


def _parse_float(value: str, path: Path, lineno: int) -> float:
    try:
        return float(value)
    except ValueError:
        raise ConfigError("data_dir", f"{path}:{lineno}: bad score {value!r}") from None


def read_sts_subset(folder: Path, subset: str) -> ScoredPairs:
    """One STS12-16 subset; pairs with an empty gold line are dropped, as SentEval does."""
    inputs = _require(folder / f"STS.input.{subset}.txt")
    scores = _require(folder / f"STS.gs.{subset}.txt")
    # SentEval reads these with str.splitlines(), which also breaks on \x0b, \x1c, \u2028, ...
    lines = inputs.read_text(encoding="utf-8").splitlines()
    gold_lines = scores.read_text(encoding="utf-8").splitlines()
    if len(lines) != len(gold_lines):
        raise ConfigError("data_dir", f"{inputs} has {len(lines)} lines but {scores} has {len(gold_lines)}")
    sent1, sent2, gold = [], [], []
    for lineno, (line, score) in enumerate(zip(lines, gold_lines), start=1):
        fields = line.split("\t")
        if len(fields) != 2:
            raise ConfigError("data_dir", f"{inputs}:{lineno}: expected 2 tab-separated sentences")
        if score == "":
            continue
        sent1.append(_normalise(fields[0]))
        sent2.append(_normalise(fields[1]))
        gold.append(_parse_float(score, scores, lineno))
    return ScoredPairs(sent1, sent2, np.asarray(gold))


def read_sts_year(data_dir: Path, task: str) -> ScoredPairs:
    folder, subsets = STS_YEARS[task]
    pairs = [read_sts_subset(Path(data_dir) / "STS" / folder, s) for s in subsets]
    return sum(pairs[1:], pairs[0])


def _read_tsv_pairs(path: Path, columns: tuple[int, int, int], skip_header: bool) -> ScoredPairs:
    """Rows of a tab-separated file -> pairs; `columns` are (sentence 1, sentence 2, score)."""
    a, b, s = columns
    sent1, sent2, gold = [], [], []
    with open(_require(path), encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if skip_header and lineno == 1:
                continue
            fields = line.strip().split("\t")
            if len(fields) <= max(columns):
                raise ConfigError("data_dir", f"{path}:{lineno}: expected at least {max(columns) + 1} fields")
            sent1.append(_normalise(fields[a]))
            sent2.append(_normalise(fields[b]))
            gold.append(_parse_float(fields[s], path, lineno))
    return ScoredPairs(sent1, sent2, np.asarray(gold))


def read_stsb(data_dir: Path, split: str = "test") -> ScoredPairs:
    """STS Benchmark: genre, file, year, id, score, sentence 1, sentence 2 [, source...]."""
    return _read_tsv_pairs(Path(data_dir) / "STS" / "STSBenchmark" / f"sts-{split}.csv", (5, 6, 4), False)


def read_sickr(data_dir: Path, split: str = "test") -> ScoredPairs:
    """SICK relatedness: pair_ID, sentence_A, sentence_B, relatedness_score, ... with a header."""
    name = {"train": "SICK_train.txt", "dev": "SICK_trial.txt", "test": "SICK_test_annotated.txt"}[split]
    return _read_tsv_pairs(Path(data_dir) / "SICK" / name, (1, 2, 3), True)


def read_sts_task(data_dir: Path, task: str) -> ScoredPairs:
    if task == "stsb":
        return read_stsb(data_dir, "test")
    if task == "sickr":
        return read_sickr(data_dir, "test")
    if task in STS_YEARS:
        return read_sts_year(data_dir, task)
    raise ConfigError("tasks", f"unknown STS task {task!r}; expected one of {', '.join(STS_TASKS)}")


def cosine_scores(emb1: Tensor, emb2: Tensor) -> np.ndarray:
    """(N, H), (N, H) -> (N,) cosine similarities; a zero vector scores 0 (SentEval's nan_to_num)."""
    emb1, emb2 = emb1.double(), emb2.double()
    cos = (emb1 * emb2).sum(-1) / (emb1.norm(dim=-1) * emb2.norm(dim=-1))
    return torch.nan_to_num(cos, nan=0.0).numpy()


def spearman_x100(cosines: np.ndarray, gold: np.ndarray) -> float:
    """SentEval's STS score: Spearman's rank correlation (ties averaged) x 100."""
    return float(spearmanr(cosines, gold)[0] * 100)


def encode_unique(encode: Encode, texts: Sequence[str]) -> dict[str, Tensor]:
    """Encode each distinct text once; SentEval encodes repeats again, to the same vector."""
    unique = list(dict.fromkeys(texts))
    vectors = encode(unique)
    return dict(zip(unique, vectors))


def caching_encodings(encode: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """`encode` that keeps every vector it made, so that a text another task asks for again is not
    encoded again: the STS tasks encode every STS-B test sentence alignment/uniformity needs."""
    vectors: dict[str, Tensor] = {}

    def encode_new(texts: Sequence[str], **kwargs) -> Tensor:
        if not texts:
            return encode(texts, **kwargs)
        new = [text for text in dict.fromkeys(texts) if text not in vectors]
        if new:
            vectors.update(zip(new, encode(new, **kwargs)))
        return torch.stack([vectors[text] for text in texts])  # (N, H)

    return encode_new


def sts_similarities(
    encode: Encode, data_dir: str | Path, tasks: Sequence[str] = STS_TASKS
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per task, the encoder's cosine similarity of each test pair and the gold scores, (N,) each:
    what SentEval's Spearman is computed on, kept for paired comparisons of encoders (bootstrap.py)."""
    data = {task: read_sts_task(Path(data_dir), task) for task in tasks}
    every_text = [t for pairs in data.values() for t in pairs.sent1 + pairs.sent2]
    table = encode_unique(encode, every_text)

    def embed(texts: list[str]) -> Tensor:
        return torch.stack([table[t] for t in texts])

    return {task: (cosine_scores(embed(p.sent1), embed(p.sent2)), p.gold) for task, p in data.items()}


def evaluate_sts(encode: Encode, data_dir: str | Path, tasks: Sequence[str] = STS_TASKS) -> dict[str, float]:
    """Spearman x 100 per task and their average (`sts_avg`), SentEval's test-set protocol."""
    similarities = sts_similarities(encode, data_dir, tasks)
    results = {task: spearman_x100(cosines, gold) for task, (cosines, gold) in similarities.items()}
    results["sts_avg"] = float(np.mean(list(results.values())))
    return results
