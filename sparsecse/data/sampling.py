"""The order of training examples: a permutation per epoch drawn from (seed, epoch) alone, this
rank's share of it, optionally grouped by length, and a resumed run's skip of what it had seen."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import DistributedSampler


class EpochShuffle(DistributedSampler):
    """A fresh permutation each epoch, drawn from (seed, epoch) alone, and this rank's share of it
    (every W-th index, padded as DistributedSampler pads), so that a resumed run sees the order the
    uninterrupted run saw. Lightning calls `set_epoch` before every epoch, and leaves a
    DistributedSampler unwrapped, which lets `resume` skip what the interrupted run had consumed.

    With `lengths` and `bucket_batches` > 0, each run of `bucket_batches` batches of the share is
    sorted by length and cut into batches, whose order within the run is shuffled again: batches pad
    little, at the price of in-batch negatives of similar length (SimCSE samples uniformly).
    """

    def __init__(
        self,
        size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        lengths: Sequence[int] | None = None,
        batch_size: int = 1,
        bucket_batches: int = 0,
    ):
        self.size, self.seed, self.rank, self.world_size, self.epoch = size, seed, rank, world_size, 0
        self.num_samples = math.ceil(size / world_size)
        self.resume_at: tuple[int, int] | None = None  # (epoch, examples this rank already trained on)
        self.lengths = None if lengths is None else torch.as_tensor(lengths)
        self.batch_size, self.bucket_batches = batch_size, bucket_batches
        if bucket_batches and (self.lengths is None or len(self.lengths) != size):
            raise ValueError(f"bucket_batches={bucket_batches} needs the lengths of all {size} examples")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume(self, epoch: int, examples: int) -> None:
        """Leave out the first `examples` of this rank's share once, in `epoch`."""
        self.resume_at = (epoch, examples)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.size, generator=generator)
        if padding := self.num_samples * self.world_size - self.size:
            order = torch.cat([order, order[:padding]])
        mine = order[self.rank :: self.world_size]
        if self.bucket_batches:
            mine = self._group_by_length(mine, generator)
        if self.resume_at is not None and self.resume_at[0] == self.epoch:
            mine, self.resume_at = mine[self.resume_at[1] :], None
        return _as_ints(mine)

    def _group_by_length(self, share: Tensor, generator: torch.Generator) -> Tensor:
        """(N,) indices -> (N,) indices whose consecutive `batch_size` blocks are of similar length.

        Only the share's last batch may be short, so it stays last: the DataLoader cuts blocks in order.
        """
        span = self.batch_size * self.bucket_batches
        runs = []
        for run in share.split(span):
            longest_first = run[torch.sort(self.lengths[run], descending=True, stable=True).indices]
            batches = list(longest_first.split(self.batch_size))
            full = len(batches) - (len(batches[-1]) < self.batch_size)
            shuffled = [batches[i] for i in torch.randperm(full, generator=generator)] + batches[full:]
            runs.extend(shuffled)
        return torch.cat(runs)

    def __len__(self) -> int:
        # the full share even while resuming: Lightning sizes every epoch by the first loader's length
        return self.num_samples


def _as_ints(indices: Tensor, chunk: int = 4096) -> Iterator[int]:
    """Python ints a chunk at a time: a whole epoch's list of them costs ~38 MB at 1M examples
    (measured, bench/RESULTS.md), the tensor 8 MB."""
    for part in indices.split(chunk):
        yield from part.tolist()


def example_lengths(dataset: Sequence) -> Sequence[int]:
    """A cheap length per example for batching by length: characters (bytes for a file corpus), the
    longest view of a tuple, since all views of a batch are padded together."""
    if hasattr(dataset, "byte_lengths"):
        return dataset.byte_lengths()
    return [len(x) if isinstance(x, str) else max(map(len, x)) for x in dataset]
