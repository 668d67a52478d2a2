"""SparseCSE: sparse contrastive sentence embeddings (SimCSE + alignment/uniformity sparsification)."""

import logging

from sparsecse.core.errors import ConfigError

# a library's loggers say nothing unless the application configures logging
logging.getLogger("sparsecse").addHandler(logging.NullHandler())

__all__ = ["ConfigError"]
__version__ = "0.1.0"
