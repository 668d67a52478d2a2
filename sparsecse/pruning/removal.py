"""Physical removal of pruned units (METHOD.md section 5): a trained encoder's gated-off heads and
FFN neurons sliced out of its backbone, which becomes one of `surgery.py`'s sparse classes; the
weight masks' zeros stay in the weights. Training-side: exports carry `surgery.py`, not this.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from sparsecse.architecture.layout import encoder_layers, ffn_size, layer_structure
from sparsecse.architecture.surgery import (
    DENSE_CLASSES,
    SPARSE_CLASSES,
    check_structure,
    is_sparse,
    kept_original_units,
    prune_layer_heads,
    prune_layer_neurons,
)
from sparsecse.pruning.layers import drop_layers


def to_sparse_class(backbone: PreTrainedModel) -> PreTrainedModel:
    """Turn a plain BertModel/RobertaModel/DistilBertModel/MPNetModel (and its config) into the
    Sparse* classes, in place.

    The Sparse* classes only add the per-layer structure to the config, so the objects keep their
    state; the config object is kept too, as every attention module holds a reference to it.
    """
    config = backbone.config
    if is_sparse(config):
        return backbone
    kind = config.model_type
    if kind not in DENSE_CLASSES or type(backbone) is not DENSE_CLASSES[kind]:
        plain = ", ".join(cls.__name__ for cls in DENSE_CLASSES.values())
        raise TypeError(f"surgery needs a plain {plain}; got {type(backbone).__name__}")
    config_class, model_class = SPARSE_CLASSES[kind]
    config.__class__ = config_class
    if "model_type" in vars(config):  # set from config.json by from_pretrained
        config.model_type = config_class.model_type
    config.kept_heads = config.kept_neurons = None
    backbone.__class__ = model_class
    return backbone


def _keep_list(mask: Tensor, size: int, what: str) -> list[int]:
    """A 1-D 0/1 (or boolean) mask over the layer's current units -> the kept positions."""
    mask = mask.detach().flatten().cpu()
    if mask.numel() != size:
        raise ValueError(f"{what}: mask has {mask.numel()} entries, the layer has {size} units")
    if not ((mask == 0) | (mask == 1)).all():
        raise ValueError(f"{what}: mask must hold only 0 and 1 (1 = keep)")
    return mask.nonzero().flatten().tolist()


def _kept_positions(
    layers: nn.ModuleList, head_keep: Sequence[Tensor], neuron_keep: Sequence[Tensor]
) -> list[tuple[list[int], list[int]]]:
    """Per layer, the positions (among its current units) of the heads and neurons to keep."""
    if len(head_keep) != len(layers) or len(neuron_keep) != len(layers):
        raise ValueError(f"need one head mask and one neuron mask per layer ({len(layers)} layers)")
    kept = []
    for i, layer in enumerate(layers):
        heads, neurons = layer_structure(layer)
        keep_h = _keep_list(head_keep[i], heads, f"head_keep[{i}]")
        if not keep_h:
            raise ValueError(f"head_keep[{i}] removes every head; a layer must keep at least one")
        kept.append((keep_h, _keep_list(neuron_keep[i], neurons, f"neuron_keep[{i}]")))
    return kept


def remove_units(
    backbone: PreTrainedModel, head_keep: Sequence[Tensor], neuron_keep: Sequence[Tensor]
) -> PreTrainedModel:
    """Slice away the heads and neurons whose mask entry is 0; returns the same backbone object.

    `head_keep[l]` / `neuron_keep[l]` are 1-D 0/1 masks over layer l's CURRENT heads / neurons (gate
    values). Every mask is checked before anything changes. Sliced Linear modules are new objects:
    hooks on them (UnitGates) and optimizer state do not carry over (`apply_gates` drops the gates).
    """
    layers = encoder_layers(backbone)
    positions = _kept_positions(layers, head_keep, neuron_keep)
    if all((len(h), len(n)) == layer_structure(layer) for layer, (h, n) in zip(layers, positions)):
        return backbone  # nothing to remove: a plain model stays plain (no remote code to load it)
    config = to_sparse_class(backbone).config
    kept_heads, kept_neurons = kept_original_units(config)
    for i, (layer, (keep_h, keep_n)) in enumerate(zip(layers, positions)):
        heads, neurons = layer_structure(layer)
        if len(keep_h) < heads:
            prune_layer_heads(layer, keep_h)
        if len(keep_n) < neurons:
            prune_layer_neurons(layer, keep_n)
        kept_heads[i] = [kept_heads[i][j] for j in keep_h]
        kept_neurons[i] = [kept_neurons[i][j] for j in keep_n]
    # None: that kind of unit is untouched in every layer (keeps config.json short)
    full_heads = all(len(h) == config.num_attention_heads for h in kept_heads)
    full_neurons = all(len(n) == ffn_size(config) for n in kept_neurons)
    config.kept_heads = None if full_heads else kept_heads
    config.kept_neurons = None if full_neurons else kept_neurons
    config.check_kept_units()
    check_structure(backbone)
    return backbone


