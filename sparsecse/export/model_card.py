"""The `README.md` model card every export carries, in the Hugging Face / sentence-transformers
convention: YAML metadata, then how the model was made, its structure per layer, its parameter
counts, its evaluation and how to load it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from sparsecse.core.paths import MINILM
from sparsecse.evaluation.names import display_name
from sparsecse.evaluation.table import format_score
from sparsecse.pruning.importance import ScoreMode
from sparsecse.pruning.schedule import Granularity

UNRECORDED = "Exported by SparseCSE; no training or pruning was recorded."
HUB_NAMES = {MINILM: "sentence-transformers/all-MiniLM-L6-v2"}  # the embedded default, as the Hub names it
CARD = "README.md"
# the snippets' paths are relative to the model's folder, wherever it was written from
MODEL_DIR = 'model_dir = "."  # this folder: run from inside it, or give its path (or its Hub name)'


def base_model(name_or_path: str) -> str:
    """The base model as a reader can find it: a Hub name, or the path it was loaded from."""
    return HUB_NAMES.get(name_or_path, name_or_path)


def structure_table(structure: Mapping, dense_heads: int, dense_ffn: int) -> list[str]:
    rows = ["| layer | attention heads | FFN neurons |", "| --: | --: | --: |"]
    for layer, (heads, ffn) in enumerate(zip(structure["heads"], structure["ffn"])):
        rows.append(f"| {layer} | {heads} of {dense_heads} | {ffn} of {dense_ffn} |")
    return rows


def evaluation_table(rows: Mapping[str, Mapping[str, float]]) -> list[str]:
    """One column per metric, one row per model (`before`, `after`)."""
    keys = list(dict.fromkeys(k for row in rows.values() for k in row))
    lines = ["| model | " + " | ".join(display_name(k) for k in keys) + " |"]
    lines.append("| --- |" + " --: |" * len(keys))
    for name, row in rows.items():
        cells = [format_score(k, row[k]) for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 'es' if noun.endswith(('s', 'ch')) else 's'}"


def pruning_sentence(
    when: str, score: ScoreMode, granularity: Granularity, summary: Mapping[str, float], scored_on: str
) -> str:
    """How the model was pruned, from the sparsity summary of its last event (`prune/...` keys)."""
    share = lambda key: f"{100 * summary[key]:.1f}%"  # noqa: E731
    if granularity == "unstructured":
        removed = f"{share('prune/weight_sparsity')} of the transformer layers' Linear weights"
    else:
        heads, neurons = share("prune/head_sparsity"), share("prune/ffn_sparsity")
        removed = f"{heads} of the attention heads and {neurons} of the FFN neurons"
    scores = f"`{score}` importance scores ({granularity})"
    return f"Pruned {when} by {scores}, scored on {scored_on}: {removed} removed."


def recovery_sentence(recovery, corpus: str, teacher: str = "the encoder before pruning") -> str:
    """How the pruned model was recovered, from a sparsecse.pruning.recovery.Recovery."""
    terms = [f"{weight:g} x {name}" for weight, name in (
        (recovery.mse_weight, "MSE"), (recovery.cosine_weight, "(1 - cosine)"),
        (recovery.contrastive_weight, "SimCSE's contrastive loss"),
        (recovery.layer_weight, "each kept layer's hidden-state MSE against the layer it was"),
    ) if weight]  # fmt: skip
    steps = f"{recovery.steps} steps of batch {recovery.batch_size} on `{corpus}`, lr {recovery.lr:g}"
    return f"Recovered by distillation from {teacher}: {steps}, loss {' + '.join(terms)}."


def what_is_left(
    base: str, structure: Mapping, dense_heads: int, dense_ffn: int, dense_layers: int | None = None
) -> str:
    """The card's first sentence: what the encoder keeps of its base model, layers, heads and neurons."""
    layers = len(structure["heads"])
    heads, ffn = sum(structure["heads"]), sum(structure["ffn"])
    kept = []
    if dense_layers is not None and layers < dense_layers:
        kept.append(f"{layers} of its {dense_layers} transformer layers")
    if heads < layers * dense_heads or ffn < layers * dense_ffn:
        where = " in them" if kept else ""
        kept.append(f"{heads} of {layers * dense_heads} attention heads and {ffn} of {layers * dense_ffn} "
                    f"FFN neurons{where}")  # fmt: skip
    made = f"A sentence encoder made with [SparseCSE](https://arxiv.org/abs/2311.03881) from `{base}`"
    if not kept:
        return f"{made}, with all of its {layers} layers, {heads} attention heads and {ffn} FFN neurons."
    return f"{made}: it keeps {' and '.join(kept)}."


