"""The units SparseCSE removes (METHOD.md section 3): where they live in a layer, their gates and
masks, and how many parameters are left.

This file is the one place that knows where a layer keeps its units (BERT, RoBERTa, DistilBERT,
MPNet and ModernBERT: `Layout`). A head owns d rows of the query, key and value projections and d
input columns of the attention output projection; an FFN neuron owns one row of the FFN's input
projection (and one of a GLU's gate) and one input column of its output projection.

transformers 5 has no `head_mask` (an unknown keyword is silently ignored) and no `prune_heads`, so
a gate multiplies its unit's slice of the input of the layer's output projection: a head's slice of
the concatenated attention context before the attention output projection, a neuron's activation
before the FFN's output projection. With every gate at 1 the output is the plain model's, bit for
bit. MPNet's relative position bias, shared by all layers, is cut per layer by `surgery.py`.

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


def layout(layer: nn.Module) -> Layout:
    for cls in type(layer).__mro__:
        if cls.__name__ in LAYER_LAYOUTS:
            return LAYER_LAYOUTS[cls.__name__]
    raise TypeError(f"no unit layout for a {type(layer).__name__} layer")


def encoder_layers(backbone: nn.Module) -> nn.ModuleList:
    """The transformer layers of a supported backbone."""
    return backbone.get_submodule(ARCHITECTURES[architecture(backbone.config)].layers)


def linear(layer: nn.Module, path: str) -> nn.Linear:
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
    where = layout(layer)
    return getattr(layer.get_submodule(where.attention), where.head_size)


def set_head_count(layer: nn.Module, heads: int) -> None:
    """Tell the attention module how many heads its (sliced) projections now hold."""
    where = layout(layer)
    attention = layer.get_submodule(where.attention)
    if where.head_count is not None:
        setattr(attention, where.head_count, heads)
    if hasattr(attention, "all_head_size"):
        attention.all_head_size = heads * head_size(layer)


def layer_structure(layer: nn.Module) -> tuple[int, int]:
    """(heads, FFN neurons) of one layer, read from its weights."""
    where = layout(layer)
    heads = linear(layer, where.head_rows[0]).out_features // (where.head_blocks * head_size(layer))
    return heads, linear(layer, where.neuron_rows).out_features // where.neuron_blocks


def head_count_recorded(layer: nn.Module) -> int:
    """The head count the attention module believes it has (must agree with its weights)."""
    where = layout(layer)
    if where.head_count is None:  # the module reads it off its weights' shapes
        return layer_structure(layer)[0]
    attention = layer.get_submodule(where.attention)
    heads = getattr(attention, where.head_count)
    assert getattr(attention, "all_head_size", heads * head_size(layer)) == heads * head_size(layer)
    return heads


def parameters_per_unit(layer: nn.Module) -> tuple[int, int]:
    """(parameters a head owns, parameters a neuron owns) in this layer, biases included."""
    where, d = layout(layer), head_size(layer)

    def per_row(path: str) -> int:  # one row's weights and its bias
        module = linear(layer, path)
        return module.in_features + (module.bias is not None)

    per_head = sum(where.head_blocks * d * per_row(path) for path in where.head_rows)
    per_head += d * linear(layer, where.head_columns).out_features  # output-projection columns
    per_neuron = where.neuron_blocks * per_row(where.neuron_rows)
    per_neuron += linear(layer, where.neuron_columns).out_features  # its output-projection column
    return per_head, per_neuron


class UnitGates(nn.Module):
    """One gate per attention head (`head_{l}`, shape (H_l,)) and per FFN neuron (`neuron_{l}`,
    shape (F_l,)), kept as buffers so that checkpoints carry them and optimizers never touch them."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        layers = encoder_layers(backbone)
        self.num_layers = len(layers)
        for i, layer in enumerate(layers):
            heads, neurons = layer_structure(layer)
            device = linear(layer, layout(layer).neuron_rows).weight.device
            self.register_buffer(f"head_{i}", torch.ones(heads, device=device))
            self.register_buffer(f"neuron_{i}", torch.ones(neurons, device=device))
        self._handles = []
        for i, layer in enumerate(layers):
            where = layout(layer)
            head_gate = _GateHeads(self, i, head_size(layer))
            self._handles.append(linear(layer, where.head_columns).register_forward_pre_hook(head_gate))
            self._handles.append(
                linear(layer, where.neuron_columns).register_forward_pre_hook(_GateNeurons(self, i))
            )

    @property
    def heads(self) -> list[Tensor]:
        return [getattr(self, f"head_{i}") for i in range(self.num_layers)]

    @property
    def neurons(self) -> list[Tensor]:
        return [getattr(self, f"neuron_{i}") for i in range(self.num_layers)]

    def tensors(self) -> list[Tensor]:
        """Every gate tensor: the heads of each layer, then the neurons of each layer."""
        return self.heads + self.neurons

    def remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def counts(self) -> dict[str, list[int]]:
        """Kept (gate = 1) heads and neurons per layer."""
        return {
            "heads": [int(g.count_nonzero()) for g in self.heads],
            "neurons": [int(g.count_nonzero()) for g in self.neurons],
        }


