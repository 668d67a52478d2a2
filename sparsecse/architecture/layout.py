"""Where a transformer layer keeps the units SparseCSE removes (METHOD.md section 3), for BERT,
RoBERTa, DistilBERT, MPNet and ModernBERT: `Layout`, and what a layer's weights say about them.

A head owns d rows of the query, key and value projections and d input columns of the attention
output projection; an FFN neuron owns one row of the FFN's input projection (and one of a GLU's
gate) and one input column of its output projection.

Standalone (torch only): `surgery.py` imports it, and both travel with exported weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class Layout:
    """Where one architecture's layer keeps its units, as paths of modules within the layer."""

    head_rows: tuple[str, ...]  # query, key, value projections, (H d, hidden) each, or one fused
    head_columns: str  # attention output projection, (hidden, H d)
    neuron_rows: str  # FFN input projection, (F, hidden)
    neuron_columns: str  # FFN output projection, (hidden, F)
    attention: str  # the attention module, which knows the head size
    head_size: str = "attention_head_size"  # its attribute holding the head size
    head_count: str | None = "num_attention_heads"  # the one holding the head count (None: it has none)
    head_blocks: int = 1  # blocks of rows per `head_rows` projection, each laid out head by head
    neuron_blocks: int = 1  # blocks of rows of the FFN input projection, each laid out neuron by neuron


BERT = Layout(
    ("attention.self.query", "attention.self.key", "attention.self.value"),
    "attention.output.dense", "intermediate.dense", "output.dense", "attention.self",
)  # fmt: skip
DISTILBERT = Layout(
    ("attention.q_lin", "attention.k_lin", "attention.v_lin"),
    "attention.out_lin", "ffn.lin1", "ffn.lin2", "attention", head_count="n_heads",
)  # fmt: skip
MPNET = Layout(
    ("attention.attn.q", "attention.attn.k", "attention.attn.v"),
    "attention.attn.o", "intermediate.dense", "output.dense", "attention.attn",
)  # fmt: skip
# ModernBERT fuses q, k and v into one projection (3 blocks: all heads' q rows, then k, then v) and
# its GLU FFN fuses the input and the gate (2 blocks: a neuron owns one row of each).
MODERNBERT = Layout(
    ("attn.Wqkv",), "attn.Wo", "mlp.Wi", "mlp.Wo", "attn",
    head_size="head_dim", head_count=None, head_blocks=3, neuron_blocks=2,
)  # fmt: skip
# By the class of a transformer layer (transformers' names).
LAYER_LAYOUTS = {
    "BertLayer": BERT,
    "RobertaLayer": BERT,
    "TransformerBlock": DISTILBERT,
    "MPNetLayer": MPNET,
    "ModernBertEncoderLayer": MODERNBERT,
}


class Architecture(NamedTuple):
    """What a backbone of one model type looks like around its layers."""

    layers: str  # the path from the backbone to its transformer layers
    ffn_size: str  # the config key of the FFN width
    pooler: bool  # whether it has a pooler (MLP) layer
    positions_after_padding: bool  # position ids start after the padding id (fewer usable positions)


ARCHITECTURES = {  # layers, FFN size key, pooler, positions after padding
    "bert": Architecture("encoder.layer", "intermediate_size", True, False),
    "roberta": Architecture("encoder.layer", "intermediate_size", True, True),
    "distilbert": Architecture("transformer.layer", "hidden_dim", False, False),
    "mpnet": Architecture("encoder.layer", "intermediate_size", True, True),
    "modernbert": Architecture("layers", "intermediate_size", False, False),
}
SPARSE_PREFIX = "sparsecse_"  # this project's sliced version of an architecture: `sparsecse_<type>`
SUPPORTED_MODEL_TYPES = (*ARCHITECTURES, *(SPARSE_PREFIX + kind for kind in ARCHITECTURES))


def architecture(config) -> str:
    """The dense model type of a config (`sparsecse_mpnet` -> `mpnet`)."""
    return config.model_type.removeprefix(SPARSE_PREFIX)


