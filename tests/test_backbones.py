"""BERT, RoBERTa, DistilBERT and MPNet through gates, importance, surgery, export and reload, on tiny
random models: gates at 1 are the plain model bit for bit, and the sliced model is the gated one."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from helpers import BACKBONES, TEXTS, views
from transformers import AutoConfig, AutoModel, BertConfig, BertModel

from sparsecse.architecture import surgery
from sparsecse.architecture.layout import encoder_layers
from sparsecse.core.errors import ConfigError
from sparsecse.export.model_io import load_encoder, save_sparse_encoder
from sparsecse.model.loading import UnusedPoolerReport, load_backbone
from sparsecse.pruning.gates import UnitGates
from sparsecse.pruning.importance import SCORE_MODES
from sparsecse.pruning.removal import apply_gates, remove_units, structure
from sparsecse.pruning.schedule import PruningEvent
from sparsecse.pruning.sparsifier import Sparsifier

# Per layer: heads gated off (of 4) and FFN neurons gated off (of 64). Layer 0 keeps one head,
# layer 1 keeps no FFN neuron, and the two layers keep different heads (MPNet's shared position
# bias must be cut per layer).
REMOVED_HEADS = [[0, 1, 3], [2]]
REMOVED_NEURONS = [list(range(0, 64, 3)), list(range(64))]


def gate_off(encoder) -> None:
    encoder.attach_gates(UnitGates(encoder.backbone))
    for gate, removed in zip(encoder.gates.heads + encoder.gates.neurons, REMOVED_HEADS + REMOVED_NEURONS):
        gate[removed] = 0


@pytest.fixture(params=[(kind, attn) for kind in BACKBONES for attn in ("eager", "sdpa")], ids=str)
def plain_run(request, make_encoder):
    """(encoder, batch, the plain model's embeddings) for each backbone and attention."""
    kind, attn = request.param
    if kind == "mpnet" and attn == "sdpa":
        pytest.skip("transformers' MPNet has eager attention only (the loaders fall back to it)")
    encoder = make_encoder("avg", kind=kind, attn_implementation=attn)
    batch = encoder.tokenize(TEXTS)
    return encoder, batch, encoder(**batch)


def test_gates_at_one_are_the_plain_model_bit_for_bit(plain_run):
    encoder, batch, plain = plain_run
    encoder.attach_gates(UnitGates(encoder.backbone))
    assert torch.equal(encoder(**batch), plain)


def test_the_sliced_model_is_the_gated_one(plain_run):
    encoder, batch, plain = plain_run
    gate_off(encoder)
    gated = encoder(**batch)
    assert (gated - plain).abs().max() > 1e-3  # the gates did remove something
    apply_gates(encoder)
    assert structure(encoder.backbone)["heads"] == [1, 3] and structure(encoder.backbone)["ffn"] == [42, 0]
    assert type(encoder.backbone).__name__.startswith("Sparse")
    assert (encoder(**batch) - gated).abs().max() < 1e-5


@pytest.mark.parametrize("kind", BACKBONES)
def test_two_surgeries_compose_to_one(make_encoder, kind):
    twice, once = make_encoder("avg", kind=kind), make_encoder("avg", kind=kind)
    batch = twice.tokenize(TEXTS)

    def keep(removed, total):
        mask = torch.ones(total)
        mask[removed] = 0
        return mask

    remove_units(twice.backbone, [keep([1], 4), keep([0], 4)], [keep([5], 64), keep([], 64)])
    remove_units(twice.backbone, [keep([0], 3), keep([2], 3)], [keep([], 63), keep([10], 64)])
    remove_units(once.backbone, [keep([0, 1], 4), keep([0, 3], 4)], [keep([5], 64), keep([10], 64)])
    assert twice.backbone.config.kept_heads == once.backbone.config.kept_heads == [[2, 3], [1, 2]]
    assert (twice(**batch) - once(**batch)).abs().max() < 1e-6


@pytest.mark.parametrize("kind", BACKBONES)
def test_export_and_reload(make_encoder, kind, tmp_path):
    encoder = make_encoder("avg", kind=kind)
    gate_off(encoder)
    gated = encoder.encode(TEXTS)
    save_sparse_encoder(encoder, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == f"sparsecse_{kind}" and config["kept_heads"] == [[2], [0, 1, 3]]
    reloaded = load_encoder(tmp_path)  # sdpa asked for: MPNet falls back to eager
    assert reloaded.backbone.config._attn_implementation == ("eager" if kind == "mpnet" else "sdpa")
    assert (reloaded.encode(TEXTS) - gated).abs().max() < 1e-5
    no_pooler = surgery.pooling_layer_kwargs(encoder.backbone.config, False)
    loaded = AutoModel.from_pretrained(tmp_path, **no_pooler)  # the registered Sparse* class
    assert type(loaded) is surgery.SPARSE_CLASSES[kind][1]
    assert structure(loaded) == structure(encoder.backbone)
    card = (tmp_path / "README.md").read_text()  # counts against the dense sizes (DistilBERT: hidden_dim)
    assert "| 0 | 1 of 4 | 42 of 64 |" in card and "| 1 | 3 of 4 | 0 of 64 |" in card


@pytest.mark.parametrize("kind", BACKBONES)
@pytest.mark.parametrize("score", SCORE_MODES)
def test_every_score_mode_prunes_every_backbone(make_encoder, kind, score):
    encoder = make_encoder("avg", kind=kind)
    sparsifier = Sparsifier(score=score, num_batches=1)
    sparsifier.check_model(encoder.backbone.config)
    sparsifier.attach(encoder)
    event = PruningEvent("step", 1, head_sparsity=0.25, ffn_sparsity=0.5)
    importance = sparsifier.importance(encoder.train(), iter([views(encoder)]))
    assert [s.shape for s in importance["heads"]] == [torch.Size([4])] * 2
    assert all(s.isfinite().all() for s in importance["heads"] + importance["neurons"])
    summary = sparsifier.apply(encoder, event, importance)
    assert (summary.head_sparsity, summary.ffn_sparsity) == (0.25, 0.5)
    apply_gates(encoder)
    assert sum(structure(encoder.backbone)["heads"]) == 6 and sum(structure(encoder.backbone)["ffn"]) == 64


@pytest.mark.parametrize("kind", BACKBONES)
def test_unstructured_masks_cover_every_layer_linear(make_encoder, kind):
    encoder = make_encoder("avg", kind=kind)
    sparsifier = Sparsifier(granularity="unstructured", score="weight_magnitude")
    sparsifier.attach(encoder)
    per_layer = 4 if kind == "modernbert" else 6  # q k v o FFN-in FFN-out; ModernBERT fuses q k v
    assert len(encoder.masks.linears) == per_layer * len(encoder_layers(encoder.backbone))
    event = PruningEvent("step", 1, weight_sparsity=0.3)
    summary = sparsifier.apply(encoder, event, sparsifier.importance(encoder, iter([])))
    assert abs(summary.weight_sparsity - 0.3) < 1e-3


@pytest.mark.parametrize("kind", BACKBONES)
def test_a_plain_model_directory_loads_as_the_embedded_default_does(make_encoder, kind, tmp_path):
    encoder = make_encoder("avg", kind=kind)
    encoder.backbone.save_pretrained(tmp_path)
    encoder.tokenizer.save_pretrained(tmp_path)
    loaded = load_encoder(tmp_path, pooler="avg")
    assert type(loaded.backbone) is type(encoder.backbone)
    assert torch.equal(loaded.encode(TEXTS), encoder.encode(TEXTS))


def test_distilbert_has_no_mlp_for_the_cls_pooler(make_encoder, tmp_path):
    make_encoder("avg", kind="distilbert").backbone.save_pretrained(tmp_path)
    make_encoder("avg", kind="distilbert").tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="^pooler: `cls` needs the backbone's pooler"):
        load_encoder(tmp_path, pooler="cls")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["distilbert", "mpnet", "modernbert"])
