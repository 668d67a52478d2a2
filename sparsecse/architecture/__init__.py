"""Where each supported architecture keeps its heads and FFN neurons, and the sparse model classes
that slice them. These two files travel inside every exported model (model_io copies them), so they
import nothing else from sparsecse."""
