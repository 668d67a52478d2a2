"""Thin Lightning callbacks over `sparsecse`: importance scoring and scheduled pruning."""

from callbacks.importance import ImportanceScoring
from callbacks.pruning import StructuredPruning

__all__ = ["ImportanceScoring", "StructuredPruning"]
