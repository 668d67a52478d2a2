"""Thin Lightning callbacks over `sparsecse`: importance scoring, scheduled pruning, checkpoints,
the progress bar."""

from callbacks.checkpointing import AtomicCheckpointIO, BestCheckpoint, LastCheckpoint
from callbacks.importance import ImportanceScoring
from callbacks.progress import ParameterSummary, StepProgressBar
from callbacks.pruning import ScheduledPruning

__all__ = [
    "AtomicCheckpointIO",
    "BestCheckpoint",
    "ImportanceScoring",
    "LastCheckpoint",
    "ParameterSummary",
    "ScheduledPruning",
    "StepProgressBar",
]
