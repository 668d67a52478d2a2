"""The sentence encoder: a BERT/RoBERTa backbone, a SimCSE pooler and the training-time MLP."""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import torch
from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from sparsecse.constraints import OneOf, check_value
from sparsecse.errors import ConfigError
from sparsecse.modeling_sparsecse import SPARSE_CLASSES, register
from sparsecse.paths import resolve_model_path

# here rather than in the package's __init__, so that tools which load no model (sparsecse-report)
# do not pay for importing transformers
register()  # AutoConfig/AutoModel know sparsecse_bert and sparsecse_roberta

# SimCSE's poolers (Gao et al. 2021, Sec. 6.3 / evaluation.py): `cls` is [CLS] through the MLP
# (stored as the backbone's pooler, as SimCSE's simcse_to_huggingface.py does), the rest are
# parameter-free.
POOLERS = ("cls", "cls_before_pooler", "avg", "avg_first_last", "avg_top2")
Pooler = Annotated[str, OneOf(*POOLERS, noun="pooler")]
SUPPORTED_MODEL_TYPES = ("bert", "roberta", "sparsecse_bert", "sparsecse_roberta")
CHECKPOINT_KEY = "sparsecse_encoder"  # entry of a Lightning checkpoint that describes the encoder
# Our own model types: loaded by the classes registered above, never by the code an export ships.
OWN_MODEL_TYPES = tuple(config_class.model_type for config_class, _ in SPARSE_CLASSES.values())
SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
PICKLE_SUFFIXES = (".bin", ".bin.index.json", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def check_pooler(pooler: str) -> None:
    check_value("pooler", pooler, Pooler)


def load_config(name_or_path: str):
    """The model's config, or a one-line error naming the model (before any weights load).

    Also refuses what SparseCSE will not load: a model that brings its own code, pickle weights.
    """
    path = resolve_model_path(name_or_path)
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    except (OSError, ValueError) as err:
        if "trust_remote_code" in str(err):
            raise ConfigError("name_or_path", f"{_own_code(name_or_path)} (config.json auto_map)") from None
        raise ConfigError(
            "name_or_path",
            f"cannot load model {name_or_path!r}: not a local model directory, and not on the "
            f"Hugging Face hub (or the hub is unreachable) [{type(err).__name__}]",
        ) from None
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise ConfigError(
            "name_or_path",
            f"model {name_or_path!r} is a {config.model_type!r} model; "
            f"supported: {', '.join(SUPPORTED_MODEL_TYPES)}",
        )
    check_no_custom_code(name_or_path, config)
    check_safetensors(name_or_path, config)
    return config


def _own_code(name_or_path: str) -> str:
    return f"model {name_or_path!r} needs its own Python code to load; SparseCSE never runs a model's code"


def check_no_custom_code(name_or_path: str, config) -> None:
    """Refuse a config whose `auto_map` sends AutoConfig/AutoModel to the model's own code.

    Loading it as the plain `model_type` would silently give another model; our own types are exempt
    (their `auto_map` is for users without this package; here the registered classes load them).
    """
    auto_map = getattr(config, "auto_map", None) or {}
    custom = [auto_map[name] for name in ("AutoModel", "AutoConfig") if name in auto_map]
    if custom and config.model_type not in OWN_MODEL_TYPES:
        raise ConfigError(
            "name_or_path",
            f"{_own_code(name_or_path)} ({custom[0]} in config.json auto_map); "
            f"delete auto_map to load it as a plain {config.model_type!r} model",
        )


def check_safetensors(name_or_path: str, config) -> None:
    """A local model directory must hold safetensors weights: pickle weights (torch.load) are refused.

    Hub models are held to the same by `use_safetensors=True` in `load_backbone`.
    """
    named = getattr(config, "transformers_weights", None)  # config.json may name the weights file
    if named is not None and not str(named).endswith((".safetensors", ".safetensors.index.json")):
        raise ConfigError(
            "name_or_path", f"model {name_or_path!r}: config.json names non-safetensors weights {named!r}"
        )
    path = Path(resolve_model_path(name_or_path))
    if not path.is_dir() or any((path / name).is_file() for name in SAFE_WEIGHTS):
        return
    pickles = sorted(p.name for p in path.iterdir() if p.name.endswith(PICKLE_SUFFIXES))
    if not pickles:
        raise ConfigError("name_or_path", f"{path} has no model.safetensors")
    raise ConfigError(
        "name_or_path",
        f"{path} holds pickle weights ({pickles[0]}); SparseCSE loads safetensors only - if you trust "
        "the file, convert it with AutoModel.from_pretrained(dir).save_pretrained(dir)",
    )


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    try:
        return AutoTokenizer.from_pretrained(resolve_model_path(name_or_path), trust_remote_code=False)
    except ValueError as err:
        if "trust_remote_code" not in str(err):
            raise
        raise ConfigError("name_or_path", f"{_own_code(name_or_path)} (tokenizer auto_map)") from None


def load_backbone(
    name_or_path: str, config, add_pooling_layer: bool, attn_implementation: str
) -> PreTrainedModel:
    """The backbone's safetensors weights, with classes from transformers or this package only."""
    try:
        return AutoModel.from_pretrained(
            resolve_model_path(name_or_path),
            config=config,
            add_pooling_layer=add_pooling_layer,
            attn_implementation=attn_implementation,
            use_safetensors=True,
            trust_remote_code=False,
        )
    except OSError as err:
        if "safetensors" not in str(err):
            raise
        raise ConfigError("name_or_path", f"model {name_or_path!r} has no safetensors weights") from None


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

    def forward(self, input_ids: Tensor, attention_mask: Tensor, **inputs: Tensor) -> Tensor:
        """(B, T) token ids -> (B, H) sentence embeddings."""
        needs_layers = self.pooler in ("avg_first_last", "avg_top2")
        out = self.backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            output_hidden_states=needs_layers,
            **inputs,
        )
        if self.pooler == "cls":
            if self.training or not self.mlp_only_train:
                return out.pooler_output
            return out.last_hidden_state[:, 0]
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

    @torch.inference_mode()
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
        for start in tqdm(starts, desc="encode", disable=not show_progress, leave=False):
            idx = order[start : start + batch_size]
            batch = self.tokenize([texts[i] for i in idx], max_length)
            batch = {k: v.to(self.device) for k, v in batch.items()}
            out[idx] = self(**batch).float().cpu()
        self.train(was_training)
        return out

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


