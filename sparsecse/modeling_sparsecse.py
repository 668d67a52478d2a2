"""BERT/RoBERTa with per-layer attention heads and FFN sizes: the models SparseCSE exports.

Standalone (torch, transformers and the standard library only): a copy of this file sits next to
exported weights and is loaded with `trust_remote_code=True` where the sparsecse package is absent.
The config records, per layer, the ORIGINAL indices of the kept heads (`kept_heads`) and FFN
neurons (`kept_neurons`); the model builds the dense architecture and then slices each layer to
that structure, so `from_pretrained` finds weights of matching shapes.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, BertConfig, BertModel, RobertaConfig, RobertaModel


def slice_linear(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A new Linear keeping the output rows (dim=0, bias too) or input columns (dim=1) in `index`.

    Same device, dtype and requires_grad as `linear` (unlike transformers' old prune_linear_layer,
    which returned float32); works on the meta device.
    """
    if dim not in (0, 1):
        raise ValueError(f"dim must be 0 (rows) or 1 (columns), got {dim}")
    index = torch.as_tensor(index, dtype=torch.long).to(linear.weight.device)
    weight = linear.weight.detach().index_select(dim, index).clone()  # (out, in)
    bias = None
    if linear.bias is not None:
        bias = linear.bias.detach()
        bias = (bias.index_select(0, index) if dim == 0 else bias).clone()
    with warnings.catch_warnings():  # a zero-neuron FFN: "Initializing zero-element tensors is a no-op"
        warnings.simplefilter("ignore", UserWarning)
        new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    new.weight = nn.Parameter(weight, requires_grad=linear.weight.requires_grad)
    if bias is not None:
        new.bias = nn.Parameter(bias, requires_grad=linear.bias.requires_grad)
    if getattr(linear, "_is_hf_initialized", False):  # keep transformers from re-initialising it
        new._is_hf_initialized = True
    return new


def _checked(keep: Sequence[int], total: int, what: str) -> list[int]:
    keep = sorted({int(i) for i in keep})
    if keep and not 0 <= keep[0] <= keep[-1] < total:
        raise ValueError(f"{what} indices must lie in [0, {total}), got {keep}")
    return keep


def prune_layer_heads(layer: nn.Module, keep: Sequence[int]) -> None:
    """Keep only the heads `keep` (indices among the layer's current heads) of a BERT/RoBERTa layer."""
    attention = layer.attention.self
    size = attention.attention_head_size
    keep = _checked(keep, attention.query.out_features // size, "head")
    assert keep, "a layer must keep at least one attention head (CUDA SDPA fails on zero heads)"
    index = (torch.tensor(keep)[:, None] * size + torch.arange(size)).flatten()  # (H_kept * d,)
    for name in ("query", "key", "value"):
        setattr(attention, name, slice_linear(getattr(attention, name), index, dim=0))
    layer.attention.output.dense = slice_linear(layer.attention.output.dense, index, dim=1)
    attention.num_attention_heads = len(keep)
    attention.all_head_size = len(keep) * size


def prune_layer_neurons(layer: nn.Module, keep: Sequence[int]) -> None:
    """Keep only the FFN neurons `keep` (indices among the layer's current neurons).

    Keeping none is allowed: the FFN then adds only `output.dense`'s bias.
    """
    keep = _checked(keep, layer.intermediate.dense.out_features, "neuron")
    index = torch.tensor(keep, dtype=torch.long)
    layer.intermediate.dense = slice_linear(layer.intermediate.dense, index, dim=0)
    layer.output.dense = slice_linear(layer.output.dense, index, dim=1)


def layer_structure(layer: nn.Module) -> tuple[int, int]:
    """(heads, FFN neurons) of one layer, read from its weights."""
    heads = layer.attention.self.query.out_features // layer.attention.self.attention_head_size
    return heads, layer.intermediate.dense.out_features


def check_structure(model: nn.Module) -> None:
    """Assert that the model's layers have the shapes its config records."""
    config = model.config
    for i, layer in enumerate(model.encoder.layer):
        heads = config.num_attention_heads if config.kept_heads is None else len(config.kept_heads[i])
        neurons = config.intermediate_size if config.kept_neurons is None else len(config.kept_neurons[i])
        attention = layer.attention.self
        found = layer_structure(layer)
        assert found == (heads, neurons), f"layer {i}: model has {found}, config says {(heads, neurons)}"
        assert attention.num_attention_heads == heads and attention.all_head_size == heads * (
            attention.attention_head_size
        ), f"layer {i}: attention module's head count disagrees with its weights"


def shrink_to_config(model: nn.Module) -> None:
    """Slice a freshly built dense model's layers to the structure in `model.config`."""
    config = model.config
    for i, layer in enumerate(model.encoder.layer):
        if config.kept_heads is not None and len(config.kept_heads[i]) < config.num_attention_heads:
            prune_layer_heads(layer, config.kept_heads[i])
        if config.kept_neurons is not None and len(config.kept_neurons[i]) < config.intermediate_size:
            prune_layer_neurons(layer, config.kept_neurons[i])
    check_structure(model)


class SparseConfigMixin:
    """Checks `kept_heads` / `kept_neurons`: per layer, sorted distinct original indices."""

    def __post_init__(self, **kwargs) -> None:
        super().__post_init__(**kwargs)
        self.check_kept_units()

    def check_kept_units(self) -> None:
        for key, total in (
            ("kept_heads", self.num_attention_heads),
            ("kept_neurons", self.intermediate_size),
        ):
            kept = getattr(self, key)
            if kept is None:
                continue
            if not isinstance(kept, list) or len(kept) != self.num_hidden_layers:
                raise ValueError(f"{key}: expected a list of {self.num_hidden_layers} lists (one per layer)")
            for i, row in enumerate(kept):
                ok = isinstance(row, list) and all(isinstance(j, int) for j in row)
                if not ok or row != sorted(set(row)) or (row and not 0 <= row[0] <= row[-1] < total):
                    raise ValueError(
                        f"{key}[{i}]: expected sorted distinct indices in [0, {total}), got {row}"
                    )
                if key == "kept_heads" and not row:
                    raise ValueError(f"kept_heads[{i}]: every layer needs at least one head")


class SparseBertConfig(SparseConfigMixin, BertConfig):
    model_type = "sparsecse_bert"

    kept_heads: list[list[int]] | None = None
    kept_neurons: list[list[int]] | None = None


class SparseRobertaConfig(SparseConfigMixin, RobertaConfig):
    model_type = "sparsecse_roberta"

    kept_heads: list[list[int]] | None = None
    kept_neurons: list[list[int]] | None = None


class SparseBertModel(BertModel):
    config_class = SparseBertConfig

    def __init__(self, config: SparseBertConfig, add_pooling_layer: bool = True):
        super().__init__(config, add_pooling_layer=add_pooling_layer)
        shrink_to_config(self)


class SparseRobertaModel(RobertaModel):
    config_class = SparseRobertaConfig

    def __init__(self, config: SparseRobertaConfig, add_pooling_layer: bool = True):
        super().__init__(config, add_pooling_layer=add_pooling_layer)
        shrink_to_config(self)


SPARSE_CLASSES = {
    "bert": (SparseBertConfig, SparseBertModel),
    "roberta": (SparseRobertaConfig, SparseRobertaModel),
}


def register() -> None:
    """Make AutoConfig / AutoModel know the sparse model types (idempotent)."""
    for config_class, model_class in SPARSE_CLASSES.values():
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModel.register(config_class, model_class, exist_ok=True)
