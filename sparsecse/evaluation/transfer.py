"""SentEval's transfer tasks (MR, CR, SUBJ, MPQA, SST-2, TREC, MRPC), read and scored as SimCSE runs them.

Frozen sentence embeddings feed SentEval's logistic regression (classifier.py) under SentEval's
protocols, with SimCSE's "test" (or "fasttest") classifier settings and `usepytorch=True`:
  - MR, CR, SUBJ, MPQA: k-fold cross-validation; on each outer train split an inner k-fold over the
    L2 weights picks one, then a fit on that split (5% held out for early stopping) is tested;
  - TREC, MRPC: k-fold over the L2 weights on the train set, then a fit on all of it (5% held out)
    is tested on the test set; MRPC's features are [|a - b|, a * b];
  - SST-2: a fit per L2 weight on train, early-stopped on dev; the best on dev is tested.
Each split is sorted by (tokens, label) as SentEval sorts it before encoding, so that the rows, and
with them the stratified folds, come out as SentEval's.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold
from torch import Tensor
from tqdm.auto import tqdm

from sparsecse.core.errors import ConfigError
from sparsecse.core.validation import check_value
from sparsecse.evaluation.classifier import ClassifierConfig, Fit, FitsDone, fit_many, no_progress
from sparsecse.evaluation.names import display_name
from sparsecse.evaluation.sts import Encode, _require

TRANSFER_TASKS = ("mr", "cr", "subj", "mpqa", "sst2", "trec", "mrpc")
# folder, file of label 1, file of label 0 (SUBJ: objective is 1, as in SentEval)
BINARY_FILES = {
    "mr": ("MR", "rt-polarity.pos", "rt-polarity.neg"),
    "cr": ("CR", "custrev.pos", "custrev.neg"),
    "subj": ("SUBJ", "subj.objective", "subj.subjective"),
    "mpqa": ("MPQA", "mpqa.pos", "mpqa.neg"),
}
TREC_LABELS = ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM")  # the coarse classes, in SentEval's order
REGS = tuple(10**t for t in range(-5, -1))  # SentEval's L2 grid when usepytorch=True
INNER_KFOLD_SEED = 1111  # SentEval's InnerKFoldClassifier fixes both its splits to 1111, whatever the seed


@dataclass(frozen=True)
class Preset:
    kfold: int
    classifier: ClassifierConfig


# SimCSE's evaluation.py, --mode test and --mode fasttest
PRESETS = {
    "test": Preset(10, ClassifierConfig("adam", batch_size=64, tenacity=5, epoch_size=4)),
    "fasttest": Preset(5, ClassifierConfig("rmsprop", batch_size=128, tenacity=3, epoch_size=2)),
}
TransferPreset = Literal[tuple(PRESETS)]


@dataclass(frozen=True)
class Labelled:
    texts: list[str]
    labels: np.ndarray  # (N,) int


@dataclass(frozen=True)
class LabelledPairs:
    first: list[str]
    second: list[str]
    labels: np.ndarray  # (N,) int


Part = tuple[Tensor, np.ndarray]  # (N, D) float32 features, (N,) labels


@dataclass(frozen=True)
class Accuracy:
    """SentEval's `devacc` and `acc` (x 100, rounded as SentEval rounds them)."""

    dev: float
    test: float


def _sorted(rows: list[tuple[list[str], int]]) -> Labelled:
    rows = sorted(rows, key=lambda row: (len(row[0]), row[1]))  # stable, like SentEval's sort
    return Labelled([" ".join(tokens) for tokens, _ in rows], np.array([label for _, label in rows]))


def _label(value: str, allowed: Sequence[str], path: Path, lineno: int) -> int:
    if value not in allowed:
        expected = ", ".join(allowed)
        raise ConfigError("data_dir", f"{path}:{lineno}: bad label {value!r}; expected one of {expected}")
    return allowed.index(value)


def read_binary(data_dir: Path, task: str) -> Labelled:
    """MR, CR, SUBJ, MPQA: one sentence per line, latin-1; an empty line is an empty sentence."""
    folder, positive, negative = BINARY_FILES[task]
    rows = []
    for name, label in ((positive, 1), (negative, 0)):
        # SentEval reads these with str.splitlines(), which also breaks on \x0b, \x1c, \x85, ...
        text = _require(Path(data_dir) / folder / name).read_text(encoding="latin-1")
        rows += [(line.split(), label) for line in text.splitlines()]
    return _sorted(rows)


def _fields(path: Path, encoding: str, sep: str, count: int, maxsplit: int = -1):
    """(line number, fields) per line, each line stripped and split; too few fields name the line."""
    with open(_require(path), encoding=encoding) as f:
        for lineno, line in enumerate(f, start=1):
            fields = line.strip().split(sep, maxsplit)
            if len(fields) < count:
                raise ConfigError("data_dir", f"{path}:{lineno}: expected {count} {sep!r}-separated fields")
            yield lineno, fields


