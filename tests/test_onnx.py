"""ONNX export: plain ONNX Runtime, in a process where this project cannot be imported, gives the
sparse PyTorch model's token embeddings for every per-layer structure, a layer without FFN neurons
included; int8 dynamic quantisation as an option."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch

from sparsecse.export.model_io import save_sparse_encoder
from sparsecse.pruning.removal import remove_units

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
pytestmark = pytest.mark.slow  # each test exports a graph (seconds) and starts a process

TEXTS = ["A man is playing a guitar.", "hello", "The cat sat on the mat, quietly and alone, all day long."]

# Only onnxruntime and the tokenizer: any import of the project fails.
FRESH = """
import json, sys
sys.modules["sparsecse"] = None
import numpy as np, onnxruntime
from transformers import AutoTokenizer

directory, file, texts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
tokenizer = AutoTokenizer.from_pretrained(directory)
batch = tokenizer(texts, padding=True, return_tensors="np")
session = onnxruntime.InferenceSession(f"{directory}/{file}", providers=["CPUExecutionProvider"])
names = [i.name for i in session.get_inputs()]
(hidden,) = session.run(["last_hidden_state"], {n: batch[n].astype(np.int64) for n in names})
np.save(sys.argv[4], hidden)
"""

STRUCTURES = {  # kept heads (of 4) and kept neurons (of 64) per layer
    "dense": ([[0, 1, 2, 3], [0, 1, 2, 3]], [64, 64]),
    "uneven": ([[0, 2, 3], [1]], [40, 7]),
    "no FFN neurons left in a layer": ([[1, 3], [0, 1, 2, 3]], [64, 0]),
}


def run_fresh(directory, file, tmp_path):
    out = tmp_path / "hidden.npy"
    subprocess.run([sys.executable, "-c", FRESH, str(directory), file, json.dumps(TEXTS), str(out)],
                   check=True, capture_output=True, text=True, timeout=300)  # fmt: skip
    import numpy as np

    return torch.from_numpy(np.load(out))


def sliced(make_encoder, heads, neurons, kind: str = "bert"):
    encoder = make_encoder("avg", kind=kind)
    head_gates = [torch.tensor([float(h in kept) for h in range(4)]) for kept in heads]
    neuron_gates = [torch.cat([torch.ones(n), torch.zeros(64 - n)]) for n in neurons]
    remove_units(encoder.backbone, head_gates, neuron_gates)
    return encoder


@pytest.mark.parametrize("structure", list(STRUCTURES), ids=list(STRUCTURES))
def test_plain_onnxruntime_gives_the_sparse_models_token_embeddings(make_encoder, tmp_path, structure):
    from sparsecse.export.onnx_export import MODEL_FILE, export_onnx

    encoder = sliced(make_encoder, *STRUCTURES[structure])
    directory = save_sparse_encoder(encoder, tmp_path / "model")
    assert export_onnx(encoder, directory) == [directory / MODEL_FILE]
    batch = encoder.tokenize(TEXTS)
    with torch.no_grad():
        expected = encoder.backbone(**batch).last_hidden_state
    torch.testing.assert_close(run_fresh(directory, MODEL_FILE, tmp_path), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["roberta", "distilbert", "mpnet", "modernbert"])
def test_backbones_whose_tokenizers_make_no_token_types(make_encoder, tmp_path, kind):
    """The graph takes the inputs the model's tokenizer makes: no `token_type_ids` here."""
    import onnx

    encoder = sliced(make_encoder, *STRUCTURES["uneven"], kind=kind)
    directory = save_sparse_encoder(encoder, tmp_path / "model", onnx="fp32")
    graph = onnx.load(str(directory / "onnx" / "model.onnx")).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask"]
    batch = encoder.tokenize(TEXTS)
    with torch.no_grad():
        expected = encoder.backbone(**batch).last_hidden_state
    hidden = run_fresh(directory, "onnx/model.onnx", tmp_path)
    # Real tokens only: at padding positions (which no pooler reads) PyTorch's SDPA under ModernBERT's
    # sliding-window mask gives other values than its own eager attention; the graph matches eager.
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(hidden[real], expected[real], rtol=1e-4, atol=1e-5)


def test_int8_is_an_option_and_stays_close(make_encoder, tmp_path):
    from sparsecse.export.onnx_export import INT8_FILE, MODEL_FILE, export_onnx

    encoder = sliced(make_encoder, *STRUCTURES["uneven"])
    directory = save_sparse_encoder(encoder, tmp_path / "model")
    assert export_onnx(encoder, directory, "int8") == [directory / MODEL_FILE, directory / INT8_FILE]
    assert export_onnx(encoder, tmp_path / "none", "none") == []
    hidden = run_fresh(directory, INT8_FILE, tmp_path)
    with torch.no_grad():
        expected = encoder.backbone(**encoder.tokenize(TEXTS)).last_hidden_state
    cosine = torch.nn.functional.cosine_similarity(hidden.flatten(0, 1), expected.flatten(0, 1), dim=-1)
    assert cosine.min() > 0.95 and not torch.equal(hidden, expected)  # quantised, and still the same vectors


