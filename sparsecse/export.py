"""Export a (sparse) encoder as a Hugging Face model directory that is also a sentence-transformers model.

The directory holds the backbone (safetensors), the tokenizer, `sparsecse.json` (pooler and
`mlp_only_train`, for this project's loader) and the sentence-transformers files, written by hand in
the long-standing format (`sentence_transformers.models.*`) so that exporting needs no
sentence-transformers install. A sparse backbone also gets a copy of `modeling_sparsecse.py` and a
config `auto_map`, so `AutoModel` / `SentenceTransformer(dir, trust_remote_code=True)` load it where
this package is absent; this package loads it with its registered classes and never runs that copy.
Weights are written as safetensors only.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from sparsecse import modeling_sparsecse
from sparsecse.encoder import SentenceEncoder, check_pooler
from sparsecse.errors import ConfigError
from sparsecse.loading import PICKLE_SUFFIXES, load_backbone, load_config, load_tokenizer
from sparsecse.surgery import apply_gates, is_sparse, structure

SPARSECSE_FILE = "sparsecse.json"
MODELING_FILE = Path(modeling_sparsecse.__file__).name
ST_TANH = "torch.nn.modules.activation.Tanh"


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _pooling(hidden: int, mean: bool) -> dict:
    return {
        "word_embedding_dimension": hidden,
        "pooling_mode_cls_token": not mean,
        "pooling_mode_mean_tokens": mean,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": False,
        "include_prompt": True,
    }


def st_modules(encoder: SentenceEncoder) -> list[tuple[str, dict, dict[str, torch.Tensor] | None]]:
    """The sentence-transformers modules after the Transformer: (type, config, weights) each.

    `avg_first_last` / `avg_top2` average two hidden layers with WeightedLayerPooling (0/1 weights);
    `cls` in evaluation (no `mlp_only_train`) applies the MLP as a Tanh Dense module.
    """
    hidden, layers = encoder.hidden_size, encoder.backbone.config.num_hidden_layers
    modules = []
    if encoder.pooler in ("avg_first_last", "avg_top2"):
        # SimCSE averages hidden_states[1] and [-1], or [-2] and [-1]; hidden_states[0] = embeddings
        start = 1 if encoder.pooler == "avg_first_last" else layers - 1
        weights = torch.zeros(layers + 1 - start)
        weights[0] = weights[-1] = 1.0
        config = {"word_embedding_dimension": hidden, "layer_start": start, "num_hidden_layers": layers}
        modules.append(("WeightedLayerPooling", config, {"layer_weights": weights}))
    modules.append(("Pooling", _pooling(hidden, mean=encoder.pooler.startswith("avg")), None))
    if encoder.pooler == "cls" and not encoder.mlp_only_train:
        dense = encoder.backbone.pooler.dense
        config = {"in_features": hidden, "out_features": hidden, "bias": True, "activation_function": ST_TANH}
        weights = {"linear.weight": dense.weight, "linear.bias": dense.bias}
        modules.append(
            ("Dense", config, {k: v.detach().float().cpu().contiguous() for k, v in weights.items()})
        )
    return modules


def max_seq_length(encoder: SentenceEncoder) -> int:
    """The longest input the position embeddings allow (RoBERTa's positions start after the padding id)."""
    config = encoder.backbone.config
    limit = config.max_position_embeddings
    if "roberta" in config.model_type:
        limit -= config.pad_token_id + 1
    return int(min(limit, encoder.tokenizer.model_max_length))


def write_sentence_transformers(encoder: SentenceEncoder, directory: Path) -> None:
    modules = st_modules(encoder)
    st_config = {"max_seq_length": max_seq_length(encoder), "do_lower_case": False}
    if getattr(encoder.backbone, "pooler", None) is None:  # saved without the MLP: don't build one
        st_config["model_args"] = {"add_pooling_layer": False}
    if modules[0][0] == "WeightedLayerPooling":
        st_config["config_args"] = {"output_hidden_states": True}  # ST then passes on all layers
    _write_json(directory / "sentence_bert_config.json", st_config)
    entries = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]
    for idx, (kind, config, weights) in enumerate(modules, start=1):
        path = f"{idx}_{kind}"
        entries.append(
            {"idx": idx, "name": str(idx), "path": path, "type": f"sentence_transformers.models.{kind}"}
        )
        _write_json(directory / path / "config.json", config)
        if weights is not None:
            save_file(weights, directory / path / "model.safetensors")
    (directory / "modules.json").write_text(json.dumps(entries, indent=2) + "\n")
    _write_json(
        directory / "config_sentence_transformers.json", {"similarity_fn_name": "cosine", "prompts": {}}
    )


