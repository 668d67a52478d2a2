from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModel

from sparsecse.architecture import surgery
from sparsecse.export.model_io import load_encoder, save_sparse_encoder
from sparsecse.model.encoder import POOLERS, SentenceEncoder
from sparsecse.pruning.gates import UnitGates
from sparsecse.pruning.removal import remove_units, structure

TEXTS = ["A man is playing a guitar.", "The cat sat on the mat, quietly and alone.", "hello", "Two dogs run."]

# Runs where the project is not importable: only torch, transformers and sentence-transformers.
FRESH = """
import json, sys
sys.modules["sparsecse"] = None  # any import of the project fails
import torch
from sentence_transformers import SentenceTransformer
from transformers import AutoModel, AutoTokenizer

out, texts, paths = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3:]
results = []
for path in paths:
    model = AutoModel.from_pretrained(path, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    st = SentenceTransformer(path, trust_remote_code=True, device="cpu")
    embeddings = st.encode(texts, convert_to_tensor=True)
    results.append({"hidden": hidden, "st": embeddings, "module": type(model).__module__})
torch.save(results, out)
"""


def prune(encoder: SentenceEncoder, seed: int = 0) -> SentenceEncoder:
    """Remove a few heads (one layer down to a single head) and about a third of the neurons."""
    g = torch.Generator().manual_seed(seed)
    heads, neurons = [], []
    for layer in encoder.backbone.encoder.layer:
        h = torch.ones(layer.attention.self.num_attention_heads)
        h[1:3] = 0
        heads.append(h)
        neurons.append((torch.rand(layer.intermediate.dense.out_features, generator=g) > 0.3).float())
    heads[-1][1:] = 0
    remove_units(encoder.backbone, heads, neurons)
    return encoder


def test_auto_model_round_trip_after_register(make_encoder, tmp_path):
    encoder = prune(make_encoder("cls"))
    save_sparse_encoder(encoder, tmp_path)
    surgery.register()
    surgery.register()  # idempotent
    loaded, info = AutoModel.from_pretrained(tmp_path, output_loading_info=True)
    assert isinstance(loaded, surgery.SparseBertModel)
    assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"])
    assert structure(loaded) == structure(encoder.backbone)
    batch = encoder.tokenize(TEXTS)
    with torch.no_grad():
        expected, got = encoder.backbone(**batch), loaded.eval()(**batch)
    assert torch.equal(got.last_hidden_state, expected.last_hidden_state)
    assert torch.equal(got.pooler_output, expected.pooler_output)