def test_openvino_int8_is_an_option_and_stays_close(make_encoder, tmp_path):
    """The OpenVINO model, quantised by NNCF on calibration sentences, gives nearly the sentence
    embeddings of the PyTorch model it was exported from (a wrong export would score without error)."""
    from sparsecse.export.onnx_encoder import graph_encoder
    from sparsecse.export.onnx_export import MODEL_FILE, OPENVINO_INT8_FILE, export_onnx

    encoder = sliced(make_encoder, *STRUCTURES["uneven"])
    directory = save_sparse_encoder(encoder, tmp_path / "model")
    written = export_onnx(
        encoder, directory, "openvino-int8", calibration=[*TEXTS, "a dog runs", "two men talk"]
    )
    assert directory / MODEL_FILE in written and directory / OPENVINO_INT8_FILE in written
    embeddings = graph_encoder(directory, OPENVINO_INT8_FILE).encode(TEXTS)
    expected = encoder.encode(TEXTS)
    cosine = torch.nn.functional.cosine_similarity(embeddings, expected, dim=-1)
    assert cosine.min() > 0.95 and not torch.equal(embeddings, expected)  # quantised, still the same vectors


# onnx= -> (its int8 graph, the row it is printed as, the graphs the card names, the card's last snippet)
INT8_EXPORTS = {
    "int8": ("onnx/model_qint8.onnx", "after, int8 ONNX",
             "With ONNX Runtime alone (`onnx/model.onnx` or `onnx/model_qint8.onnx`", "onnxruntime"),
    "openvino-int8": ("openvino/openvino_model_qint8_quantized.xml", "after, int8 OpenVINO",
                      "With OpenVINO alone (`openvino/openvino_model_qint8_quantized.xml`", "openvino"),
}  # fmt: skip


@pytest.mark.parametrize("mode", INT8_EXPORTS)
def test_sparsecse_prune_scores_its_int8_graph_and_the_card_says_how_to_run_it(
    mode, tmp_path, toy_senteval_dir, tiny_model_dir, capsys, caplog
):
    """With onnx=int8 (ONNX Runtime) or openvino-int8 the command prints and records the int8
    graph's scores, as its runtime serves it; each of the card's snippets runs as written, from the
    model's folder, without this package. The exporter's and quantiser's notes, which nobody can act
    on, are not shown."""
    from helpers import compose_prune

    from sparsecse.cli import silence_third_party_noise
    from sparsecse.cli.prune import prune
    from sparsecse.evaluation import evaluate_encoder
    from sparsecse.export.onnx_encoder import graph_encoder

    silence_third_party_noise()
    graph, row, named, runtime = INT8_EXPORTS[mode]
    out = tmp_path / "sparse"
    overrides = [f"model={tiny_model_dir}", "pooler=avg", "pruning.head_sparsity=0.5",
                 "pruning.num_batches=1", "tasks=[stsb]", f"output_dir={out}", f"data_dir={toy_senteval_dir}",
                 "batch_size=8"]  # fmt: skip
    results = prune(compose_prune([*overrides, f"onnx={mode}"]))
    assert (out / "onnx" / "model.onnx").is_file() and (out / graph).is_file()
    noise = ("torchvision is not installed", "Please consider to run pre-processing")
    assert not [r.getMessage() for r in caplog.records if r.getMessage().startswith(noise)]
    assert results["int8"] == evaluate_encoder(graph_encoder(out, graph), toy_senteval_dir, ["stsb"])
    assert results["int8"]["stsb"] != results["after"]["stsb"], "the quantised graph, scored on its own"
    assert json.loads((out / "results.json").read_text())["int8"] == results["int8"]
    printed = capsys.readouterr().out
    assert re.search(rf"^{row} \|\s+{results['int8']['stsb']:.2f}$", printed, re.MULTILINE), printed
    card = (out / "README.md").read_text()
    assert f"| {row} | {results['int8']['stsb']:.2f} |" in card and named in card
    snippets = [block.split("```")[0] for block in card.split("```python\n")[1:]]
    # sentence-transformers, transformers, ONNX Runtime, and OpenVINO where its model was written
    assert len(snippets) == 3 + (runtime == "openvino") and f"import numpy as np, {runtime}" in snippets[-1]
    for snippet in snippets:
        script = f'import sys\nsys.modules["sparsecse"] = None\n{snippet}\nprint(tuple(embeddings.shape))'
        command = [sys.executable, "-c", script]
        ran = subprocess.run(command, cwd=out, capture_output=True, text=True, timeout=300)
        assert ran.returncode == 0, ran.stderr[-2000:]
        assert ran.stdout.strip().splitlines()[-1] in ("(1, 32)", "(2, 32)"), snippet
