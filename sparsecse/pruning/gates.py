"""The gates and masks of the units SparseCSE removes (METHOD.md section 3), and how many parameters
are left. Where a layer keeps its units is `layout.py`'s.

transformers 5 has no `head_mask` (an unknown keyword is silently ignored) and no `prune_heads`, so
a gate multiplies its unit's slice of the input of the layer's output projection: a head's slice of
the concatenated attention context before the attention output projection, a neuron's activation
before the FFN's output projection. With every gate at 1 the output is the plain model's, bit for
bit. MPNet's relative position bias, shared by all layers, is cut per layer by `surgery.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sparsecse.architecture.layout import (
    encoder_layers,
    ffn_size,
    head_size,
    layer_structure,
    linear_at,
    parameters_per_unit,
    unit_layout,
)


class UnitGates(nn.Module):
    """One gate per attention head (`head_{l}`, shape (H_l,)), per FFN neuron (`neuron_{l}`, shape
    (F_l,)) and per transformer layer (`layer_{l}`, shape (): 0 skips the layer, its output is its
    input), kept as buffers so that checkpoints carry them and optimizers never touch them."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        layers = encoder_layers(backbone)
        self.num_layers = len(layers)
        for i, layer in enumerate(layers):
            heads, neurons = layer_structure(layer)
            device = linear_at(layer, unit_layout(layer).neuron_rows).weight.device
            self.register_buffer(f"head_{i}", torch.ones(heads, device=device))
            self.register_buffer(f"neuron_{i}", torch.ones(neurons, device=device))
            self.register_buffer(f"layer_{i}", torch.ones((), device=device))
        self._handles = []
        for i, layer in enumerate(layers):
            layout = unit_layout(layer)
            head_gate = _GateHeads(self, i, head_size(layer))
            self._handles.append(linear_at(layer, layout.head_columns).register_forward_pre_hook(head_gate))
            self._handles.append(
                linear_at(layer, layout.neuron_columns).register_forward_pre_hook(_GateNeurons(self, i))
            )
            self._handles.append(layer.register_forward_hook(_GateLayer(self, i), with_kwargs=True))

    @property
    def heads(self) -> list[Tensor]:
        return [getattr(self, f"head_{i}") for i in range(self.num_layers)]

    @property
    def neurons(self) -> list[Tensor]:
        return [getattr(self, f"neuron_{i}") for i in range(self.num_layers)]

    @property
    def layers(self) -> list[Tensor]:
        return [getattr(self, f"layer_{i}") for i in range(self.num_layers)]

    def kept_layers(self) -> list[int]:
        """The layers whose gate is 1."""
        return [i for i, gate in enumerate(self.layers) if gate > 0]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints taken before layers had gates: every layer kept
        for i in range(self.num_layers):
            state_dict.setdefault(f"{prefix}layer_{i}", torch.ones(()))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def tensors(self) -> list[Tensor]:
        """Every gate tensor: the heads of each layer, then the neurons of each layer."""
        return self.heads + self.neurons

    def remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def counts(self) -> dict[str, list[int]]:
        """Kept (gate = 1) heads and neurons per layer; a skipped layer keeps none."""
        kept = [bool(g > 0) for g in self.layers]
        return {
            "heads": [int(g.count_nonzero()) * k for g, k in zip(self.heads, kept)],
            "neurons": [int(g.count_nonzero()) * k for g, k in zip(self.neurons, kept)],
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


class _GateLayer:
    """Forward hook of a transformer layer: its output where its gate is 1, its input where it is 0
    (a selection, not a blend: with the gate at 1 the output is the layer's, bit for bit)."""

    def __init__(self, gates: UnitGates, index: int):
        self.gates, self.index = gates, index

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict, output):
        gate = getattr(self.gates, f"layer_{self.index}")
        return with_hidden(output, torch.where(gate > 0, hidden_of(output), hidden_input(args, kwargs)))


def hidden_input(args: tuple, kwargs: dict) -> Tensor:
    """A transformer layer's (B, T, H) input, from its forward's arguments (a forward hook's)."""
    return args[0] if args else kwargs["hidden_states"]


def hidden_of(output) -> Tensor:
    """A transformer layer's (B, T, H) output: the tensor, or the first of the tuple some return."""
    return output[0] if isinstance(output, tuple) else output


def with_hidden(output, hidden: Tensor):
    """`output` with its hidden states replaced, in the form the layer returned it."""
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


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
    step (`apply_masks`), which also undoes what weight decay and Adam's momentum would put back."""

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
    gates = encoder.gates
    return gates is not None and any(bool((g == 0).any()) for g in [*gates.tensors(), *gates.layers])