def test_exported_directory(make_encoder, tmp_path):
    encoder = prune(make_encoder("avg"))
    save_sparse_encoder(encoder, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "sparsecse_bert"
    assert config["auto_map"] == {
        "AutoConfig": "surgery.SparseBertConfig",
        "AutoModel": "surgery.SparseBertModel",
    }
    assert config["kept_heads"] == encoder.backbone.config.kept_heads
    code = (tmp_path / "surgery.py").read_text()
    assert code == Path(surgery.__file__).read_text()
    assert "import sparsecse" not in code and "from sparsecse" not in code
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "tokenizer_config.json").is_file()
    modules = json.loads((tmp_path / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[1] for m in modules] == ["Transformer", "Pooling"]
    meta = json.loads((tmp_path / "sparsecse.json").read_text())
    assert meta["pooler"] == "avg" and meta["mlp_only_train"] is False
    assert meta["structure"]["heads"] == [2, 1]


def test_dense_encoder_exports_as_plain_bert(make_encoder, tmp_path):
    save_sparse_encoder(make_encoder("avg"), tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).model_type == "bert"
    assert "auto_map" not in json.loads((tmp_path / "config.json").read_text())
    assert not (tmp_path / "surgery.py").exists()


@pytest.mark.parametrize(("pooler", "mlp_only_train"), [("cls", False), ("cls", True), ("avg_top2", False)])
def test_project_loader_reads_pooler(make_encoder, tmp_path, pooler, mlp_only_train):
    encoder = prune(make_encoder(pooler, mlp_only_train))
    save_sparse_encoder(encoder, tmp_path)
    loaded = load_encoder(tmp_path, attn_implementation="eager")
    assert (loaded.pooler, loaded.mlp_only_train) == (pooler, mlp_only_train)
    assert loaded.backbone.config._attn_implementation == "eager"
    assert (loaded.encode(TEXTS) - encoder.encode(TEXTS)).abs().max() < 1e-5


def test_export_applies_attached_gates(make_encoder, tmp_path):

    encoder = make_encoder("avg")
    encoder.attach_gates(UnitGates(encoder.backbone))
    encoder.gates.head_1[0] = 0
    gated = encoder.encode(TEXTS)
    save_sparse_encoder(encoder, tmp_path)
    assert encoder.gates is None
    assert json.loads((tmp_path / "config.json").read_text())["kept_heads"] == [[0, 1, 2, 3], [1, 2, 3]]
    assert (load_encoder(tmp_path).encode(TEXTS) - gated).abs().max() < 1e-5


@pytest.mark.slow
def test_fresh_process_loads_with_remote_code(make_encoder, tmp_path):
    """No sparsecse, another cwd: AutoModel and SentenceTransformer load the copied model code, for
    every backbone."""
    pytest.importorskip("sentence_transformers")
    encoders = {pooler: prune(make_encoder(pooler)) for pooler in ("avg", "cls")}
    for kind in ("roberta", "distilbert", "mpnet", "modernbert"):  # the other backbones, gated off
        encoders[kind] = make_encoder("avg", kind=kind)
        encoders[kind].attach_gates(UnitGates(encoders[kind].backbone))
        encoders[kind].gates.head_0[[0, 2]] = 0
        encoders[kind].gates.neuron_1[::2] = 0
    for name, encoder in encoders.items():
        save_sparse_encoder(encoder, tmp_path / name)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    out = tmp_path / "out.pt"
    args = [sys.executable, "-c", FRESH, str(out), json.dumps(TEXTS), *(str(tmp_path / p) for p in encoders)]
    result = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for fresh, encoder in zip(torch.load(out), encoders.values()):
        assert fresh["module"].startswith("transformers_modules.")  # the copied file, not the project
        with torch.no_grad():
            hidden = encoder.backbone(**encoder.tokenize(TEXTS)).last_hidden_state
        assert (fresh["hidden"] - hidden).abs().max() < 1e-6
        assert (fresh["st"] - encoder.encode(TEXTS)).abs().max() < 1e-5


@pytest.fixture(scope="module")
def sentence_transformers():
    return pytest.importorskip("sentence_transformers")


@pytest.mark.slow
@pytest.mark.parametrize(("pooler", "mlp_only_train"), [(p, False) for p in POOLERS] + [("cls", True)])
def test_sentence_transformers_matches_encoder_on_minilm(
    sentence_transformers, tmp_path, pooler, mlp_only_train
):
    encoder = prune(load_encoder("minilm", pooler=pooler, mlp_only_train=mlp_only_train))
    save_sparse_encoder(encoder, tmp_path)
    model = sentence_transformers.SentenceTransformer(str(tmp_path), trust_remote_code=True, device="cpu")
    got = model.encode(TEXTS, convert_to_tensor=True)
    assert (got - encoder.encode(TEXTS)).abs().max() < 1e-5


def test_every_export_carries_a_model_card(make_encoder, tmp_path):
    from huggingface_hub import ModelCard

    from sparsecse.export.model_card import pruning_sentence

    encoder = prune(make_encoder("avg"))
    summary = {"prune/head_sparsity": 0.25, "prune/ffn_sparsity": 0.3}
    pruned = pruning_sentence("during training", "magnitude", "structured", summary, "4 batches")
    provenance = ["Trained for 160 steps.", pruned]
    rows = {"before": {"stsb": 80.123, "sts_avg": 78.87}, "after": {"stsb": 79.5, "sts_avg": 77.0}}
    counts = {"parameters": 900, "dense_parameters": 1000}
    save_sparse_encoder(encoder, tmp_path / "my-model", provenance, rows, counts)
    card = ModelCard.load(tmp_path / "my-model" / "README.md")  # the Hub's own reader of the metadata
    assert (
        card.data.library_name == "sentence-transformers" and card.data.pipeline_tag == "sentence-similarity"
    )
    assert card.data.base_model == encoder.name_or_path
    text = card.text
    assert "# my-model" in text
    assert ("- Pruned during training by `magnitude` importance scores (structured), scored on 4 batches: "
            "25.0% of the attention heads and 30.0% of the FFN neurons removed.") in text  # fmt: skip
    heads = encoder.backbone.config.num_attention_heads
    size = encoder.backbone.config.intermediate_size
    kept = structure(encoder.backbone)
    for layer, (h, n) in enumerate(zip(kept["heads"], kept["ffn"])):
        assert f"| {layer} | {h} of {heads} | {n} of {size} |" in text
    assert f"Parameters of the encoder: {kept['params']:,}" in text
    assert "900 of the dense 1,000, 10.0% removed" in text
    assert "| model | STS-B | STS avg |" in text and "| before | 80.12 | 78.87 |" in text
    assert f"it keeps {sum(kept['heads'])} of {2 * heads} attention heads and {sum(kept['ffn'])} of " in text
    # the snippets' paths are the model folder's own, wherever the export was written from
    assert 'model_dir = "."' in text and "my-model" not in text.split("## Usage")[1]
    assert "SentenceTransformer(model_dir, trust_remote_code=True)" in text
    assert "AutoModel.from_pretrained(model_dir, trust_remote_code=True)" in text


def test_a_dense_export_card_needs_no_remote_code_and_names_the_hub_model(make_encoder, tmp_path):
    from huggingface_hub import ModelCard

    encoder = make_encoder("avg")
    encoder.name_or_path = "minilm"
    save_sparse_encoder(encoder, tmp_path)
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert "trust_remote_code" not in card.text and "no training or pruning was recorded" in card.text


def test_an_export_is_written_whole_or_not_at_all(make_encoder, tmp_path, monkeypatch):
    """A full disk while writing the weights: one OutputWriteError naming the folder, nothing of the
    new export left, and an earlier export there intact (here: the same folder written before)."""
    import sparsecse.export.model_io
    from sparsecse.core.errors import OutputWriteError

    encoder = make_encoder("avg")
    out = save_sparse_encoder(encoder, tmp_path / "export")
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def full_disk(directory, text):  # the card is written last, after the weights
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sparsecse.export.model_io, "write_model_card", full_disk)
    for target in (out, tmp_path / "new"):
        with pytest.raises(OutputWriteError, match=rf"^cannot write {target}: No space left on device; "):
            save_sparse_encoder(make_encoder("avg", seed=1), target)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["export"], "no temporary folder left"
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_an_export_replaces_an_earlier_one_whole(make_encoder, tmp_path):
    """Files of the earlier export that the new one lacks (an ONNX graph) do not stay beside it."""
    out = tmp_path / "export"
    save_sparse_encoder(make_encoder("avg"), out)
    (out / "onnx").mkdir()
    (out / "onnx" / "model_qint8.onnx").write_bytes(b"an earlier graph")
    save_sparse_encoder(make_encoder("avg", seed=1), out)
    assert not (out / "onnx").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
