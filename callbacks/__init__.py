"""Thin Lightning callbacks over `sparsecse` (importance scoring and scheduled pruning land here)."""
