"""The LightningDataModule: contrastive training batches and STS-B dev pairs for validation.

Tokenisation happens in the DataLoader's collate function (in its worker processes), never in the
training step.
"""

from __future__ import annotations

import functools
import logging
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler, Sampler
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from sparsecse.core.errors import ConfigError
from sparsecse.core.validation import NonNegativeInt, PositiveInt, checked
from sparsecse.data.checked_lines import MAX_LINE_LENGTH, LineReport, OnBadLine
from sparsecse.data.corpora import EMBEDDED, corpus_sentences, load_corpus
from sparsecse.data.download import DownloadMode, dataset_of, fetch_missing
from sparsecse.data.sampling import EpochShuffle, example_lengths
from sparsecse.evaluation.files import SNLI_FILES, STSB_DEV, check_files, how_to_get
from sparsecse.evaluation.sts import ScoredPairs, read_stsb
from sparsecse.model.loading import load_config, load_tokenizer

log = logging.getLogger(__name__)


@dataclass
class ContrastiveCollator:
    """Examples -> token tensors of shape (V, B, T), view-major.

    A plain sentence gives two identical views (unsupervised SimCSE: the two dropout masks are
    the only difference); a (sent0, sent1[, hard_neg]) tuple gives one view per column.
    """

    tokenizer: PreTrainedTokenizerBase
    max_length: int | None = 32  # SimCSE, Sec. 3 / Appendix A
    pad_to_max_length: bool = False  # every batch (V, B, max_length): one shape for a compiled step

    def _tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        return self.tokenizer(
            texts,
            padding="max_length" if self.pad_to_max_length else True,
            truncation=self.max_length is not None,
            max_length=self.max_length,
            return_tensors="pt",
        )

    def __call__(self, examples: Sequence[str | tuple[str, ...]]) -> dict[str, Tensor]:
        if isinstance(examples[0], str):
            tokens = self._tokenize(list(examples))
            return {k: torch.stack([v, v]) for k, v in tokens.items()}  # (2, B, T)
        views = len(examples[0])
        flat = [example[v] for v in range(views) for example in examples]
        tokens = self._tokenize(flat)
        return {k: v.view(views, len(examples), -1) for k, v in tokens.items()}  # (V, B, T)


# SLURM signals every process of a job step: at a time limit, a preemption or `scontrol requeue`.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)


def ignore_stop_signals(worker_id: int) -> None:
    """In a DataLoader worker: the job's stop signals are the main process's to handle. A worker that
    died of one would fail the run before the main process could save `last.ckpt`; the main process
    shuts its workers down itself when it stops."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    pl_worker_init_function(worker_id)  # what Lightning sets when a loader has no worker_init_fn


@dataclass
class PairCollator:
    """(sentence 1, sentence 2, gold) triples -> two padded token batches and the gold scores."""

    tokenizer: PreTrainedTokenizerBase

    def __call__(self, rows: Sequence[tuple[str, str, float]]) -> dict:
        sent1, sent2, gold = zip(*rows)
        return {
            "sent1": self._tokenize(sent1),
            "sent2": self._tokenize(sent2),
            "gold": torch.tensor(gold),
        }

    def _tokenize(self, texts: Sequence[str]) -> dict[str, Tensor]:
        return dict(self.tokenizer(list(texts), padding=True, return_tensors="pt"))


def data_files(data_dir: Path, train_file: str) -> list[str]:
    """The files of `data_dir` that training reads: STS-B dev, SentEval's SNLI files for an embedded
    corpus, and SimCSE's training file when `train_file` is that file in `data_dir`."""
    if train_file in EMBEDDED:
        return [STSB_DEV, *SNLI_FILES]
    path = Path(train_file).expanduser()
    in_data_dir = path.parent.resolve() == data_dir.resolve() and dataset_of(path.name) != "senteval"
    return [STSB_DEV, *([path.name] if in_data_dir else [])]


def check_data_dir(data_dir: Path, train_file: str) -> Path:
    """`data_dir`, once it is known to hold STS-B dev and, for an embedded corpus, SentEval's SNLI files."""
    if not data_dir.is_dir():
        raise ConfigError("data_dir", f"no such directory {data_dir} {how_to_get(data_dir)}")
    needs = {"validation (STS-B dev)": (STSB_DEV,)}
    if train_file in EMBEDDED:
        needs[f"train_file={train_file}"] = SNLI_FILES
    check_files(data_dir, needs, noun="")
    return data_dir


def log_skipped(report: LineReport | None) -> None:
    """One warning line for the bad lines of the training file skipped, one info line for the empty ones."""
    if report is None:
        return
    if bad := report.bad_summary():
        log.warning(f"data.{bad}")
    if empty := report.empty_summary():
        log.info(f"data.{empty}")


