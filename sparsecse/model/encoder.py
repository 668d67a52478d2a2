"""The sentence encoder: a transformer backbone (BERT, RoBERTa, DistilBERT, MPNet or ModernBERT), a
SimCSE pooler and the training-time MLP."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from sparsecse.core.errors import ConfigError
from sparsecse.core.validation import check_value

# SimCSE's poolers (Gao et al. 2021, Sec. 6.3 / evaluation.py): `cls` is [CLS] through the MLP
# (stored as the backbone's pooler, as SimCSE's simcse_to_huggingface.py does), the rest are
# parameter-free.
POOLERS = ("cls", "cls_before_pooler", "avg", "avg_first_last", "avg_top2")
Pooler = Literal[POOLERS]
CHECKPOINT_KEY = "sparsecse_encoder"  # entry of a Lightning checkpoint that describes the encoder
# Padded lengths of a compiled encoder's batches: six shapes, within torch.compile's default limit
# of eight recompiles of one function.
STATIC_LENGTHS = (16, 32, 64, 128, 256, 512)


def static_length(tokens: int) -> int:
    """The smallest of STATIC_LENGTHS that holds `tokens`; longer ones keep their own length."""
    return next((length for length in STATIC_LENGTHS if length >= tokens), tokens)


class UnitGating(Protocol):
    """0/1 gates hooked on the backbone, one per attention head, FFN neuron and transformer layer
    (sparsecse.pruning.gates.UnitGates, a module: saved in the encoder's state dict)."""

    heads: list[Tensor]  # per layer (H_l,)
    neurons: list[Tensor]  # per layer (F_l,)
    layers: list[Tensor]  # per layer ()

    def kept_layers(self) -> list[int]: ...
    def remove_hooks(self) -> None: ...


class WeightMasking(Protocol):
    """0/1 masks of the backbone's prunable weights (sparsecse.pruning.gates.WeightMasks, a module)."""

    def apply_masks(self) -> None: ...
    def sparsity(self) -> float: ...


def check_pooler(pooler: str) -> None:
    check_value("pooler", pooler, Pooler)


def masked_mean(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """(B, T, H), (B, T) -> (B, H): the mean over real tokens, as SimCSE's `avg` pooler."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * mask).sum(1) / mask.sum(1)


class SentenceEncoder(nn.Module):
    """Backbone + pooler. In training, the `cls` pooler goes through the MLP (the backbone's pooler
    layer); with `mlp_only_train` the MLP is dropped at evaluation (SimCSE's unsupervised setting)."""

    def __init__(
        self,
        backbone: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        pooler: str = "cls",
        mlp_only_train: bool = False,
    ):
        super().__init__()
        check_pooler(pooler)
        if pooler == "cls" and getattr(backbone, "pooler", None) is None:
            raise ConfigError("pooler", "`cls` needs the backbone's pooler (MLP) layer")
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.pooler = pooler
        self.mlp_only_train = mlp_only_train
        self.name_or_path = getattr(backbone, "name_or_path", "")
        self.gates: UnitGating | None = None  # attach_gates: structured pruning
        self.masks: WeightMasking | None = None  # attach_masks: unstructured pruning
        self.compiled_forward = None  # set by compile_for_inference

    def attach_gates(self, gates: UnitGating) -> None:
        """Carry `gates` on the encoder's device; an encoder is pruned by gates or by masks, not both."""
        if self.masks is not None:
            raise ValueError("this encoder carries weight masks: it cannot also carry unit gates")
        self.gates = gates.to(self.device)

    def attach_masks(self, masks: WeightMasking) -> None:
        """Carry weight `masks` on the encoder's device (see `attach_gates`)."""
        if self.gates is not None:
            raise ValueError("this encoder carries unit gates: it cannot also carry weight masks")
        self.masks = masks.to(self.device)

    def detach_gates(self) -> UnitGating | None:
        """Take the gates off (their hooks removed): the backbone as it now is, ungated. Returns them."""
        gates, self.gates = self.gates, None
        if gates is not None:
            gates.remove_hooks()
        return gates

    def detach_masks(self) -> WeightMasking | None:
        """Take the masks off; the zeros they made stay in the weights. Returns them."""
        masks, self.masks = self.masks, None
        return masks

    def reset_mlp(self) -> None:
        dense = self.backbone.pooler.dense
        nn.init.normal_(dense.weight, std=self.backbone.config.initializer_range)
        nn.init.zeros_(dense.bias)

    @property
    def hidden_size(self) -> int:
        return self.backbone.config.hidden_size

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, test_time: bool = False, **inputs: Tensor
    ) -> Tensor:
        """(B, T) token ids -> (B, H) sentence embeddings. `test_time`: the embedding evaluation and
        export use, also in training mode (with dropout): `cls` without the MLP under `mlp_only_train`."""
        needs_layers = self.pooler in ("avg_first_last", "avg_top2")
        out = self.backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            output_hidden_states=needs_layers,
            **inputs,
        )
        if self.pooler == "cls":
            with_mlp = not self.mlp_only_train or (self.training and not test_time)
            return out.pooler_output if with_mlp else out.last_hidden_state[:, 0]
        if self.pooler == "cls_before_pooler":
            return out.last_hidden_state[:, 0]
        if self.pooler == "avg":
            return masked_mean(out.last_hidden_state, attention_mask)
        # hidden_states[0] is the embedding layer; SimCSE's evaluation.py averages layer 1 and the
        # last one for `avg_first_last`, the last two for `avg_top2`.
        first, second = (1, -1) if self.pooler == "avg_first_last" else (-2, -1)
        layers = out.hidden_states
        return masked_mean((layers[first] + layers[second]) / 2.0, attention_mask)

    def tokenize(self, texts: Sequence[str], max_length: int | None = None) -> dict[str, Tensor]:
        """Pad to the longest text; truncate only when `max_length` is given."""
        return self.tokenizer(
            list(texts),
            padding=True,
            truncation=max_length is not None,
            max_length=max_length,
            return_tensors="pt",
        )

    def compile_for_inference(self, mode: str | None = "reduce-overhead", backend: str = "inductor") -> None:
        """Make `encode` run a compiled forward on a few static shapes: every batch is padded to
        `batch_size` rows and a length from STATIC_LENGTHS, so each shape compiles (and, with
        `reduce-overhead` on a GPU, is captured as a CUDA graph) once. Why: small and pruned models are
        launch-bound on a GPU (sliced MiniLM measured 0.85x dense in eager mode, 1.58x with CUDA graphs).
        Call it after any surgery; a changed shape would recompile."""
        options = {"mode": mode} if backend == "inductor" else {}
        self.compiled_forward = torch.compile(self.forward, backend=backend, dynamic=False, **options)

    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = 128,
        max_length: int | None = None,
        show_progress: bool | str = False,
    ) -> Tensor:
        """(N,) texts -> (N, H) float32 embeddings on the CPU, in input order.

        Texts are batched by token length so that each batch pads little. `show_progress`: a bar,
        labelled with the string if one is given (`"STS encode"`).
        """
        from tqdm.auto import tqdm

        was_training = self.training
        self.eval()
        lengths = [len(ids) for ids in self.tokenizer(list(texts), truncation=False)["input_ids"]]
        order = sorted(range(len(texts)), key=lambda i: -lengths[i])
        out = torch.empty(len(texts), self.hidden_size)
        starts = range(0, len(order), batch_size)
        # no inference_mode under torch.compile: tensors made there break later compiled training
        # (pytorch/pytorch#135892)
        with torch.no_grad() if self.compiled_forward else torch.inference_mode():
            label = show_progress if isinstance(show_progress, str) else "encode"
            for start in tqdm(starts, desc=label, disable=not show_progress, leave=False):
                idx = order[start : start + batch_size]  # longest first
                batch = [texts[i] for i in idx]
                out[idx] = self._encode_batch(batch, lengths[idx[0]], batch_size, max_length)
        self.train(was_training)
        return out

    def _encode_batch(self, texts: list[str], longest: int, rows: int, max_length: int | None) -> Tensor:
        """(B,) texts, the longest one's token count -> (B, H) float32 embeddings on the CPU."""
        if self.compiled_forward is None:
            batch = self.tokenize(texts, max_length)
            return self(**{k: v.to(self.device) for k, v in batch.items()}).float().cpu()
        length = static_length(min(longest, max_length or longest))
        tokens = self.tokenizer(texts, truncation=max_length is not None, max_length=max_length)
        batch = self.tokenizer.pad(tokens, padding="max_length", max_length=length, return_tensors="pt")
        # (B, T) -> (rows, T): the last row repeated, so that the final batch has the same shape
        batch = {k: torch.cat([v, v[-1:].expand(rows - len(texts), -1)]) for k, v in batch.items()}
        embeddings = self.compiled_forward(**{k: v.to(self.device) for k, v in batch.items()})
        return embeddings[: len(texts)].float().cpu()  # copied before a CUDA graph's next replay

    def describe(self) -> dict:
        """What it takes to rebuild this encoder around a state dict (kept in checkpoints)."""
        return {
            "name_or_path": self.name_or_path,
            "pooler": self.pooler,
            "mlp_only_train": self.mlp_only_train,
            "config": self.backbone.config.to_dict(),
        }

    def save_pretrained(self, directory: str | Path) -> Path:
        """Hugging Face layout (safetensors + config + tokenizer); the MLP is the `pooler` layer."""
        directory = Path(directory)
        self.backbone.save_pretrained(directory, safe_serialization=True)
        self.tokenizer.save_pretrained(directory)
        return directory