def ffn_size(config) -> int:
    """The FFN width a config records (DistilBERT calls it `hidden_dim`)."""
    return getattr(config, ARCHITECTURES[architecture(config)].ffn_size)


def has_pooler(config) -> bool:
    """Whether the architecture has a pooler (MLP) layer (DistilBERT and ModernBERT have none)."""
    return ARCHITECTURES[architecture(config)].pooler


def unit_layout(layer: nn.Module) -> Layout:
    """The layout of a layer, by its class or the class it derives from."""
    for cls in type(layer).__mro__:
        if cls.__name__ in LAYER_LAYOUTS:
            return LAYER_LAYOUTS[cls.__name__]
    raise TypeError(f"no unit layout for a {type(layer).__name__} layer")


def encoder_layers(backbone: nn.Module) -> nn.ModuleList:
    """The transformer layers of a supported backbone."""
    return backbone.get_submodule(ARCHITECTURES[architecture(backbone.config)].layers)


def linear_at(layer: nn.Module, path: str) -> nn.Linear:
    """The Linear module at `path` within a layer (a path of a `Layout`)."""
    return layer.get_submodule(path)


def replace_linear(layer: nn.Module, path: str, new: nn.Linear) -> None:
    parent, name = path.rsplit(".", 1)
    setattr(layer.get_submodule(parent), name, new)


def unit_rows(units: Sequence[int], size: int, total: int, blocks: int = 1) -> Tensor:
    """The rows that `units` own in a projection of `blocks` blocks, each of `total` units of `size`
    consecutive rows: (blocks * len(units) * size,), block by block, in the order of `units`."""
    rows = (torch.as_tensor(list(units), dtype=torch.long)[:, None] * size + torch.arange(size)).flatten()
    return torch.cat([block * total * size + rows for block in range(blocks)])


def head_size(layer: nn.Module) -> int:
    layout = unit_layout(layer)
    return getattr(layer.get_submodule(layout.attention), layout.head_size)


def set_head_count(layer: nn.Module, heads: int) -> None:
    """Tell the attention module how many heads its (sliced) projections now hold."""
    layout = unit_layout(layer)
    attention = layer.get_submodule(layout.attention)
    if layout.head_count is not None:
        setattr(attention, layout.head_count, heads)
    if hasattr(attention, "all_head_size"):
        attention.all_head_size = heads * head_size(layer)


def layer_structure(layer: nn.Module) -> tuple[int, int]:
    """(heads, FFN neurons) of one layer, read from its weights."""
    layout = unit_layout(layer)
    heads = linear_at(layer, layout.head_rows[0]).out_features // (layout.head_blocks * head_size(layer))
    return heads, linear_at(layer, layout.neuron_rows).out_features // layout.neuron_blocks


def head_count_recorded(layer: nn.Module) -> int:
    """The head count the attention module believes it has (must agree with its weights)."""
    layout = unit_layout(layer)
    if layout.head_count is None:  # the module reads it off its weights' shapes
        return layer_structure(layer)[0]
    attention = layer.get_submodule(layout.attention)
    heads = getattr(attention, layout.head_count)
    assert getattr(attention, "all_head_size", heads * head_size(layer)) == heads * head_size(layer)
    return heads


def parameters_per_unit(layer: nn.Module) -> tuple[int, int]:
    """(parameters a head owns, parameters a neuron owns) in this layer, biases included."""
    layout, d = unit_layout(layer), head_size(layer)

    def per_row(path: str) -> int:  # one row's weights and its bias
        module = linear_at(layer, path)
        return module.in_features + (module.bias is not None)

    per_head = sum(layout.head_blocks * d * per_row(path) for path in layout.head_rows)
    per_head += d * linear_at(layer, layout.head_columns).out_features  # output-projection columns
    per_neuron = layout.neuron_blocks * per_row(layout.neuron_rows)
    per_neuron += linear_at(layer, layout.neuron_columns).out_features  # its output-projection column
    return per_head, per_neuron