class _GateHeads:
    """Pre-hook of the attention output projection (`Layout.head_columns`). A class, not a closure, so that
    models with gates pickle (DDP spawn sends the model to its workers)."""

    def __init__(self, gates: UnitGates, index: int, size: int):
        self.gates, self.index, self.size = gates, index, size

    def __call__(self, module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        context = args[0]  # (B, T, H_l * d)
        gate = getattr(self.gates, f"head_{self.index}").to(context.dtype)  # late: .to() swaps buffers
        heads = context.unflatten(-1, (-1, self.size))  # (B, T, H_l, d)
        return ((heads * gate[:, None]).flatten(-2), *args[1:])


class _GateNeurons:
    """Pre-hook of the FFN's output projection (`Layout.neuron_columns`)."""

    def __init__(self, gates: UnitGates, index: int):
        self.gates, self.index = gates, index

    def __call__(self, module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        activation = args[0]  # (B, T, F_l)
        return (activation * getattr(self.gates, f"neuron_{self.index}").to(activation.dtype), *args[1:])


def prunable_linears(backbone: nn.Module) -> dict[str, nn.Linear]:
    """The Linear layers whose weights are unstructured units (METHOD.md section 3): every one in
    the transformer layers; not the embeddings, LayerNorms or the pooler."""
    return {
        f"layer{i}.{name}": module
        for i, layer in enumerate(encoder_layers(backbone))
        for name, module in layer.named_modules()
        if isinstance(module, nn.Linear)
    }


class WeightMasks(nn.Module):
    """A 0/1 mask per prunable weight. Masked weights are zeroed now and again after every optimizer
    step (`apply`), which also undoes what weight decay and Adam's momentum would put back."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.linears = prunable_linears(backbone)
        for key, linear in self.linears.items():
            self.register_buffer(self._buffer(key), torch.ones_like(linear.weight, dtype=torch.bool))

    @staticmethod
    def _buffer(key: str) -> str:
        return key.replace(".", "__")

    def mask(self, key: str) -> Tensor:
        return getattr(self, self._buffer(key))

    def set(self, key: str, keep: Tensor) -> None:
        self.mask(key).copy_(keep)
        self.apply_masks()

    @torch.no_grad()
    def apply_masks(self) -> None:
        for key, linear in self.linears.items():
            linear.weight.mul_(self.mask(key).to(linear.weight.dtype))

    def sparsity(self) -> float:
        kept = sum(int(self.mask(k).count_nonzero()) for k in self.linears)
        total = sum(self.mask(k).numel() for k in self.linears)
        return 1.0 - kept / total


def pruned_any(encoder) -> bool:
    """Whether any head, neuron or weight is gated or masked off (events that removed nothing leave none)."""
    if encoder.masks is not None and encoder.masks.sparsity() > 0:
        return True
    return encoder.gates is not None and any(bool((g == 0).any()) for g in encoder.gates.tensors())


def effective_parameters(encoder) -> int:
    """Parameters of the transformer layers that still count: gated-off heads and neurons, masked
    weights and already-sliced units excluded (embeddings and pooler are not units)."""
    layers = encoder_layers(encoder.backbone)
    total = sum(p.numel() for p in layers.parameters())
    if encoder.masks is not None:
        return total - sum(int((~encoder.masks.mask(k)).sum()) for k in encoder.masks.linears)
    if encoder.gates is None:
        return total
    for layer, head_gate, neuron_gate in zip(layers, encoder.gates.heads, encoder.gates.neurons):
        per_head, per_neuron = parameters_per_unit(layer)
        total -= int((head_gate == 0).sum()) * per_head + int((neuron_gate == 0).sum()) * per_neuron
    return total


def counted_parameters(encoder) -> int:
    """Parameters of the whole encoder (embeddings and pooler included) that still count."""
    every = sum(p.numel() for p in encoder.parameters())
    layers = sum(p.numel() for p in encoder_layers(encoder.backbone).parameters())
    return every - layers + effective_parameters(encoder)


def sparsity_summary(encoder) -> dict[str, float]:
    """What the pruning callback logs: overall sparsities, kept units per layer, parameters."""
    summary: dict[str, float] = {"prune/encoder_parameters": float(effective_parameters(encoder))}
    if encoder.masks is not None:
        summary["prune/weight_sparsity"] = encoder.masks.sparsity()
    if encoder.gates is not None:
        counts = encoder.gates.counts()
        heads = sum(g.numel() for g in encoder.gates.heads)
        neurons = sum(g.numel() for g in encoder.gates.neurons)
        summary["prune/head_sparsity"] = 1.0 - sum(counts["heads"]) / heads
        summary["prune/ffn_sparsity"] = 1.0 - sum(counts["neurons"]) / neurons
        for i, (h, n) in enumerate(zip(counts["heads"], counts["neurons"])):
            summary[f"prune/heads_layer{i}"] = float(h)
            summary[f"prune/neurons_layer{i}"] = float(n)
    return summary