def effective_parameters(encoder) -> int:
    """Parameters of the transformer layers that still count: gated-off heads and neurons, masked
    weights and already-sliced units excluded (embeddings and pooler are not units)."""
    layers = encoder_layers(encoder.backbone)
    total = sum(p.numel() for p in layers.parameters())
    if encoder.masks is not None:
        return total - sum(int((~encoder.masks.mask(k)).sum()) for k in encoder.masks.linears)
    if encoder.gates is None:
        return total
    gates = encoder.gates
    for layer, head_gate, neuron_gate, layer_gate in zip(layers, gates.heads, gates.neurons, gates.layers):
        if layer_gate == 0:
            total -= sum(p.numel() for p in layer.parameters())
            continue
        per_head, per_neuron = parameters_per_unit(layer)
        total -= int((head_gate == 0).sum()) * per_head + int((neuron_gate == 0).sum()) * per_neuron
    return total


def counted_parameters(encoder) -> int:
    """Parameters of the whole encoder (embeddings and pooler included) that still count."""
    every = sum(p.numel() for p in encoder.parameters())
    layers = sum(p.numel() for p in encoder_layers(encoder.backbone).parameters())
    return every - layers + effective_parameters(encoder)


@dataclass(frozen=True)
class Sparsity:
    """What pruning has left of an encoder's transformer layers: what an event or a sparsification
    reached. A sparsity is None where the encoder's granularity has no such unit."""

    parameters: int  # the transformer layers' parameters that still count
    weight_sparsity: float | None = None  # share of the prunable Linear weights masked (unstructured)
    head_sparsity: float | None = None  # share of the heads removed (structured)
    ffn_sparsity: float | None = None  # share of the FFN neurons removed (structured)
    layers: int | None = None  # transformer layers kept (structured)
    heads: tuple[int, ...] = ()  # heads kept, per layer
    neurons: tuple[int, ...] = ()  # FFN neurons kept, per layer

    def metrics(self) -> dict[str, float]:
        """As the loggers and results.json's `sparsity` record it: `prune/...` keys, the names the
        dashboards and the run folders written so far use."""
        metrics = {"prune/encoder_parameters": float(self.parameters)}
        for name in ("weight_sparsity", "head_sparsity", "ffn_sparsity", "layers"):
            if (value := getattr(self, name)) is not None:
                metrics[f"prune/{name}"] = float(value)
        for i, (h, n) in enumerate(zip(self.heads, self.neurons)):
            metrics[f"prune/heads_layer{i}"], metrics[f"prune/neurons_layer{i}"] = float(h), float(n)
        return metrics


def sparsity_summary(encoder) -> Sparsity:
    """What the encoder's gates or masks leave: overall sparsities, kept units per layer (a gated-off
    layer counts what its gates keep), parameters."""
    parameters = effective_parameters(encoder)
    if encoder.masks is not None:
        return Sparsity(parameters, weight_sparsity=encoder.masks.sparsity())
    if encoder.gates is None:
        return Sparsity(parameters)
    counts, gates = encoder.gates.counts(), encoder.gates
    return Sparsity(
        parameters,
        head_sparsity=1.0 - sum(counts["heads"]) / sum(g.numel() for g in gates.heads),
        ffn_sparsity=1.0 - sum(counts["neurons"]) / sum(g.numel() for g in gates.neurons),
        layers=len(gates.kept_layers()),
        heads=tuple(counts["heads"]),
        neurons=tuple(counts["neurons"]),
    )


def sliced_summary(encoder) -> Sparsity:
    """The same for an encoder whose removed units and layers are already sliced out: each remaining
    layer's heads and FFN neurons as it now is, sparsities against those layers' dense sizes (the
    config's), the layers left and the parameters."""
    config = encoder.backbone.config
    counts = [layer_structure(layer) for layer in encoder_layers(encoder.backbone)]
    dense_heads, dense_ffn = config.num_attention_heads, ffn_size(config)
    return Sparsity(
        effective_parameters(encoder),
        head_sparsity=1.0 - sum(h for h, _ in counts) / (len(counts) * dense_heads),
        ffn_sparsity=1.0 - sum(n for _, n in counts) / (len(counts) * dense_ffn),
        layers=len(counts),
        heads=tuple(h for h, _ in counts),
        neurons=tuple(n for _, n in counts),
    )
