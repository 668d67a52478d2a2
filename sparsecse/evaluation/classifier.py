"""SentEval's PyTorch logistic regression (its `MLP` with nhid=0), many independent fits at once.

SentEval fits one `nn.Linear` at a time, and its protocols need hundreds per task (10 outer x 4 L2
weights x 10 inner folds for MR). Here many fits are one batched model. Each candidate draws the
same numbers SentEval's classifier would, so the result equals separate SentEval fits up to float
rounding:
  - `np.random.seed(seed)` at construction -> a `RandomState(seed)` per candidate, which first draws
    the validation split (if any), then one permutation of the train rows per pass;
  - `torch.manual_seed(seed)` then `nn.Linear(D, C)` -> the same initial weights for every candidate;
  - `nn.CrossEntropyLoss` averaged over each mini-batch: SentEval sets `loss_fn.size_average = False`
    after construction, which PyTorch >= 0.4 ignores (`reduction` is fixed in `__init__`);
  - Adam or RMSprop with `weight_decay=l2` on the weight and the bias, PyTorch's default settings;
  - `epoch_size` passes per epoch, then dev accuracy; the best model is kept; training stops at the
    first non-improving epoch once `tenacity` non-improving epochs have gone by (the count is never
    reset), or once `max_epoch` is passed.
Candidates with the same train rows draw the same permutations, so they form one stream: its
mini-batch is gathered once and multiplied by all their weights, (S, R, C, D+1) for S streams of R
candidates, the bias being the last column. A candidate that stops keeps training with its stream,
unread, until the whole stream stops.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from sparsecse.core.errors import ConfigError
from sparsecse.core.seeding import forked_rng

OPTIMIZERS = ("adam", "rmsprop")
GROUP_STREAMS = 40  # streams trained together; their gathered batches (S, B, D) stay in cache


@dataclass(frozen=True)
class ClassifierConfig:
    """SentEval's `params['classifier']` with nhid=0; the defaults are those of SentEval's MLP."""

    optim: str = "adam"
    batch_size: int = 64
    tenacity: int = 5
    epoch_size: int = 4
    max_epoch: int = 200
    seed: int = 1111

    def __post_init__(self) -> None:
        if self.optim not in OPTIMIZERS:
            expected = ", ".join(OPTIMIZERS)
            raise ConfigError("optim", f"unknown optimizer {self.optim!r}; expected one of {expected}")


@dataclass(frozen=True)
class Fit:
    """One classifier: the rows of the features it trains on, its L2 weight, its dev and test rows."""

    train: np.ndarray  # (n,) row indices
    l2: float
    dev: np.ndarray | None = None  # None: hold out `validation_split` of `train`, drawn at random
    test: np.ndarray | None = None
    validation_split: float = 0.05


@dataclass(frozen=True)
class Scores:
    """Accuracies (fractions) of the kept model: on the dev rows (its best) and on the test rows."""

    dev: float
    test: float | None


def initial_weights(n_features: int, n_classes: int, seed: int) -> Tensor:
    """SentEval's `torch.manual_seed(seed); nn.Linear(D, C)` -> (C, D+1), bias last; global RNG untouched."""
    with forked_rng(torch.device("cpu")):
        torch.manual_seed(seed)
        linear = nn.Linear(n_features, n_classes)
    return torch.cat([linear.weight, linear.bias[:, None]], 1).detach()


FitsDone = Callable[[int], None]  # told how many fits have just finished (a progress bar)


def no_progress(fits: int) -> None:
    pass


def fit_many(
    features: Tensor,
    labels: np.ndarray,
    n_classes: int,
    fits: list[Fit],
    config: ClassifierConfig,
    done: FitsDone = no_progress,
) -> list[Scores]:
    """Train every fit as SentEval would; (N, D) float32 features, (N,) labels -> one `Scores` per fit."""
    x = torch.cat([features.float(), torch.ones(len(features), 1)], 1)  # (N, D+1): the bias column
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    w0 = initial_weights(features.shape[1], n_classes, config.seed)
    streams: dict[tuple, list[int]] = {}
    for i, fit in enumerate(fits):
        key = (np.asarray(fit.train).tobytes(), fit.dev is None and fit.validation_split)
        streams.setdefault(key, []).append(i)
    groups = list(streams.values())
    scores: list[Scores] = [None] * len(fits)
    with _one_thread():
        for start in range(0, len(groups), GROUP_STREAMS):
            members = groups[start : start + GROUP_STREAMS]
            group = _Group(x, y, w0, [[fits[i] for i in m] for m in members], config)
            for i, score in zip([i for m in members for i in m], group.run()):
                scores[i] = score
            done(sum(map(len, members)))
    return scores


