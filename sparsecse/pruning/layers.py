"""Layer dropping: a shallower encoder made by removing whole transformer layers, the baseline a
pruned encoder must beat at equal speed (METHOD.md section 7).

Two ways to choose the layers kept: evenly spaced, as sentence-transformers' model-distillation
recipe keeps layers of the teacher; or by the alignment/uniformity importance of each layer: how much
l_align and l_uniform change when the layer is skipped, measured on the scoring batches (no anchor
does this; docs/compression.md says whether it helps). Measured, not estimated from the gradient of
a gate on the layer's residual update as heads and neurons are: removing a layer is no small change,
and on MiniLM the first-order estimate put the first layer last (a change of 0.024 in
l_align + l_uniform) where skipping it changes them by 0.84, the second most (METHOD.md section 8).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import torch
from torch import Tensor, nn

from sparsecse.architecture.layout import architecture, encoder_layers
from sparsecse.core.errors import ConfigError
from sparsecse.core.seeding import forked_rng
from sparsecse.core.validation import PositiveInt, checked
from sparsecse.pruning.gates import hidden_input, hidden_of, with_hidden
from sparsecse.pruning.importance import GradientStats, Scorer, pair_losses

LayerChoice = Literal["evenly", "importance"]
DROPPABLE = ("bert", "roberta")  # the layer count is config.num_hidden_layers, and layers are alike


class LayerDrop:
    """Which layers a shallower encoder keeps: `keep` of them (null: all), chosen `evenly` or by
    `importance`."""

    @checked
    def __init__(self, keep: PositiveInt | None = None, choose: LayerChoice = "evenly"):
        self.keep, self.choose = keep, choose

    def check_model(self, config) -> None:
        """Before anything loads: the model's architecture can lose layers, and has `keep` of them."""
        if self.keep is None:
            return
        check_droppable(config, "keep")
        check_keep(config.num_hidden_layers, self.keep)

    def kept(self, encoder: nn.Module, batches: Iterable[dict[str, Tensor]], scorer: Scorer) -> list[int]:
        """The layer indices to keep; `batches` are read only to choose by importance."""
        total = len(encoder_layers(encoder.backbone))
        if self.keep is not None:
            check_keep(total, self.keep)
        if self.keep is None or self.keep == total:
            return list(range(total))
        if self.choose == "evenly":
            return evenly_spaced(total, self.keep)
        return most_important(layer_importance(encoder, batches, scorer), self.keep)


def check_droppable(config, key: str) -> None:
    kind = architecture(config)
    if kind not in DROPPABLE:
        raise ConfigError(key, f"dropping layers of {kind} models is not supported; supported: {DROPPABLE}")


def check_keep(total: int, keep: int) -> None:
    if not 1 <= keep <= total:
        raise ConfigError("keep", f"must be between 1 and the model's {total} layers, got {keep}")


def evenly_spaced(total: int, keep: int) -> list[int]:
    """`keep` of `total` layer indices spread evenly, the first and last included (keep >= 2)."""
    check_keep(total, keep)
    if keep == 1:
        return [total - 1]
    return sorted({round(i * (total - 1) / (keep - 1)) for i in range(keep)})


class _LayerGate:
    """Forward hook: a layer's output h_in + g (layer(h_in) - h_in); g = 1 leaves it unchanged and
    g = 0 skips the layer, so dl/dg at 1 is the first-order effect of removing it."""

    def __init__(self, gate: Tensor):
        self.gate = gate

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict, output):
        hidden_in, hidden_out = hidden_input(args, kwargs), hidden_of(output)
        return with_hidden(output, hidden_in + self.gate.to(hidden_out.dtype) * (hidden_out - hidden_in))


def removal_stats(encoder: nn.Module, batches: Iterable[dict[str, Tensor]]) -> GradientStats:
    """Per layer, the change of l_align and l_uniform when it is skipped, measured on `batches` of
    (V, B, T) positive pairs: each batch runs whole and with each layer skipped, every run with the
    same dropout seed (drawn from the process's random state, which is restored after). Stored as the
    gradient statistics a Scorer reads (align = -sum_b dl_align, abs_align = sum_b |dl_align|, alike
    for uniformity), so that the Scorer's first-order estimate of a change, -g, is the measured one."""
    batches = list(batches)
    seeds = torch.randint(2**62, (len(batches),)).tolist()
    device, was_training = encoder.device, encoder.training
    encoder.train()  # the unsupervised positives are dropout views, as in scoring
    try:
        with torch.no_grad(), forked_rng(device), layer_gates(encoder) as gates:
            stats = GradientStats.zeros_like(gates)
            for batch, seed in zip(batches, seeds):
                batch = {k: v.to(device) for k, v in batch.items()}
                whole = _seeded_losses(encoder, batch, seed)
                changes = []
                for gate in gates:
                    gate.fill_(0.0)
                    skipped = _seeded_losses(encoder, batch, seed)
                    changes.append([kept - gone for kept, gone in zip(whole, skipped)])  # -dl
                    gate.fill_(1.0)
                stats.add([align for align, _ in changes], [uniform for _, uniform in changes])
    finally:
        encoder.train(was_training)
    return stats.summed()


def _seeded_losses(encoder: nn.Module, batch: dict[str, Tensor], seed: int) -> tuple[Tensor, Tensor]:
    torch.manual_seed(seed)
    return pair_losses(encoder, batch)


def layer_importance(encoder: nn.Module, batches: Iterable[dict[str, Tensor]], scorer: Scorer) -> Tensor:
    """(L,) importance of each transformer layer: the measured change of l_align and l_uniform when
    it is skipped (`removal_stats`), scored by `scorer` (METHOD.md 4)."""
    like = [torch.ones(()) for _ in encoder_layers(encoder.backbone)]
    scores = scorer.scores(
        {"layers": like}, lambda: removal_stats(encoder, batches), torch.Generator().manual_seed(0)
    )
    return torch.stack(scores["layers"])


@contextmanager
def layer_gates(encoder: nn.Module) -> Iterator[list[Tensor]]:
    """One gate per transformer layer on its residual update (all 1: the model unchanged), hooked on
    while the block runs: the units whose gradients score whole layers."""
    layers = encoder_layers(encoder.backbone)
    gates = [torch.ones((), device=encoder.device) for _ in layers]
    hooks = [layer.register_forward_hook(_LayerGate(g), with_kwargs=True) for layer, g in zip(layers, gates)]
    try:
        yield gates
    finally:
        for hook in hooks:
            hook.remove()


def most_important(importance: Tensor, keep: int) -> list[int]:
    """The `keep` layers of highest importance, in model order."""
    return sorted(torch.sort(importance, descending=True, stable=True).indices[:keep].tolist())


def drop_layers(encoder: nn.Module, kept: Sequence[int]) -> None:
    """Keep only the transformer layers `kept` (indices, any order given), in model order. The
    backbone stays its own class: a dense BERT stays a BERT that loads without this project; a
    sliced one keeps its kept heads and neurons for the layers that remain."""
    backbone = encoder.backbone
    check_droppable(backbone.config, "model")
    layers = encoder_layers(backbone)
    kept = sorted(set(kept))
    if not kept or kept[0] < 0 or kept[-1] >= len(layers):
        raise ConfigError("keep", f"layer indices must be in 0..{len(layers) - 1}, got {kept}")
    backbone.encoder.layer = nn.ModuleList(layers[i] for i in kept)
    config = backbone.config
    config.num_hidden_layers = len(kept)
    for key in ("kept_heads", "kept_neurons"):
        if getattr(config, key, None) is not None:
            setattr(config, key, [getattr(config, key)[i] for i in kept])