class ContrastiveDataModule(L.LightningDataModule):
    """Training corpus + STS-B dev. Inputs are read and checked here, before any model loads."""

    @checked  # the hints' constraints, before anything is read
    def __init__(
        self,
        tokenizer: str,
        data_dir: str | Path,
        train_file: str = "snli_sentences",
        batch_size: PositiveInt = 64,  # SimCSE unsupervised, Table D.1
        max_length: PositiveInt | None = 32,
        val_batch_size: PositiveInt = 128,
        num_workers: NonNegativeInt = 0,
        seed: int = 0,
        on_bad_line: OnBadLine = "fail",
        max_line_length: PositiveInt = MAX_LINE_LENGTH,
        bucket_batches: NonNegativeInt = 0,
        download: DownloadMode = "never",
        static_shapes: bool = False,
    ):
        super().__init__()
        if static_shapes and max_length is None:
            message = "pads every batch to max_length, which is null; set data.max_length"
            raise ConfigError("static_shapes", message)
        self.static_shapes = static_shapes
        self.bucket_batches = bucket_batches
        self.batch_size, self.val_batch_size, self.num_workers = batch_size, val_batch_size, num_workers
        self.seed = seed
        self.resume_at: tuple[int, int] | None = None  # (epoch, batches done), from a checkpoint
        data_dir = Path(data_dir).expanduser()
        fetch_missing(data_dir, data_files(data_dir, train_file), download, wait=rank_zero_only.rank != 0)
        self.data_dir = check_data_dir(data_dir, train_file)
        self.train_set = load_corpus(train_file, self.data_dir, on_bad_line, max_line_length)
        log_skipped(getattr(self.train_set, "report", None))
        self.val_pairs: ScoredPairs = read_stsb(self.data_dir, "dev")
        load_config(tokenizer)
        self.tokenizer = load_tokenizer(tokenizer)
        self.collate = ContrastiveCollator(self.tokenizer, max_length, pad_to_max_length=static_shapes)

    @functools.cached_property
    def sentences(self) -> list[str]:
        """The corpus's distinct sentences in first-seen order (every column of a pair or triplet), read
        once: what recovery distils on, speed targets time on and OpenVINO calibrates on."""
        return corpus_sentences(self.train_set)

    def _loader(
        self, dataset, batch_size: int, collate, sampler: Sampler | None = None, drop_last: bool = False
    ) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=collate,
            drop_last=drop_last,
            # page-locked batches: Lightning's non-blocking copy to a GPU then waits for nothing; from
            # pageable memory, each batch's copy waits for the steps queued before it
            pin_memory=self.on_gpu,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            worker_init_fn=ignore_stop_signals,
        )

    @property
    def on_gpu(self) -> bool:
        return self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"

    def train_dataloader(self) -> DataLoader:
        rank, world_size = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        lengths = example_lengths(self.train_set) if self.bucket_batches else None
        sampler = EpochShuffle(
            len(self.train_set), self.seed, rank, world_size, lengths, self.batch_size, self.bucket_batches
        )
        if self.resume_at is not None:
            epoch, batches = self.resume_at
            # a resumed fit draws its first iterator before it sets the sampler's epoch: without this,
            # a run resumed in epoch E > 0 trains on epoch 0's order
            sampler.set_epoch(epoch)
            sampler.resume(epoch, batches * self.batch_size)
        # static shapes: an epoch's short last batch would be a second shape to compile
        drop_last = self.static_shapes
        return self._loader(self.train_set, self.batch_size, self.collate, sampler, drop_last)

    def state_dict(self) -> dict[str, int]:
        """Where training is in its epoch, saved in every checkpoint, so that a run resumed from one
        saved mid-epoch goes on with the batches the interrupted run had not reached."""
        if self.trainer is None:
            return {}
        progress = self.trainer.fit_loop.epoch_loop.batch_progress.current
        return {"epoch": self.trainer.current_epoch, "batches": progress.processed}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.resume_at = (state_dict["epoch"], state_dict["batches"]) if state_dict else None

    def scoring_dataloader(self, seed: int, rank: int = 0, world_size: int = 1) -> DataLoader:
        """Batches of positive pairs for importance scoring: this rank's shard of a (seed)-shuffled
        pass, in the main process (a persistent training loader must not be iterated twice)."""
        sampler = DistributedSampler(self.train_set, world_size, rank, shuffle=True, seed=seed)
        return DataLoader(self.train_set, self.batch_size, sampler=sampler, collate_fn=self.collate)

    def val_dataloader(self) -> DataLoader:
        rows = list(zip(self.val_pairs.sent1, self.val_pairs.sent2, self.val_pairs.gold.tolist()))
        return self._loader(rows, self.val_batch_size, PairCollator(self.tokenizer))