@contextmanager
def _one_thread() -> Iterator[None]:
    """Torch on one thread: each step is a few small ops, which a second OpenMP thread speeds up by
    a third on idle cores but slows down 10-30x when another process is using one of them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _Group:
    """Streams trained side by side; a stream leaves the working tensors once all its candidates stop."""

    def __init__(self, x: Tensor, y: Tensor, w0: Tensor, streams: list[list[Fit]], config: ClassifierConfig):
        self.x, self.y, self.config = x, y, config
        self.fits = [fit for fits in streams for fit in fits]
        self.rngs = [np.random.RandomState(config.seed) for _ in streams]
        self.train, self.dev = [], []
        for fits, rng in zip(streams, self.rngs):
            train, held_out = _split(fits[0], rng)  # the stream's fits share their train rows
            self.train.append(train)
            self.dev += [held_out if fit.dev is None else np.asarray(fit.dev) for fit in fits]
        self.slot = _slots([len(fits) for fits in streams])  # (S, R)
        l2 = torch.tensor([[self.fits[i].l2 if i >= 0 else 0.0 for i in row] for row in self.slot])
        self.weights = w0.expand(*self.slot.shape, *w0.shape).clone()  # (S, R, C, D+1)
        self.optimizer = _Optimizer(config.optim, l2[..., None, None], self.weights.shape)
        self.best = w0.expand(len(self.fits), *w0.shape).clone()  # (M, C, D+1)
        self.best_correct = np.full(len(self.fits), -1)
        self.misses = np.zeros(len(self.fits), dtype=np.int64)
        self.running = self.slot >= 0  # (S, R)

    def run(self) -> list[Scores]:
        epoch = 0
        while len(self.train) and epoch <= self.config.max_epoch:
            for _ in range(self.config.epoch_size):
                self._train_pass()
            epoch += self.config.epoch_size
            self._end_epoch()
        dev = [int(c) / len(d) for c, d in zip(self.best_correct, self.dev)]
        tested = [i for i, fit in enumerate(self.fits) if fit.test is not None]
        test = [None] * len(self.fits)
        if tested:
            correct = _count_correct(self.x, self.y, self.best[tested], [self.fits[i].test for i in tested])
            for i, c in zip(tested, correct):
                test[i] = int(c) / len(self.fits[i].test)
        return [Scores(d, t) for d, t in zip(dev, test)]

    def _end_epoch(self) -> None:
        slots = np.flatnonzero(self.running)  # into the flattened (S, R)
        ids = self.slot.reshape(-1)[slots]
        weights = self.weights.flatten(0, 1)[torch.from_numpy(slots)]  # (L, C, D+1)
        correct = _count_correct(self.x, self.y, weights, [self.dev[i] for i in ids])
        improved = correct > self.best_correct[ids]
        self.best_correct[ids[improved]] = correct[improved]
        self.best[torch.from_numpy(ids[improved])] = weights[torch.from_numpy(np.flatnonzero(improved))]
        stop = ~improved & (self.misses[ids] >= self.config.tenacity)
        self.misses[ids[~improved]] += 1
        self.running.reshape(-1)[slots[stop]] = False
        alive = self.running.any(1)
        if not alive.all():
            keep = torch.from_numpy(np.flatnonzero(alive))
            self.weights = self.weights[keep]
            self.optimizer.keep(keep)
            self.slot, self.running = self.slot[alive], self.running[alive]
            self.rngs = [rng for rng, a in zip(self.rngs, alive) if a]
            self.train = [train for train, a in zip(self.train, alive) if a]

    def _train_pass(self) -> None:
        """One pass over each stream's train rows, in a fresh order, `batch_size` rows at a time."""
        size = self.config.batch_size
        rows, labels, scale, n_steps = _pass_batches(self.train, self.rngs, self.y, size)
        s, r, c, d = self.weights.shape
        target = nn.functional.one_hot(labels, c).transpose(2, 3).unsqueeze(2).float()  # (T, S, 1, C, B)
        scale = scale.view(-1, s, 1, 1, size)  # mean over each batch's real rows; padding weighs 0
        xb = torch.empty(s * size, d)
        for t in range(rows.shape[0]):
            torch.index_select(self.x, 0, rows[t].view(-1), out=xb)
            batch = xb.view(s, size, d)  # (S, B, D+1)
            logits = torch.bmm(self.weights.view(s, r * c, d), batch.transpose(1, 2))  # (S, R * C, B)
            dlogits = torch.softmax(logits.view(s, r, c, size), 2).sub_(target[t]).mul_(scale[t])
            grad = torch.bmm(dlogits.view(s, r * c, size), batch).view(s, r, c, d)
            stepping = n_steps > t
            self.optimizer.step(self.weights, grad, None if stepping.all() else np.flatnonzero(stepping))


