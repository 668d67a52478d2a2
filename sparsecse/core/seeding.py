"""Every seed a run derives, in one place. A run draws its randomness from its seed and from where it
is (a training step, a pruning event, a rank), never from whatever the process's random state has
become, so that a run resumed from a checkpoint draws what the uninterrupted run drew.

Three derivations, each kept as the runs published so far drew it (a change would move every
published number by a seed's spread, not by what the change is about):

- `derived_seed(seed, *parts)`: scoring's dropout and random scores, and recovery's dropout;
- `step_seed(seed, step, world_size, rank)`: a training step's dropout;
- `event_seed(seed, event)`: the order of a pruning event's scoring batches and recovery sentences.
"""

from __future__ import annotations

import hashlib

import torch


def derived_seed(*parts: int) -> int:
    """One 63-bit seed from several integers (a seed, an event, a rank), different for each tuple."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def step_seed(seed: int, step: int, world_size: int = 1, rank: int = 0) -> int:
    """A training step's dropout seed on `rank`: distinct for every (step, rank) of a run."""
    return (seed * 1_000_003 + step) * world_size + rank


def event_seed(seed: int, event: int) -> int:
    """The data-order seed of pruning event `event` (0, 1, ...): event 0 draws `seed` itself, as
    sparsecse-prune does, so that a training run's first event and a post hoc prune of the same
    model score the same batches."""
    return seed + event


def forked_rng(device: torch.device):
    """torch.random.fork_rng over the CPU's and `device`'s random state: restored when the block ends."""
    return torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else [])
