"""The sentence encoder: a BERT/RoBERTa backbone, a SimCSE pooler and the training-time MLP."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from sparsecse.errors import ConfigError
from sparsecse.gates import UnitGates, WeightMasks
from sparsecse.loading import (
    SUPPORTED_MODEL_TYPES,
    load_backbone,
    load_checkpoint_file,
    load_config,
    load_tokenizer,
)
from sparsecse.pruning import remove_pruned_units
from sparsecse.validation import check_value

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
        self.gates = None  # UnitGates, attached by a structured Sparsifier
        self.masks = None  # WeightMasks, attached by an unstructured Sparsifier
        self.compiled_forward = None  # set by compile_for_inference

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        pooler: Pooler = "cls",
        mlp_only_train: bool = False,
        reinit_mlp: bool = False,
        attn_implementation: str = "sdpa",
    ) -> SentenceEncoder:
        """Load any BERT/RoBERTa name or path (or `minilm`).

        `reinit_mlp` draws the MLP afresh, as SimCSE does (its MLPLayer is not in the checkpoint).
        """
        check_pooler(pooler)
        config = load_config(name_or_path)
        backbone = load_backbone(name_or_path, config, pooler == "cls", attn_implementation)
        encoder = cls(backbone, load_tokenizer(name_or_path), pooler, mlp_only_train)
        encoder.name_or_path = name_or_path
        if reinit_mlp and pooler == "cls":
            encoder.reset_mlp()
        return encoder

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
        self, input_ids: Tensor, attention_mask: Tensor, evaluated: bool = False, **inputs: Tensor
    ) -> Tensor:
        """(B, T) token ids -> (B, H) sentence embeddings. `evaluated`: the embedding evaluation and
        export use, also in training mode (with dropout): `cls` without the MLP under `mlp_only_train`."""
        needs_layers = self.pooler in ("avg_first_last", "avg_top2")
        out = self.backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            output_hidden_states=needs_layers,
            **inputs,
        )
        if self.pooler == "cls":
            with_mlp = not self.mlp_only_train or (self.training and not evaluated)
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
        launch-bound on a GPU (issue 6: sliced MiniLM 0.85x dense in eager mode, 1.58x with CUDA graphs).
        Call it after any surgery; a changed shape would recompile."""
        options = {"mode": mode} if backend == "inductor" else {}
        self.compiled_forward = torch.compile(self.forward, backend=backend, dynamic=False, **options)

    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = 128,
        max_length: int | None = None,
        show_progress: bool = False,
    ) -> Tensor:
        """(N,) texts -> (N, H) float32 embeddings on the CPU, in input order.

        Texts are batched by token length so that each batch pads little.
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
            for start in tqdm(starts, desc="encode", disable=not show_progress, leave=False):
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


def encoder_from_checkpoint(path: str, pooler: str, attn_implementation: str = "sdpa") -> SentenceEncoder:
    """A project Lightning checkpoint (`*.ckpt`) -> encoder, from its plain tensors and description."""
    checkpoint = load_checkpoint_file(path, "model")
    meta, state_dict = checkpoint.get(CHECKPOINT_KEY), checkpoint.get("state_dict")
    if not (isinstance(meta, dict) and isinstance(meta.get("config"), dict) and isinstance(state_dict, dict)):
        raise ConfigError("model", f"{path} is not a SparseCSE checkpoint (no {CHECKPOINT_KEY!r} entry)")
    model_type = meta["config"].get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        supported = ", ".join(SUPPORTED_MODEL_TYPES)
        raise ConfigError("model", f"{path} holds a {model_type!r} model; supported: {supported}")
    config = AutoConfig.for_model(**meta["config"])
    config._attn_implementation = attn_implementation
    backbone = AutoModel.from_config(config, add_pooling_layer=pooler == "cls", trust_remote_code=False)
    state = _entries(state_dict, "encoder.backbone.")
    if pooler != "cls":  # the MLP is not part of this encoder
        state = {k: v for k, v in state.items() if not k.startswith("pooler.")}
    backbone.load_state_dict(state)
    encoder = SentenceEncoder(backbone, load_tokenizer(meta["name_or_path"]), pooler, meta["mlp_only_train"])
    encoder.name_or_path = meta["name_or_path"]
    _apply_sparsity(encoder, state_dict)
    return encoder


def _entries(state_dict: dict, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


def _apply_sparsity(encoder: SentenceEncoder, state_dict: dict) -> None:
    """The gates (sliced out) or weight masks (zeroed) a checkpoint taken after a pruning event holds:
    without them the encoder would be the dense backbone, not the one that was trained."""
    gates, masks = _entries(state_dict, "encoder.gates."), _entries(state_dict, "encoder.masks.")
    if gates:
        encoder.gates = UnitGates(encoder.backbone)
        encoder.gates.load_state_dict(gates)
    if masks:
        encoder.masks = WeightMasks(encoder.backbone)
        encoder.masks.load_state_dict(masks)
    remove_pruned_units(encoder)


def load_encoder(model: str, pooler: str, attn_implementation: str = "sdpa") -> SentenceEncoder:
    """A name, a model directory, or a project Lightning checkpoint (`*.ckpt`) -> encoder."""
    check_pooler(pooler)
    if (Path(model).expanduser() / "sparsecse.json").is_file():  # exported by this project
        from sparsecse.export import load_sparse_encoder

        return load_sparse_encoder(model, pooler, attn_implementation=attn_implementation)
    if not str(model).endswith(".ckpt"):
        return SentenceEncoder.from_pretrained(model, pooler, attn_implementation=attn_implementation)
    return encoder_from_checkpoint(model, pooler, attn_implementation)