class _Optimizer:
    """torch.optim.Adam / RMSprop with `weight_decay` (PyTorch defaults); one step count per stream."""

    def __init__(self, name: str, l2: Tensor, shape: torch.Size):
        self.name = name
        self.l2 = l2  # broadcasts against the parameters
        self.avg = torch.zeros(shape)  # Adam's exp_avg
        self.avg_sq = torch.zeros(shape)  # Adam's exp_avg_sq, RMSprop's square_avg
        self.steps = np.zeros(shape[0], dtype=np.int64)

    def keep(self, rows: Tensor) -> None:
        self.l2, self.avg, self.avg_sq = self.l2[rows], self.avg[rows], self.avg_sq[rows]
        self.steps = self.steps[rows.numpy()]

    def step(self, param: Tensor, grad: Tensor, rows: np.ndarray | None = None) -> None:
        """Update `param` in place; with `rows` (of dim 0), only those take a step."""
        if rows is None:
            return self._step(param, grad, self.l2, self.avg, self.avg_sq, self.steps)
        index = torch.from_numpy(rows)
        sub = [t.index_select(0, index) for t in (param, grad, self.l2, self.avg, self.avg_sq)]
        steps = self.steps[rows]
        self._step(*sub, steps)
        for full, part in zip((param, self.avg, self.avg_sq), (sub[0], sub[3], sub[4])):
            full.index_copy_(0, index, part)
        self.steps[rows] = steps

    def _step(self, param, grad, l2, avg, avg_sq, steps: np.ndarray) -> None:
        grad = grad.add_(param * l2)
        if self.name == "rmsprop":  # lr 1e-2, alpha 0.99, eps 1e-8
            avg_sq.mul_(0.99).addcmul_(grad, grad, value=0.01)
            param.addcdiv_(grad, avg_sq.sqrt().add_(1e-8), value=-1e-2)
            return
        steps += 1  # lr 1e-3, betas (0.9, 0.999), eps 1e-8
        avg.lerp_(grad, 0.1)
        avg_sq.mul_(0.999).addcmul_(grad, grad, value=0.001)
        if steps.min() == steps.max():  # the usual case; bias corrections as torch computes them
            step = int(steps[0])
            denom = (avg_sq.sqrt() / math.sqrt(1 - 0.999**step)).add_(1e-8)
            param.addcdiv_(avg, denom, value=-1e-3 / (1 - 0.9**step))
            return
        per_row = (-1,) + (1,) * (param.dim() - 1)
        step_size = torch.from_numpy(1e-3 / (1 - 0.9**steps)).float().view(per_row)
        correction2 = torch.from_numpy(np.sqrt(1 - 0.999**steps)).float().view(per_row)
        param.sub_(avg / (avg_sq.sqrt() / correction2).add_(1e-8) * step_size)


def _slots(sizes: list[int]) -> np.ndarray:
    """Stream sizes -> (S, R) the fit in each slot, numbered stream after stream; -1 pads a short stream."""
    slot = np.full((len(sizes), max(sizes)), -1)
    for k, (first, size) in enumerate(zip(np.cumsum([0, *sizes]), sizes)):
        slot[k, :size] = np.arange(first, first + size)
    return slot


def _split(fit: Fit, rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, dev rows); SentEval's validation split is the first draw after seeding."""
    if fit.dev is not None:
        return np.asarray(fit.train), np.asarray(fit.dev)
    order = rng.permutation(len(fit.train))
    cut = int(fit.validation_split * len(fit.train))
    return np.asarray(fit.train)[order[cut:]], np.asarray(fit.train)[order[:cut]]


def _pass_batches(trains: list[np.ndarray], rngs: list, y: Tensor, size: int):
    """Row indices (T, S, B), labels (T, S, B), loss weights (T, S, B) and steps per stream (S,)."""
    n = np.array([len(t) for t in trains])
    n_steps = -(-n // size)
    width = int(n_steps.max()) * size
    rows = np.zeros((len(trains), width), dtype=np.int64)
    scale = np.zeros((len(trains), width), dtype=np.float32)
    for i, (train, rng) in enumerate(zip(trains, rngs)):
        rows[i, : n[i]] = train[rng.permutation(n[i])]
        batch_sizes = np.minimum(size, n[i] - np.arange(n_steps[i]) * size)
        scale[i, : n[i]] = np.repeat(1.0 / batch_sizes, batch_sizes)

    def by_step(a: np.ndarray) -> Tensor:
        return torch.from_numpy(a.reshape(len(trains), -1, size).transpose(1, 0, 2).copy())

    rows_t = by_step(rows)
    return rows_t, y[rows_t], by_step(scale), n_steps


def _count_correct(x: Tensor, y: Tensor, weights: Tensor, row_sets: list[np.ndarray]) -> np.ndarray:
    """(M, C, D+1) weights, M row sets -> (M,) count of rows each candidate classifies right."""
    union, inverse = np.unique(np.concatenate(row_sets), return_inverse=True)
    m, c, d = weights.shape
    logits = x[torch.from_numpy(union)] @ weights.reshape(m * c, d).T  # (R, M * C)
    right = (logits.view(-1, m, c).argmax(-1) == y[torch.from_numpy(union)][:, None]).numpy()  # (R, M)
    owner = np.repeat(np.arange(m), [len(r) for r in row_sets])
    return np.bincount(owner, weights=right[inverse, owner], minlength=m).astype(np.int64)
