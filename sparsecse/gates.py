"""Head and FFN-neuron gates (METHOD.md section 3) as forward pre-hooks, for any attention kernel.

transformers 5 has no `head_mask` (an unknown keyword is silently ignored) and no `prune_heads`, so
a gate multiplies its unit's slice of the input of the layer's output projection: a head's slice of
the concatenated attention context before `attention.output.dense`, a neuron's activation before
`output.dense`. With every gate at 1 the output is the plain model's, bit for bit.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def encoder_layers(backbone: nn.Module) -> nn.ModuleList:
    """The transformer layers of a BERT/RoBERTa backbone."""
    return backbone.encoder.layer


def head_size(layer: nn.Module) -> int:
    return layer.attention.self.attention_head_size


class UnitGates(nn.Module):
    """One gate per attention head (`head_{l}`, shape (H_l,)) and per FFN neuron (`neuron_{l}`,
    shape (F_l,)), kept as buffers so that checkpoints carry them and optimizers never touch them."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        layers = encoder_layers(backbone)
        self.num_layers = len(layers)
        for i, layer in enumerate(layers):
            heads = layer.attention.self.query.out_features // head_size(layer)
            self.register_buffer(f"head_{i}", layer.attention.self.query.weight.new_ones(heads).float())
            self.register_buffer(f"neuron_{i}", layer.intermediate.dense.weight.new_ones(
                layer.intermediate.dense.out_features).float())  # fmt: skip
        self._handles = []
        for i, layer in enumerate(layers):
            head_gate = _GateHeads(self, i, head_size(layer))
            self._handles.append(layer.attention.output.dense.register_forward_pre_hook(head_gate))
            self._handles.append(layer.output.dense.register_forward_pre_hook(_GateNeurons(self, i)))

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
    """Pre-hook of `attention.output.dense`. A class, not a closure, so that models with gates
    pickle (DDP spawn sends the model to its workers)."""

    def __init__(self, gates: UnitGates, index: int, size: int):
        self.gates, self.index, self.size = gates, index, size

    def __call__(self, module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        context = args[0]  # (B, T, H_l * d)
        gate = getattr(self.gates, f"head_{self.index}").to(context.dtype)  # late: .to() swaps buffers
        heads = context.unflatten(-1, (-1, self.size))  # (B, T, H_l, d)
        return ((heads * gate[:, None]).flatten(-2), *args[1:])


class _GateNeurons:
    """Pre-hook of the FFN's `output.dense`."""

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