def load_checkpoint_file(path: str | Path, key: str) -> dict:
    """A checkpoint read with torch.load(weights_only=True); a missing, unreadable or refused file is a
    one-line ConfigError on `key` naming it (a pickle that would build objects is never run)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(key, f"no such checkpoint {path}")
    try:
        with warnings.catch_warnings():  # plain pickle.dump files: "Detected pickle protocol 4 ..."
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any unreadable file: torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise ConfigError(key, _unreadable(path, err)) from None
    if not isinstance(checkpoint, dict):
        raise ConfigError(key, f"{path} holds a {type(checkpoint).__name__}, not a checkpoint dict")
    return checkpoint


def _unreadable(path: Path, err: Exception) -> str:
    text = str(err)
    if "Weights only load failed" not in text:
        first = text.strip().split("\n")[0].split(". ")[0]  # torch's zip errors run on for sentences
        why = f"{type(err).__name__}: {first}" if first else type(err).__name__
        return f"{path} is not a readable PyTorch checkpoint ({why})"
    found = re.search(r"WeightsUnpickler error:\s*([^\n]*?)(?: was not an allowed global|\.?\s*\n|$)", text)
    why = f": {found.group(1)}" if found and found.group(1) else ""
    return (
        f"{path} is not a plain-tensor checkpoint and was refused (torch.load(weights_only=True){why}); "
        "SparseCSE does not unpickle objects other than tensors and containers"
    )


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
    prefix = "encoder.backbone."
    state = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if pooler != "cls":  # the MLP is not part of this encoder
        state = {k: v for k, v in state.items() if not k.startswith("pooler.")}
    backbone.load_state_dict(state)
    encoder = SentenceEncoder(backbone, load_tokenizer(meta["name_or_path"]), pooler, meta["mlp_only_train"])
    encoder.name_or_path = meta["name_or_path"]
    return encoder


def load_encoder(model: str, pooler: str, attn_implementation: str = "sdpa") -> SentenceEncoder:
    """A name, a model directory, or a project Lightning checkpoint (`*.ckpt`) -> encoder."""
    check_pooler(pooler)
    if (Path(model).expanduser() / "sparsecse.json").is_file():  # exported by this project
        from sparsecse.export import load_sparse_encoder

        return load_sparse_encoder(model, pooler, attn_implementation=attn_implementation)
    if not str(model).endswith(".ckpt"):
        return SentenceEncoder.from_pretrained(model, pooler, attn_implementation=attn_implementation)
    return encoder_from_checkpoint(model, pooler, attn_implementation)