def read_sst2(data_dir: Path, split: str) -> Labelled:
    """SST-2 (`train`, `dev`, `test`): `phrase<TAB>label` per line, utf-8."""
    path = Path(data_dir) / "SST" / "binary" / f"sentiment-{split}"
    rows = [(f[0].split(), _label(f[1], ("0", "1"), path, n)) for n, f in _fields(path, "utf-8", "\t", 2)]
    return _sorted(rows)


def read_trec(data_dir: Path, split: str) -> Labelled:
    """TREC (`train`, `test`): `COARSE:fine question` per line, latin-1; the fine label is dropped."""
    path = Path(data_dir) / "TREC" / {"train": "train_5500.label", "test": "TREC_10.label"}[split]
    rows = []
    for lineno, (coarse, rest) in _fields(path, "latin-1", ":", 2, maxsplit=1):
        question = rest.split(" ", 1)
        if len(question) < 2:
            raise ConfigError("data_dir", f"{path}:{lineno}: expected 'COARSE:fine question'")
        rows.append((question[1].split(), _label(coarse, TREC_LABELS, path, lineno)))
    return _sorted(rows)


def read_mrpc(data_dir: Path, split: str) -> LabelledPairs:
    """MRPC (`train`, `test`): a header, then `label, id, id, sentence 1, sentence 2` tab-separated, utf-8."""
    path = Path(data_dir) / "MRPC" / f"msr_paraphrase_{split}.txt"
    rows = [
        (f[3].split(), f[4].split(), _label(f[0], ("0", "1"), path, n))
        for n, f in _fields(path, "utf-8", "\t", 5)
        if n > 1
    ]
    rows.sort(key=lambda row: (len(row[0]), len(row[1]), row[2]))
    first, second, labels = zip(*rows) if rows else ((), (), ())
    return LabelledPairs([" ".join(t) for t in first], [" ".join(t) for t in second], np.array(labels))