def graph_choice(onnx_files: Sequence[str]) -> str:
    """The snippet's `graph = ...` line: the int8 graph where there is one (faster on a CPU), the
    others named in its comment."""
    described = [f"{f!r}: {'int8, faster on a CPU' if 'qint8' in f else 'float32'}" for f in onnx_files]
    shown = max(range(len(onnx_files)), key=lambda i: "qint8" in onnx_files[i])
    return f"graph = {onnx_files[shown]!r}  # " + "; ".join(described)


@dataclass(frozen=True)
class CardFacts:
    """What a card tells of how its model was made, besides the model itself."""

    provenance: Sequence[str] = ()  # sentences on how it was trained and pruned
    evaluation: Mapping[str, Mapping[str, float]] | None = None  # rows of scores, by model
    parameters: Mapping[str, int] | None = None  # {"parameters": counted, "dense_parameters": ...}
    dense_layers: int | None = None  # the base model's layer count, where layers were dropped


def speed_target_sentence(
    base: str, speed: dict, layers_kept: list[int], dense_layers: int, score: ScoreMode, when: str = ""
) -> str:
    """The card's account of `pruning.target_speedup=X` (`when`: e.g. "during training (...)"): the
    speed asked, predicted and measured (where it was), and what was removed."""
    measured = f", measured {speed['measured']:.2f}x" if "measured" in speed else ""
    return (
        f"Pruned{' ' + when if when else ''} to an encode speed-up of {speed['asked']:g}x over `{base}` in "
        f"{speed['runtime']} (predicted {speed['predicted']:.2f}x{measured}): transformer layers "
        f"{layers_kept} kept of {dense_layers}, and the heads and FFN neurons of least alignment/uniformity "
        f"importance ({score} scores) per unit of encode time saved removed."
    )


