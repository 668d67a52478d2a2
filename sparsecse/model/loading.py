"""Loading what users point us at, safely: model configs, tokenizers and backbones from safetensors
with classes from transformers or this package only (a model's own code never runs), and
checkpoints through torch.load(weights_only=True). Every refusal is a one-line ConfigError."""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from sparsecse.architecture.layout import SPARSE_PREFIX, SUPPORTED_MODEL_TYPES, architecture
from sparsecse.architecture.surgery import DENSE_CLASSES, SPARSE_CLASSES, pooling_layer_kwargs, register
from sparsecse.core.errors import ConfigError
from sparsecse.core.paths import resolve_model_path

# here rather than in the package's __init__, so that tools which load no model (sparsecse-report)
# do not pay for importing transformers
register()  # AutoConfig/AutoModel know the sparsecse_* model types
# Our own model types: loaded by the classes registered above, never by the code an export ships.
OWN_MODEL_TYPES = tuple(config_class.model_type for config_class, _ in SPARSE_CLASSES.values())
SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
PICKLE_SUFFIXES = (".bin", ".bin.index.json", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def check_supported(config, key: str = "name_or_path") -> None:
    """The one check of the model type: a model whose layers SparseCSE cannot find its units in is one
    line naming it and the types it can."""
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        supported = ", ".join(t for t in SUPPORTED_MODEL_TYPES if not t.startswith(SPARSE_PREFIX))
        name = getattr(config, "name_or_path", "") or "the model"
        raise ConfigError(key, f"{name!r} is a {config.model_type!r} model; supported: {supported}")


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
    check_supported(config)
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


def attention_for(config, requested: str) -> str:
    """`sdpa` falls back to `eager` for an architecture transformers gives no SDPA attention (MPNet):
    the same attention, computed step by step, so the embeddings do not change."""
    if requested == "sdpa" and not DENSE_CLASSES[architecture(config)]._supports_sdpa:
        return "eager"
    return requested


ANSI = re.compile(r"\x1b\[[0-9;]*m")


class UnusedPoolerReport(logging.Filter):
    """Drops transformers' load report when all it reports is the checkpoint's pooler weights left
    unused, as they are when the backbone is built without its pooler (every pooler but BERT's `cls`
    with its MLP): nothing a user can act on. A report of anything else passes whole."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = ANSI.sub("", record.getMessage())
        if "LOAD REPORT" not in text:
            return True
        rows = [[cell.strip() for cell in line.split("|")] for line in text.splitlines() if "|" in line]
        rows = [row for row in rows[1:] if row[0] and not set(row[0]) <= {"-", "+"}]  # past the header
        return not rows or not all(
            key.startswith("pooler.") and status == "UNEXPECTED" for key, status, *_ in rows
        )


def load_backbone(
    name_or_path: str, config, add_pooling_layer: bool, attn_implementation: str
) -> PreTrainedModel:
    """The backbone's safetensors weights, with classes from transformers or this package only."""
    try:
        return _from_pretrained(name_or_path, config, add_pooling_layer, attn_implementation)
    except OSError as err:
        if "safetensors" not in str(err):
            raise
        raise ConfigError("name_or_path", f"model {name_or_path!r} has no safetensors weights") from None


def _from_pretrained(name_or_path: str, config, add_pooling_layer: bool, attn_implementation: str):
    report = logging.getLogger("transformers.modeling_utils")
    quiet = UnusedPoolerReport()
    report.addFilter(quiet)
    try:
        return AutoModel.from_pretrained(
            resolve_model_path(name_or_path),
            config=config,
            **pooling_layer_kwargs(config, add_pooling_layer),
            attn_implementation=attention_for(config, attn_implementation),
            use_safetensors=True,
            trust_remote_code=False,
        )
    finally:
        report.removeFilter(quiet)


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
