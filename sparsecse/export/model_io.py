"""Encoders in and out of files: one `load_encoder` for every source (a Hugging Face name or directory,
`minilm`, a directory this project exported, a project Lightning checkpoint), and the export.

An export is a Hugging Face model directory that is also a sentence-transformers model: the backbone
(safetensors), the tokenizer, `sparsecse.json` (pooler and `mlp_only_train`, for this loader) and the
sentence-transformers files, written by hand in the long-standing format (`sentence_transformers.models.*`)
so that exporting needs no sentence-transformers install. A sparse backbone also gets a copy of
`surgery.py` and `layout.py` and a config `auto_map`, so `AutoModel` / `SentenceTransformer(dir,
trust_remote_code=True)` load it where this package is absent; this package loads it with its
registered classes and never runs that copy. Loading is safe throughout (`sparsecse.model.loading`):
safetensors weights, classes from transformers or this package, checkpoints read with weights_only.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModel

from sparsecse.architecture import layout, surgery
from sparsecse.architecture.layout import (
    ARCHITECTURES,
    SUPPORTED_MODEL_TYPES,
    architecture,
    ffn_size,
    has_pooler,
)
from sparsecse.architecture.surgery import SPARSE_CLASSES, is_sparse, pooling_layer_kwargs
from sparsecse.core.errors import ConfigError, first_few
from sparsecse.core.writing import written_whole
from sparsecse.export.model_card import CardFacts, base_model, model_card, write_model_card
from sparsecse.export.onnx_export import OnnxExport, export_onnx
from sparsecse.model.encoder import CHECKPOINT_KEY, Pooler, SentenceEncoder, check_pooler
from sparsecse.model.loading import (
    attention_for,
    load_backbone,
    load_checkpoint_file,
    load_config,
    load_tokenizer,
)
from sparsecse.pruning.gates import UnitGates, WeightMasks
from sparsecse.pruning.removal import apply_gates, remove_pruned_units, structure

SPARSECSE_FILE = "sparsecse.json"
# the model code an export carries: the sparse classes and the layer layout they slice by
MODEL_CODE = (Path(surgery.__file__), Path(layout.__file__))
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
    """The longest input the position embeddings allow (RoBERTa's and MPNet's positions start after
    the padding id)."""
    config = encoder.backbone.config
    limit = config.max_position_embeddings
    if ARCHITECTURES[architecture(config)].positions_after_padding:
        limit -= config.pad_token_id + 1
    return int(min(limit, encoder.tokenizer.model_max_length))


def write_sentence_transformers(encoder: SentenceEncoder, directory: Path) -> None:
    modules = st_modules(encoder)
    st_config = {"max_seq_length": max_seq_length(encoder), "do_lower_case": False}
    if getattr(encoder.backbone, "pooler", None) is None and has_pooler(encoder.backbone.config):
        st_config["model_args"] = {"add_pooling_layer": False}  # saved without the MLP: don't build one
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
    for source in MODEL_CODE:
        shutil.copyfile(source, directory / source.name)
    config_class, model_class = next(c for c in SPARSE_CLASSES.values() if c[0].model_type == model_type)
    module = MODEL_CODE[0].stem
    config = json.loads((directory / "config.json").read_text())
    config["auto_map"] = {
        "AutoConfig": f"{module}.{config_class.__name__}",
        "AutoModel": f"{module}.{model_class.__name__}",
    }
    _write_json(directory / "config.json", config)


def check_replaceable(directory: Path) -> None:
    """An export replaces its folder whole: refuse a folder that holds anything but an earlier export
    (pickle files or a user's own files), which would be lost."""
    if not directory.is_dir() or (directory / SPARSECSE_FILE).is_file():
        return
    if held := sorted(p.name for p in directory.iterdir()):
        raise ConfigError("output_dir", f"{directory} holds files that are not an export of this project "
                          f"({first_few(held, 3)}); choose a new or empty folder")  # fmt: skip


def save_sparse_encoder(
    encoder: SentenceEncoder,
    directory: str | Path,
    provenance: Sequence[str] = (),
    evaluation: Mapping[str, Mapping[str, float]] | None = None,
    parameters: Mapping[str, int] | None = None,
    onnx: OnnxExport = "none",
    dense_layers: int | None = None,
    calibration: Sequence[str] = (),
) -> Path:
    """Write the encoder as a Hugging Face + sentence-transformers model directory, whole or not at
    all (`sparsecse.core.writing.written_whole`: a full disk leaves no half-written folder, and an earlier
    export there is replaced only once the new one is complete). The model card tells `provenance`,
    sentences on how it was trained and pruned; `evaluation`, rows of scores; `parameters`, the counts
    results.json holds; `dense_layers`, the base model's layer count where layers were dropped.
    `calibration`: training sentences, for `onnx=openvino-int8`."""
    directory = Path(directory)
    check_replaceable(directory)
    facts = CardFacts(provenance, evaluation, parameters, dense_layers)
    with written_whole(directory) as temporary:
        graphs = write_export(encoder, temporary, onnx, calibration)
        write_card(encoder, temporary, directory.name, facts, graphs)
    return directory


def write_export(
    encoder: SentenceEncoder, directory: Path, onnx: OnnxExport = "none", calibration: Sequence[str] = ()
) -> list[str]:
    """The export's files in `directory`, and with `onnx` its ONNX graphs, whose paths (relative to
    `directory`) it returns; the model card is `write_card`'s. Gates still attached to the encoder
    are made physical first (the encoder is changed in place; its embeddings do not change)."""
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
    written = export_onnx(encoder, directory, onnx, calibration)
    return [str(path.relative_to(directory)) for path in written if path.suffix != ".bin"]


def write_card(
    encoder: SentenceEncoder, directory: Path, name: str, facts: CardFacts, graphs: Sequence[str] = ()
) -> None:
    """The export's model card (`README.md`, titled `name`)."""
    config = encoder.backbone.config
    card = model_card(name, base_model(encoder.name_or_path), encoder.pooler, structure(encoder.backbone),
                      config.num_attention_heads, ffn_size(config), facts,
                      remote_code=is_sparse(config), onnx_files=graphs)  # fmt: skip
    write_model_card(directory, card)


def load_encoder(
    name_or_path: str | Path,
    pooler: Pooler | None = None,
    mlp_only_train: bool | None = None,
    reinit_mlp: bool = False,
    attn_implementation: str = "sdpa",
) -> SentenceEncoder:
    """A Hugging Face name or directory (or `minilm`), a directory this project exported, or a project
    Lightning checkpoint (`*.ckpt`) -> encoder.

    `pooler` and `mlp_only_train` default to what an export or a checkpoint recorded (a plain model:
    `cls`, with the MLP). `reinit_mlp` draws the MLP afresh, as SimCSE does (its MLPLayer is not in
    the checkpoint it starts from).
    """
    name_or_path = str(name_or_path)
    if pooler is not None:
        check_pooler(pooler)
    if name_or_path.endswith(".ckpt"):
        encoder = encoder_from_checkpoint(name_or_path, pooler, mlp_only_train, attn_implementation)
    else:
        recorded = exported_settings(name_or_path)
        pooler = pooler or recorded.get("pooler", "cls")
        mlp_only_train = recorded.get("mlp_only_train", False) if mlp_only_train is None else mlp_only_train
        config = load_config(name_or_path)  # also refuses pickle weights and foreign model code
        backbone = load_backbone(name_or_path, config, pooler == "cls", attn_implementation)
        encoder = SentenceEncoder(backbone, load_tokenizer(name_or_path), pooler, mlp_only_train)
        encoder.name_or_path = name_or_path
    if reinit_mlp and encoder.pooler == "cls":
        encoder.reset_mlp()
    return encoder


def exported_settings(name_or_path: str) -> dict:
    """The `sparsecse.json` of a directory this project exported ({} for any other model)."""
    path = Path(name_or_path).expanduser() / SPARSECSE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def encoder_from_checkpoint(
    path: str,
    pooler: str | None = None,
    mlp_only_train: bool | None = None,
    attn_implementation: str = "sdpa",
) -> SentenceEncoder:
    """A project Lightning checkpoint (`*.ckpt`) -> the encoder it holds, from its plain tensors and
    description; pooler and `mlp_only_train` default to the trained encoder's."""
    checkpoint = load_checkpoint_file(path, "model")
    meta, state_dict = checkpoint.get(CHECKPOINT_KEY), checkpoint.get("state_dict")
    if not (isinstance(meta, dict) and isinstance(meta.get("config"), dict) and isinstance(state_dict, dict)):
        raise ConfigError("model", f"{path} is not a SparseCSE checkpoint (no {CHECKPOINT_KEY!r} entry)")
    model_type = meta["config"].get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        supported = ", ".join(SUPPORTED_MODEL_TYPES)
        raise ConfigError("model", f"{path} holds a {model_type!r} model; supported: {supported}")
    pooler = pooler or meta["pooler"]
    mlp_only_train = meta["mlp_only_train"] if mlp_only_train is None else mlp_only_train
    config = AutoConfig.for_model(**meta["config"])
    config._attn_implementation = attention_for(config, attn_implementation)
    backbone = AutoModel.from_config(
        config, **pooling_layer_kwargs(config, pooler == "cls"), trust_remote_code=False
    )
    state = _entries(state_dict, "encoder.backbone.")
    if pooler != "cls":  # the MLP is not part of this encoder
        state = {k: v for k, v in state.items() if not k.startswith("pooler.")}
    backbone.load_state_dict(state)
    encoder = SentenceEncoder(backbone, load_tokenizer(meta["name_or_path"]), pooler, mlp_only_train)
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
        encoder.attach_gates(UnitGates(encoder.backbone))
        encoder.gates.load_state_dict(gates)
    if masks:
        encoder.attach_masks(WeightMasks(encoder.backbone))
        encoder.masks.load_state_dict(masks)
    remove_pruned_units(encoder)