def model_card(
    name: str,
    base: str,
    pooler: str,
    structure: Mapping,
    dense_heads: int,
    dense_ffn: int,
    facts: CardFacts = CardFacts(),
    remote_code: bool = True,
    onnx_files: Sequence[str] = (),
) -> str:
    """The card's text."""
    provenance, evaluation, parameters = facts.provenance, facts.evaluation, facts.parameters
    metadata = {
        "library_name": "sentence-transformers",
        "pipeline_tag": "sentence-similarity",
        "base_model": base,
        "tags": ["sentence-transformers", "sentence-similarity", "feature-extraction", "sparsecse", "pruned"],
    }
    lines = ["---", yaml.safe_dump(metadata, sort_keys=False).strip(), "---", "", f"# {name}", ""]
    lines += [
        what_is_left(base, structure, dense_heads, dense_ffn, facts.dense_layers),
        f"The sentence embedding is the `{pooler}` pooling of its last layer.",
        "",
        "## How it was made",
        "",
        *(f"- {line}" for line in provenance or [UNRECORDED]),
        "",
        "## Structure",
        "",
        *structure_table(structure, dense_heads, dense_ffn),
        "",
        f"Parameters of the encoder: {structure['params']:,} "
        f"({structure['params_without_embeddings']:,} outside the embeddings).",
    ]
    if parameters:
        kept, dense = parameters["parameters"], parameters["dense_parameters"]
        removed = f"{kept:,} of the dense {dense:,}, {100 * (1 - kept / dense):.1f}% removed"
        lines.append(f"Parameters that count (zeroed weights left out): {removed}.")
    if evaluation:
        lines += [
            "",
            "## Evaluation",
            "",
            "SentEval protocol (Spearman x 100 for STS, accuracy for transfer):",
        ]
        lines += ["", *evaluation_table(evaluation)]
    trust = ", trust_remote_code=True" if remote_code else ""
    lines += [
        "",
        "## Usage",
        "",
        "With sentence-transformers:",
        "",
        "```python",
        "from sentence_transformers import SentenceTransformer",
        "",
        MODEL_DIR,
        f"model = SentenceTransformer(model_dir{trust})",
        'embeddings = model.encode(["A man is playing a guitar.", "Someone plays an instrument."])',
        "```",
        "",
        "With transformers (mean pooling shown; use the pooling named above):",
        "",
        "```python",
        "import torch",
        "from transformers import AutoModel, AutoTokenizer",
        "",
        MODEL_DIR,
        f"tokenizer = AutoTokenizer.from_pretrained(model_dir{trust})",
        f"model = AutoModel.from_pretrained(model_dir{trust})",
        'batch = tokenizer(["A man is playing a guitar."], padding=True, return_tensors="pt")',
        "hidden = model(**batch).last_hidden_state",
        'mask = batch["attention_mask"].unsqueeze(-1)',
        "embeddings = (hidden * mask).sum(1) / mask.sum(1)",
        "```",
    ]
    if remote_code:
        lines += [
            "",
            "The smaller layers are described by the model code shipped next to the weights",
            "(`trust_remote_code=True`), or by the `sparsecse` package when it is installed.",
        ]
    lines += onnx_usage([f for f in onnx_files if f.endswith(".onnx")], trust)
    lines += openvino_usage([f for f in onnx_files if f.endswith(".xml")], trust)
    return "\n".join(lines) + "\n"


def onnx_usage(graphs: Sequence[str], trust: str) -> list[str]:
    """The card's ONNX Runtime snippet (none without an ONNX graph)."""
    if not graphs:
        return []
    named = " or ".join(f"`{f}`" for f in graphs)
    return [
        "",
        f"With ONNX Runtime alone ({named}: token embeddings, to pool as above):",
        "",
        "```python",
        "import os",
        "import numpy as np, onnxruntime",
        "from transformers import AutoTokenizer",
        "",
        MODEL_DIR,
        graph_choice(graphs),
        f"tokenizer = AutoTokenizer.from_pretrained(model_dir{trust})",
        "session = onnxruntime.InferenceSession(os.path.join(model_dir, graph))",
        'batch = tokenizer(["A man is playing a guitar."], padding=True, return_tensors="np")',
        "feeds = {i.name: batch[i.name].astype(np.int64) for i in session.get_inputs()}",
        '(hidden,) = session.run(["last_hidden_state"], feeds)',
        'mask = batch["attention_mask"][..., None]',
        "embeddings = (hidden * mask).sum(1) / mask.sum(1)",
        "```",
    ]


def openvino_usage(models: Sequence[str], trust: str) -> list[str]:
    """The card's OpenVINO snippet, for its int8 model (none without one)."""
    if not models:
        return []
    return [
        "",
        f"With OpenVINO alone (`{models[0]}`, int8, the fastest on a CPU; token embeddings, to pool as "
        "above):",
        "",
        "```python",
        "import os",
        "import numpy as np, openvino",
        "from transformers import AutoTokenizer",
        "",
        MODEL_DIR,
        f"tokenizer = AutoTokenizer.from_pretrained(model_dir{trust})",
        f'model = openvino.Core().compile_model(os.path.join(model_dir, {models[0]!r}), "CPU")',
        'batch = tokenizer(["A man is playing a guitar."], padding=True, return_tensors="np")',
        "names = [port.get_any_name() for port in model.inputs]",
        "hidden = model({name: batch[name].astype(np.int64) for name in names})[0]",
        'mask = batch["attention_mask"][..., None]',
        "embeddings = (hidden * mask).sum(1) / mask.sum(1)",
        "```",
    ]


def write_model_card(directory: Path, text: str) -> Path:
    path = Path(directory) / CARD
    path.write_text(text)
    return path