def add_remote_code(directory: Path, model_type: str) -> None:
    """Copy the model code next to the weights and point AutoConfig/AutoModel at it."""
    shutil.copyfile(modeling_sparsecse.__file__, directory / MODELING_FILE)
    config_class, model_class = next(
        classes
        for classes in modeling_sparsecse.SPARSE_CLASSES.values()
        if classes[0].model_type == model_type
    )
    module = MODELING_FILE.removesuffix(".py")
    config = json.loads((directory / "config.json").read_text())
    config["auto_map"] = {
        "AutoConfig": f"{module}.{config_class.__name__}",
        "AutoModel": f"{module}.{model_class.__name__}",
    }
    _write_json(directory / "config.json", config)


def check_no_pickles(directory: Path) -> None:
    """An export holds safetensors weights only: refuse a directory with pickle files from elsewhere."""
    files = [*directory.glob("*"), *directory.glob("*/*")]  # the layout is at most one folder deep
    pickles = sorted(str(p.relative_to(directory)) for p in files if p.name.endswith(PICKLE_SUFFIXES))
    if pickles:
        raise ConfigError("output_dir", f"{directory} already holds pickle files ({', '.join(pickles)})")


def save_sparse_encoder(encoder: SentenceEncoder, directory: str | Path) -> Path:
    """Write the encoder as a Hugging Face + sentence-transformers model directory.

    Gates still attached to the encoder are made physical first (the encoder is changed in place;
    its embeddings do not change).
    """
    check_no_pickles(Path(directory))
    apply_gates(encoder)
    directory = encoder.save_pretrained(directory)
    backbone = encoder.backbone
    if is_sparse(backbone.config):
        add_remote_code(directory, backbone.config.model_type)
    write_sentence_transformers(encoder, directory)
    meta = {
        "pooler": encoder.pooler,
        "mlp_only_train": encoder.mlp_only_train,
        "name_or_path": encoder.name_or_path,
    }
    _write_json(directory / SPARSECSE_FILE, {**meta, "structure": structure(backbone)})
    return directory


def load_sparse_encoder(
    directory: str | Path,
    pooler: str | None = None,
    mlp_only_train: bool | None = None,
    attn_implementation: str = "sdpa",
) -> SentenceEncoder:
    """An exported directory -> SentenceEncoder; pooler and `mlp_only_train` default to sparsecse.json."""
    directory = Path(directory)
    meta_file = directory / SPARSECSE_FILE
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    pooler = pooler or meta.get("pooler")
    if pooler is None:
        raise ConfigError("pooler", f"{directory} has no {SPARSECSE_FILE}; name the pooler")
    check_pooler(pooler)
    mlp_only_train = meta.get("mlp_only_train", False) if mlp_only_train is None else mlp_only_train
    config = load_config(str(directory))  # also refuses pickle weights and foreign model code
    backbone = load_backbone(str(directory), config, pooler == "cls", attn_implementation)
    encoder = SentenceEncoder(backbone, load_tokenizer(str(directory)), pooler, mlp_only_train)
    encoder.name_or_path = str(directory)
    return encoder