def _folds(labels: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return list(skf.split(np.zeros(len(labels)), labels))


def inner_kfold(
    features: Tensor, labels: np.ndarray, n_classes: int, preset: Preset, done: FitsDone = no_progress
) -> Accuracy:
    """SentEval's InnerKFoldClassifier (MR, CR, SUBJ, MPQA)."""
    k, config = preset.kfold, preset.classifier
    outer = _folds(labels, k, INNER_KFOLD_SEED)
    fits = []
    for train, _ in outer:
        inner = _folds(labels[train], k, INNER_KFOLD_SEED)
        fits += [Fit(train[a], reg, dev=train[b]) for reg in REGS for a, b in inner]
    dev = np.array([s.dev for s in fit_many(features, labels, n_classes, fits, config, done)])
    dev = dev.reshape(k, len(REGS), k)  # (outer fold, L2 weight, inner fold)
    reg_scores = [[round(100 * np.mean(accs), 2) for accs in fold] for fold in dev]
    finals = [Fit(train, REGS[int(np.argmax(s))], test=test) for (train, test), s in zip(outer, reg_scores)]
    tests = [round(100 * s.test, 2) for s in fit_many(features, labels, n_classes, finals, config, done)]
    return Accuracy(float(round(np.mean([max(s) for s in reg_scores]), 2)), float(round(np.mean(tests), 2)))


def kfold(train: Part, test: Part, n_classes: int, preset: Preset, done: FitsDone = no_progress) -> Accuracy:
    """SentEval's KFoldClassifier (TREC, MRPC)."""
    (x_train, y_train), (x_test, y_test) = train, test
    features, labels = torch.cat([x_train, x_test]), np.concatenate([y_train, y_test])
    k, config = preset.kfold, preset.classifier
    fits = [Fit(a, reg, dev=b) for reg in REGS for a, b in _folds(y_train, k, config.seed)]
    dev = np.array([s.dev for s in fit_many(features, labels, n_classes, fits, config, done)])
    reg_scores = [round(100 * np.mean(accs), 2) for accs in dev.reshape(len(REGS), k)]  # per L2 weight
    rows = np.arange(len(labels))
    final = Fit(rows[: len(y_train)], REGS[int(np.argmax(reg_scores))], test=rows[len(y_train) :])
    (score,) = fit_many(features, labels, n_classes, [final], config, done)
    return Accuracy(float(max(reg_scores)), round(100 * score.test, 2))


def split(
    train: Part, dev: Part, test: Part, n_classes: int, preset: Preset, done: FitsDone = no_progress
) -> Accuracy:
    """SentEval's SplitClassifier (SST-2)."""
    features, labels = torch.cat([train[0], dev[0], test[0]]), np.concatenate([train[1], dev[1], test[1]])
    rows = np.split(np.arange(len(labels)), np.cumsum([len(train[1]), len(dev[1])]))
    fits = [Fit(rows[0], reg, dev=rows[1], test=rows[2]) for reg in REGS]
    scores = fit_many(features, labels, n_classes, fits, preset.classifier, done)
    dev_scores = [round(100 * s.dev, 2) for s in scores]
    # SentEval refits the chosen L2 weight from scratch; with the same seeds that is the same fit
    best = int(np.argmax(dev_scores))
    return Accuracy(dev_scores[best], round(100 * scores[best].test, 2))


def _embed(encode: Encode, groups: Sequence[Sequence[str]]) -> list[Tensor]:
    """Lists of texts -> one (N_i, D) float32 tensor each; every distinct text is encoded once."""
    texts = [t for group in groups for t in group]
    unique = {t: i for i, t in enumerate(dict.fromkeys(texts))}
    vectors = encode(list(unique)).float()  # (U, D)
    rows = vectors[torch.tensor([unique[t] for t in texts], dtype=torch.long)]
    return list(rows.split([len(g) for g in groups]))


def read_task(data_dir: Path, task: str):
    """A task's data: a Labelled (binary tasks) or a tuple of splits."""
    if task in BINARY_FILES:
        return read_binary(data_dir, task)
    if task == "sst2":
        return tuple(read_sst2(data_dir, s) for s in ("train", "dev", "test"))
    if task == "trec":
        return read_trec(data_dir, "train"), read_trec(data_dir, "test")
    if task == "mrpc":
        return read_mrpc(data_dir, "train"), read_mrpc(data_dir, "test")
    raise ConfigError("tasks", f"unknown transfer task {task!r}; expected one of {', '.join(TRANSFER_TASKS)}")


def _pair_features(a: Tensor, b: Tensor) -> Tensor:
    """MRPC's features, as SentEval builds them: (N, D), (N, D) -> (N, 2D) = [|a - b|, a * b]."""
    return torch.cat([(a - b).abs(), a * b], 1)


def score_task(encode: Encode, task: str, data, preset: Preset, done: FitsDone = no_progress) -> Accuracy:
    """One task's SentEval accuracies; `data` as `read_task` returns it."""
    if task in BINARY_FILES:
        (features,) = _embed(encode, [data.texts])
        return inner_kfold(features, data.labels, 2, preset, done)
    if task == "mrpc":
        train, test = data
        a_train, b_train, a_test, b_test = _embed(
            encode, [train.first, train.second, test.first, test.second]
        )
        train_part = (_pair_features(a_train, b_train), train.labels)
        return kfold(train_part, (_pair_features(a_test, b_test), test.labels), 2, preset, done)
    parts = list(zip(_embed(encode, [d.texts for d in data]), [d.labels for d in data]))
    if task == "sst2":
        return split(*parts, 2, preset, done)
    return kfold(*parts, len(TREC_LABELS), preset, done)


def fit_count(task: str, preset: Preset) -> int:
    """How many classifiers a task trains: the progress bar's total."""
    k = preset.kfold
    if task in BINARY_FILES:
        return (
            k * len(REGS) * k + k
        )  # inner folds x L2 weights x outer folds, then one final fit per outer fold
    if task == "sst2":
        return len(REGS)
    return len(REGS) * k + 1  # TREC, MRPC: folds x L2 weights, then the final fit


@contextmanager
def fits_progress(label: str, total: int, show: bool) -> Iterator[FitsDone]:
    """A `<label> done/total` bar, advanced by the classifiers as their fits finish."""
    with tqdm(total=total, desc=label, disable=not show, leave=False) as bar:
        yield bar.update


def check_preset(preset: str) -> None:
    check_value("transfer_preset", preset, TransferPreset)


def evaluate_transfer(
    encode: Encode,
    data_dir: str | Path,
    tasks: Sequence[str] = TRANSFER_TASKS,
    preset: str = "test",
    show_progress: bool = False,
) -> dict[str, float]:
    """Test accuracy x 100 per task (SentEval's `acc`, which SimCSE reports) and their mean `transfer_avg`.
    `show_progress`: `MR encode` and `MR fits 120/130` bars (`encode` then takes `show_progress=`)."""
    check_preset(preset)
    data = {task: read_task(Path(data_dir), task) for task in tasks}  # every file checked before encoding
    results = {}
    for task, d in data.items():
        name = display_name(task)
        labelled = partial(encode, show_progress=f"{name} encode") if show_progress else encode
        with fits_progress(f"{name} fits", fit_count(task, PRESETS[preset]), show_progress) as done:
            results[task] = score_task(labelled, task, d, PRESETS[preset], done).test
    if results:
        results["transfer_avg"] = float(np.mean(list(results.values())))
    return results
