"""Physical removal of heads and FFN neurons (METHOD.md section 5), and the sparse model classes
that travel with exported weights.

The layers are sliced in place (dtype and device kept), the kept ORIGINAL indices are recorded in the
config as `kept_heads` / `kept_neurons`, and the backbone becomes a `SparseBertModel`,
`SparseRobertaModel`, `SparseDistilBertModel`, `SparseMPNetModel` or `SparseModernBertModel`: the
dense architecture built from the config, then sliced to that structure, so that `from_pretrained`
finds weights of matching shapes.

Standalone (torch, transformers and `layout.py` beside it): the export copies this file and
`layout.py` next to the weights, where `trust_remote_code=True` loads them without the sparsecse
package; this package loads exports with the same classes, registered, and never runs those copies.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from transformers import (
    AutoConfig,
    AutoModel,
    BertConfig,
    BertModel,
    DistilBertConfig,
    DistilBertModel,
    ModernBertConfig,
    ModernBertModel,
    MPNetConfig,
    MPNetModel,
    PreTrainedModel,
    RobertaConfig,
    RobertaModel,
)

from .layout import (
    MPNET,
    SPARSE_PREFIX,
    encoder_layers,
    ffn_size,
    has_pooler,
    head_count_recorded,
    head_size,
    layer_structure,
    linear_at,
    replace_linear,
    set_head_count,
    unit_layout,
    unit_rows,
)


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
    """Keep only the heads `keep` (indices among the layer's current heads) of a layer."""
    size, layout = head_size(layer), unit_layout(layer)
    heads = layer_structure(layer)[0]
    keep = _checked(keep, heads, "head")
    assert keep, "a layer must keep at least one attention head (CUDA SDPA fails on zero heads)"
    rows = unit_rows(keep, size, heads, layout.head_blocks)  # (blocks * H_kept * d,)
    for path in layout.head_rows:
        replace_linear(layer, path, slice_linear(linear_at(layer, path), rows, dim=0))
    columns = unit_rows(keep, size, heads)  # (H_kept * d,)
    replace_linear(
        layer, layout.head_columns, slice_linear(linear_at(layer, layout.head_columns), columns, dim=1)
    )
    set_head_count(layer, len(keep))
    if layout is MPNET:
        select_position_bias_heads(layer.get_submodule(layout.attention), keep)


def prune_layer_neurons(layer: nn.Module, keep: Sequence[int]) -> None:
    """Keep only the FFN neurons `keep` (indices among the layer's current neurons).

    Keeping none is allowed: the FFN then adds only its output projection's bias.
    """
    layout, neurons = unit_layout(layer), layer_structure(layer)[1]
    keep = _checked(keep, neurons, "neuron")
    for path, index, dim in (
        (layout.neuron_rows, unit_rows(keep, 1, neurons, layout.neuron_blocks), 0),  # (blocks * F_kept,)
        (layout.neuron_columns, unit_rows(keep, 1, neurons), 1),  # (F_kept,)
    ):
        replace_linear(layer, path, slice_linear(linear_at(layer, path), index, dim=dim))


class _PositionBiasHeads:
    """Forward pre-hook of a sliced MPNet self-attention: MPNet computes one relative position bias
    (B, H, T, T) for all layers, outside them; a layer with fewer heads adds only its heads' rows.
    A class, not a closure, so that the model pickles and deep-copies."""

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        def select(bias: Tensor) -> Tensor:  # (B, H, T, T) -> (B, H_l, T, T)
            return bias.index_select(1, torch.tensor(module.position_bias_heads, device=bias.device))

        if len(args) > 2 and args[2] is not None:  # MPNetAttention passes it third, positionally
            args = (*args[:2], select(args[2]), *args[3:])
        elif kwargs.get("position_bias") is not None:
            kwargs = {**kwargs, "position_bias": select(kwargs["position_bias"])}
        return args, kwargs


def select_position_bias_heads(attention: nn.Module, keep: Sequence[int]) -> None:
    """Record which of the bias's heads the sliced attention keeps (composing with an earlier slice).

    A plain list, not a buffer: `from_pretrained` builds models on the meta device and would leave a
    buffer that is not in the weights uninitialised."""
    if hasattr(attention, "position_bias_heads"):
        attention.position_bias_heads = [attention.position_bias_heads[i] for i in keep]
        return
    attention.position_bias_heads = list(keep)
    attention.register_forward_pre_hook(_PositionBiasHeads(), with_kwargs=True)


def check_structure(model: nn.Module) -> None:
    """Assert that the model's layers have the shapes its config records."""
    config = model.config
    for i, layer in enumerate(encoder_layers(model)):
        heads = config.num_attention_heads if config.kept_heads is None else len(config.kept_heads[i])
        neurons = ffn_size(config) if config.kept_neurons is None else len(config.kept_neurons[i])
        found = layer_structure(layer)
        assert found == (heads, neurons), f"layer {i}: model has {found}, config says {(heads, neurons)}"
        assert head_count_recorded(layer) == heads, f"layer {i}: attention module's head count disagrees"


def shrink_to_config(model: nn.Module) -> None:
    """Slice a freshly built dense model's layers to the structure in `model.config`."""
    config = model.config
    for i, layer in enumerate(encoder_layers(model)):
        if config.kept_heads is not None and len(config.kept_heads[i]) < config.num_attention_heads:
            prune_layer_heads(layer, config.kept_heads[i])
        if config.kept_neurons is not None and len(config.kept_neurons[i]) < ffn_size(config):
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
            ("kept_neurons", ffn_size(self)),
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


class SparseDistilBertConfig(SparseConfigMixin, DistilBertConfig):
    model_type = "sparsecse_distilbert"

    kept_heads: list[list[int]] | None = None
    kept_neurons: list[list[int]] | None = None


class SparseMPNetConfig(SparseConfigMixin, MPNetConfig):
    model_type = "sparsecse_mpnet"

    kept_heads: list[list[int]] | None = None
    kept_neurons: list[list[int]] | None = None


class SparseModernBertConfig(SparseConfigMixin, ModernBertConfig):
    model_type = "sparsecse_modernbert"

    kept_heads: list[list[int]] | None = None
    kept_neurons: list[list[int]] | None = None


def sparse_model_class(dense: type[PreTrainedModel], config_class: type) -> type[PreTrainedModel]:
    """`Sparse<dense>`: the dense architecture built from the config, then sliced to the structure
    the config records, so that `from_pretrained` finds weights of matching shapes."""

    def __init__(self, config, **kwargs) -> None:  # add_pooling_layer, for the architectures with a pooler
        dense.__init__(self, config, **kwargs)
        shrink_to_config(self)

    name = f"Sparse{dense.__name__}"
    namespace = {
        "config_class": config_class,
        "__init__": __init__,
        "__module__": __name__,
        "__qualname__": name,
    }
    return type(name, (dense,), namespace)


# module-level names: an export's config.json `auto_map` names them (`surgery.SparseBertModel`)
SparseBertModel = sparse_model_class(BertModel, SparseBertConfig)
SparseRobertaModel = sparse_model_class(RobertaModel, SparseRobertaConfig)
SparseDistilBertModel = sparse_model_class(DistilBertModel, SparseDistilBertConfig)
SparseMPNetModel = sparse_model_class(MPNetModel, SparseMPNetConfig)
SparseModernBertModel = sparse_model_class(ModernBertModel, SparseModernBertConfig)

SPARSE_CLASSES = {
    "bert": (SparseBertConfig, SparseBertModel),
    "roberta": (SparseRobertaConfig, SparseRobertaModel),
    "distilbert": (SparseDistilBertConfig, SparseDistilBertModel),
    "mpnet": (SparseMPNetConfig, SparseMPNetModel),
    "modernbert": (SparseModernBertConfig, SparseModernBertModel),
}
assert all(c.model_type == SPARSE_PREFIX + kind for kind, (c, _) in SPARSE_CLASSES.items())


def register() -> None:
    """Make AutoConfig / AutoModel know the sparse model types (idempotent)."""
    for config_class, model_class in SPARSE_CLASSES.values():
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModel.register(config_class, model_class, exist_ok=True)


register()

DENSE_CLASSES = {
    "bert": BertModel,
    "roberta": RobertaModel,
    "distilbert": DistilBertModel,
    "mpnet": MPNetModel,
    "modernbert": ModernBertModel,
}


def is_sparse(config) -> bool:
    return config.model_type in {c.model_type for c, _ in SPARSE_CLASSES.values()}


def pooling_layer_kwargs(config, add_pooling_layer: bool) -> dict[str, bool]:
    """The `add_pooling_layer` keyword for building a backbone: none for DistilBERT and ModernBERT,
    which have no pooler layer (and refuse the keyword)."""
    return {"add_pooling_layer": add_pooling_layer} if has_pooler(config) else {}


def kept_original_units(config) -> tuple[list[list[int]], list[list[int]]]:
    """Per layer, the original indices of the heads and neurons the model has now."""
    layers = range(config.num_hidden_layers)
    heads = getattr(config, "kept_heads", None) or [list(range(config.num_attention_heads)) for _ in layers]
    neurons = getattr(config, "kept_neurons", None) or [list(range(ffn_size(config))) for _ in layers]
    return [list(h) for h in heads], [list(n) for n in neurons]
