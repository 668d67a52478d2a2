"""SparseCSE: sparse contrastive sentence embeddings (SimCSE + alignment/uniformity sparsification)."""

from sparsecse.errors import ConfigError

__all__ = ["ConfigError"]
__version__ = "0.1.0"
