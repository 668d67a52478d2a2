"""Thin Lightning callbacks over `sparsecse`: importance scoring and scheduled pruning."""

from callbacks.pruning import StructuredPruning

__all__ = ["StructuredPruning"]