def cut_to_structure(encoder: nn.Module, heads: Sequence[int], ffn: Sequence[int]) -> None:
    """Cut a dense encoder to a given structure (`structure`'s "heads" and "ffn": per layer, the heads
    and FFN neurons kept), keeping its first layers and each layer's first units.

    Why: the stand-in of a pruned model whose weights are gone, to time it again on another machine;
    encode time should depend on the shapes alone, not on which units were kept or their values
    (docs/compression.md reports a stand-in timed beside its model).
    """
    layers = encoder_layers(encoder.backbone)
    if len(heads) != len(ffn) or not 0 < len(heads) <= len(layers):
        raise ValueError(f"need 1 to {len(layers)} layers of heads and FFN widths, got {heads} and {ffn}")
    current = [layer_structure(layer) for layer in layers[: len(heads)]]
    for i, ((h, n), (h_now, n_now)) in enumerate(zip(zip(heads, ffn), current)):
        if not (0 < h <= h_now and 0 <= n <= n_now):
            raise ValueError(f"layer {i}: cannot cut {h_now} heads and {n_now} neurons to {h} and {n}")
    drop_layers(encoder, range(len(heads)))
    remove_units(
        encoder.backbone,
        [(torch.arange(h_now) < h).float() for h, (h_now, _) in zip(heads, current)],
        [(torch.arange(n_now) < n).float() for n, (_, n_now) in zip(ffn, current)],
    )


def apply_gates(encoder: nn.Module) -> None:
    """Make the encoder's gates physical: slice the heads and neurons gated to 0, drop the layers
    gated to 0, drop the gates."""
    gates = getattr(encoder, "gates", None)
    if gates is None:
        return
    kept = gates.kept_layers()
    heads, neurons = [gates.heads[i] for i in kept], [gates.neurons[i] for i in kept]
    encoder.detach_gates()
    if len(kept) < gates.num_layers:
        drop_layers(encoder, kept)
    remove_units(encoder.backbone, heads, neurons)


def structure(backbone: PreTrainedModel) -> dict:
    """Per-layer heads and FFN sizes, sparsities against the original model, parameter counts.

    `params` counts every backbone parameter; `params_without_embeddings` leaves out the embedding
    layer (word, position, token-type embeddings and their LayerNorm).
    """
    config = backbone.config
    heads, ffn = zip(*(layer_structure(layer) for layer in encoder_layers(backbone)))
    layers = len(heads)
    params = sum(p.numel() for p in backbone.parameters())
    embeddings = sum(p.numel() for p in backbone.embeddings.parameters())
    return {
        "heads": list(heads),
        "ffn": list(ffn),
        "head_sparsity": 1.0 - sum(heads) / (layers * config.num_attention_heads),
        "ffn_sparsity": 1.0 - sum(ffn) / (layers * ffn_size(config)),
        "params": params,
        "params_without_embeddings": params - embeddings,
    }


def remove_pruned_units(encoder) -> None:
    """End of sparsification: slice gated-off heads and neurons out of the backbone (METHOD.md 5)
    and drop the gates; weight masks are dropped too, their zeros stay in the weights."""
    apply_gates(encoder)
    if encoder.masks is not None:
        encoder.masks.apply_masks()
        encoder.detach_masks()