def test_a_pruning_run_trains_exports_and_reloads(make_encoder, kind, tmp_path, toy_senteval_dir):
    from helpers import compose_train, pruning_run

    from train import train

    encoder = make_encoder("avg", kind=kind)
    model = tmp_path / "base"
    encoder.backbone.save_pretrained(model)
    encoder.tokenizer.save_pretrained(model)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"sentence {i} is about topic {i % 3} .\n" for i in range(8)))
    cfg = compose_train(pruning_run(tmp_path / "run", toy_senteval_dir, model, corpus, "trainer.max_epochs=2",
                                    "pruning.schedule=[{step:2}]", "pruning.head_sparsity=0.5",
                                    "pruning.ffn_sparsity=0.25", "model.encoder.pooler=avg",
                                    "save_model=true"))  # fmt: skip
    results = train(cfg)
    sparsity = results["sparsity"]
    assert (sparsity["prune/head_sparsity"], sparsity["prune/ffn_sparsity"]) == (0.5, 0.25)
    exported = load_encoder(tmp_path / "run" / "model")
    assert type(exported.backbone) is surgery.SPARSE_CLASSES[kind][1]
    assert sum(structure(exported.backbone)["heads"]) == 4 and sum(structure(exported.backbone)["ffn"]) == 96
    from_checkpoint = load_encoder(results["checkpoints"]["best"])
    assert (from_checkpoint.encode(TEXTS) - exported.encode(TEXTS)).abs().max() < 1e-5


def load_report(*rows: tuple[str, str]) -> logging.LogRecord:
    """transformers' load report as it logs it (colour codes included)."""
    table = ["Key                 | Status     |  | ", "--------------------+------------+--+-"]
    table += [f"{key:<20}| \x1b[33m{status}\x1b[0m |  | " for key, status in rows]
    text = (
        "\x1b[1mBertModel LOAD REPORT\x1b[0m from: /m\n"
        + "\n".join(table)
        + "\nNotes:\n- UNEXPECTED:\tcan be ignored"
    )
    return logging.LogRecord("transformers.modeling_utils", logging.WARNING, "", 0, text, None, None)


def test_only_the_report_of_an_unused_pooler_is_dropped():
    quiet = UnusedPoolerReport()
    assert not quiet.filter(
        load_report(("pooler.dense.weight", "UNEXPECTED"), ("pooler.dense.bias", "UNEXPECTED"))
    )
    assert quiet.filter(load_report(("pooler.dense.weight", "UNEXPECTED"), ("encoder.layer.0.x", "MISSING")))
    assert quiet.filter(load_report(("cls.predictions.bias", "UNEXPECTED")))
    other = logging.LogRecord(
        "transformers.modeling_utils", logging.WARNING, "", 0, "something else", None, None
    )
    assert quiet.filter(other)


def test_loading_without_the_pooler_prints_no_report(tmp_path, capfd):
    BertModel(BertConfig(vocab_size=99, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(tmp_path)  # fmt: skip
    config = AutoConfig.from_pretrained(tmp_path)
    load_backbone(str(tmp_path), config, add_pooling_layer=False, attn_implementation="sdpa")
    assert "LOAD REPORT" not in capfd.readouterr().err
