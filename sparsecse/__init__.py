"""SparseCSE: sparse contrastive sentence embeddings (SimCSE + alignment/uniformity sparsification)."""

from sparsecse.errors import ConfigError
from sparsecse.modeling_sparsecse import register as _register_sparse_models

_register_sparse_models()  # AutoConfig/AutoModel know sparsecse_bert and sparsecse_roberta

__all__ = ["ConfigError"]
__version__ = "0.1.0"
