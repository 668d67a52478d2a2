"""Distillation recovery after pruning: the teacher cache's key and invalidation, the loss, and a tiny
model that recovers from a planted damage."""

from __future__ import annotations

import copy
import json
import logging

import pytest
import torch
from helpers import TEXTS, compose_prune

from sparsecse.cli.prune import prune
from sparsecse.core.errors import ConfigError
from sparsecse.data.corpora import corpus_sentences
from sparsecse.export.model_card import recovery_sentence
from sparsecse.pruning.recovery import (
    Recovery,
    distillation_loss,
    layer_loss,
    recover,
    sentence_order,
    teacher_digest,
    teacher_embeddings,
)

SENTENCES = [f"sentence {i} is about topic {i % 5} and a {['cat', 'dog', 'man'][i % 3]} ." for i in range(48)]


@pytest.fixture
def teacher(make_encoder):
    return make_encoder("avg", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).eval()


def test_the_digest_changes_with_each_input_and_only_with_them(teacher, make_encoder):
    digest = teacher_digest(teacher, SENTENCES, 32)
    assert teacher_digest(copy.deepcopy(teacher), list(SENTENCES), 32) == digest
    nudged = copy.deepcopy(teacher)
    with torch.no_grad():
        nudged.backbone.encoder.layer[1].output.dense.bias[3] += 1e-6
    others = {
        "one weight": teacher_digest(nudged, SENTENCES, 32),
        "one sentence": teacher_digest(teacher, [*SENTENCES[:-1], SENTENCES[-1] + " !"], 32),
        "the order": teacher_digest(teacher, SENTENCES[::-1], 32),
        "max_length": teacher_digest(teacher, SENTENCES, 16),
        "the pooler": teacher_digest(make_encoder("cls_before_pooler"), SENTENCES, 32),
    }
    assert len(set(others.values()) | {digest}) == len(others) + 1, others


def encodes(monkeypatch, teacher) -> list[int]:
    calls = []
    original = teacher.encode
    monkeypatch.setattr(
        teacher, "encode", lambda texts, **kw: calls.append(len(texts)) or original(texts, **kw)
    )
    return calls


def test_the_cache_is_built_once_then_read(tmp_path, teacher, monkeypatch):
    calls = encodes(monkeypatch, teacher)
    first = teacher_embeddings(teacher, SENTENCES, 32, tmp_path)
    second = teacher_embeddings(teacher, SENTENCES, 32, tmp_path)
    assert calls == [48] and torch.equal(first, second) and first.shape == (48, 32)
    torch.testing.assert_close(first, teacher.encode(SENTENCES, max_length=32))
    assert [p.suffix for p in tmp_path.iterdir()] == [".pt"], "no temporary file left behind"


@pytest.mark.parametrize("damage", ["truncated", "flipped value", "other digest", "fewer rows", "not torch"])
def test_a_corrupt_or_stale_cache_is_rebuilt_never_used(tmp_path, teacher, monkeypatch, caplog, damage):
    good = teacher_embeddings(teacher, SENTENCES, 32, tmp_path)
    (path,) = tmp_path.iterdir()
    record = torch.load(path, weights_only=True)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:-100])
    elif damage == "not torch":
        path.write_text("hello")
    else:
        if damage == "flipped value":
            record["embeddings"][3, 4] += 1.0
        elif damage == "other digest":
            record["digest"] = "0" * 64
        else:
            record["embeddings"] = record["embeddings"][:-1]
        torch.save(record, path)
    calls = encodes(monkeypatch, teacher)
    with caplog.at_level(logging.WARNING, logger="sparsecse.pruning.recovery"):
        rebuilt = teacher_embeddings(teacher, SENTENCES, 32, tmp_path)
    assert calls == [48] and torch.equal(rebuilt, good)
    assert f"teacher cache {path}: " in caplog.text and "rebuilding it" in caplog.text
    assert torch.equal(torch.load(path, weights_only=True)["embeddings"], good), (
        "the rebuilt cache is written"
    )


def test_the_loss_is_zero_exactly_when_student_equals_teacher():
    torch.manual_seed(0)
    x = torch.randn(6, 8)
    for weights in ((1.0, 0.0), (0.0, 1.0), (1.0, 1.0)):
        assert distillation_loss(x, x.clone(), *weights).item() == pytest.approx(0.0, abs=1e-6)
    y = x + 0.1 * torch.randn(6, 8)
    assert distillation_loss(y, x, 1.0, 0.0) == pytest.approx(((y - x) ** 2).mean().item())
    cosine = (1 - torch.nn.functional.cosine_similarity(y, x)).mean().item()
    assert distillation_loss(y, x, 0.5, 2.0) == pytest.approx(0.5 * ((y - x) ** 2).mean().item() + 2 * cosine)


def test_an_undamaged_student_starts_at_zero_loss(teacher):
    student = copy.deepcopy(teacher)
    embeddings = teacher.encode(SENTENCES, max_length=32)
    losses = recover(student, SENTENCES, embeddings, Recovery(steps=1, batch_size=8, lr=1e-9))
    assert losses[0] == pytest.approx(0.0, abs=1e-10)


def test_a_tiny_model_recovers_most_of_a_planted_damage(teacher):
    embeddings = teacher.encode(SENTENCES, max_length=32)
    student = copy.deepcopy(teacher)
    torch.manual_seed(1)
    with torch.no_grad():  # the damage: noise on every weight matrix of layer 1
        for weight in student.backbone.encoder.layer[1].parameters():
            if weight.dim() == 2:
                weight.add_(2.0 * weight.std() * torch.randn_like(weight))

    def error() -> float:
        return torch.nn.functional.mse_loss(student.encode(TEXTS), teacher.encode(TEXTS)).item()

    damaged = error()
    recover(student, SENTENCES, embeddings, Recovery(steps=60, batch_size=16, lr=3e-4, warmup_ratio=0.0))
    assert damaged > 1e-3 and error() < 0.3 * damaged, (damaged, error())  # held-out TEXTS


@pytest.mark.parametrize("training", [True, False])
def test_recover_leaves_the_mode_and_runs_after_step_every_step(teacher, training):
    """In training, the callback's student must stay in train mode after its recovery."""
    student = copy.deepcopy(teacher).train(training)
    calls = []
    recover(student, SENTENCES, teacher.encode(SENTENCES, max_length=32), Recovery(steps=3, batch_size=4),
            after_step=lambda: calls.append(student.training))  # fmt: skip
    assert student.training is training and calls == [True, True, True]


@pytest.mark.parametrize("training", [True, False])
def test_with_dropout_off_the_student_trains_as_it_serves_and_is_left_as_it_came(teacher, training):
    student = copy.deepcopy(teacher).train(training)
    dropout = [m for m in student.modules() if isinstance(m, torch.nn.Dropout)]
    calls = []
    recover(student, SENTENCES, teacher.encode(SENTENCES, max_length=32),
            Recovery(steps=2, batch_size=4, without_dropout=True),
            after_step=lambda: calls.append([m.training for m in dropout]))  # fmt: skip
    assert dropout and calls == [[False] * len(dropout)] * 2 and student.training is training


@pytest.mark.parametrize("shown", [True, False])
def test_recovery_shows_its_steps_and_loss_only_when_asked(teacher, capsys, shown):
    """A recovery of hundreds of steps runs for minutes: its bar counts the steps and shows the loss."""
    losses = recover(copy.deepcopy(teacher), SENTENCES, teacher.encode(SENTENCES, max_length=32),
                     Recovery(steps=3, batch_size=4), show_progress=shown)  # fmt: skip
    bar = capsys.readouterr().err
    if shown:
        assert "recovery" in bar and "3/3" in bar and f"loss={losses[-1]:.5f}" in bar, bar
    else:
        assert bar == ""


def test_sentences_are_drawn_in_seeded_permutations():
    order = sentence_order(10, steps=3, batch_size=4, seed=0)
    assert order.shape == (3, 4) and sorted(order.flatten()[:10].tolist()) == list(range(10))
    assert torch.equal(order, sentence_order(10, 3, 4, seed=0))
    assert not torch.equal(order, sentence_order(10, 3, 4, seed=1))
    assert corpus_sentences(["a", "b", "a", ("c", "b", "d")]) == ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"steps": 5, "mse_weight": 0.0}, "mse_weight: every loss weight is 0"),
        ({"steps": -1}, "steps: must be greater than or equal to 0, got -1"),
        ({"lr": 0.0}, "lr: must be greater than 0"),
        ({"cosine_weight": -1.0}, "cosine_weight: must be greater than or equal to 0"),
        ({"contrastive_weight": 1.0, "without_dropout": True}, "without_dropout: contrastive_weight needs"),
    ],
)
def test_bad_recovery_settings(options, message):
    with pytest.raises(ConfigError, match=message):
        Recovery(**options)


def test_a_bad_recovery_setting_stops_prune_before_anything_loads(toy_senteval_dir, monkeypatch):
    import sparsecse.export.model_io

    monkeypatch.setattr(
        sparsecse.export.model_io.AutoModel, "from_pretrained", lambda *a, **k: pytest.fail("loaded")
    )
    with pytest.raises(ConfigError, match="^recovery.batch_size: must be greater than or equal to 1, got 0$"):
        prune(compose_prune([f"data_dir={toy_senteval_dir}", "output_dir=x", "recovery.batch_size=0"]))


@pytest.mark.slow
def test_sparsecse_prune_recovers_and_reports_both_models(tmp_path, toy_senteval_dir, tiny_model_dir):
    out = tmp_path / "sparse"
    cfg = compose_prune([f"model={tiny_model_dir}", "pooler=avg", "pruning.head_sparsity=0.5",
                         "pruning.ffn_sparsity=0.5", "pruning.num_batches=1", "tasks=[stsb]",
                         f"output_dir={out}", f"data_dir={toy_senteval_dir}", "batch_size=8",
                         "recovery.steps=3", "recovery.batch_size=8",
                         f"recovery.cache_dir={tmp_path / 'cache'}"])  # fmt: skip
    results = prune(cfg)
    assert set(results) >= {"before", "pruned", "after", "recovery"} and results["recovery"]["steps"] == 3
    assert results["pruned"] != results["after"], "recovery changed the model"
    assert json.loads((out / "results.json").read_text())["recovery"] == results["recovery"]
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1
    card = (out / "README.md").read_text()
    assert (f"Recovered by distillation from `{tiny_model_dir}` as it was before anything was removed: 3 "
            "steps of batch 8 on `snli_sentences`, lr 0.0001, loss 1 x MSE.") in card  # fmt: skip


def test_the_layer_loss_is_the_mean_over_layers_of_the_mse_over_real_tokens():
    torch.manual_seed(0)
    student, teacher = [torch.randn(2, 5, 4) for _ in range(2)], [torch.randn(2, 5, 4) for _ in range(2)]
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    real = mask.bool()
    expected = torch.stack([((s - t)[real] ** 2).mean() for s, t in zip(student, teacher)]).mean()
    torch.testing.assert_close(layer_loss(student, teacher, mask), expected)
    padded = [s.clone() for s in student]
    padded[0][0, 3:] += 100.0  # padding positions do not count
    torch.testing.assert_close(layer_loss(padded, teacher, mask), expected)
    assert layer_loss(teacher, teacher, mask).item() == 0.0


def test_each_kept_layer_is_distilled_from_the_layer_it_was(make_encoder):
    """A student cut to layers [0, 2] of a 3-layer teacher: its first layer is the teacher's first, on
    the same input, so mapped to it the layer loss is that of the second alone; a wrong map is not."""
    from sparsecse.pruning.layers import drop_layers
    from sparsecse.pruning.recovery import LayerTeacher, layer_outputs

    quiet = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    teacher = make_encoder("avg", num_hidden_layers=3, **quiet)
    student = copy.deepcopy(teacher)
    drop_layers(student, [0, 2])
    tokens = student.tokenize(TEXTS, 16)
    with torch.no_grad(), layer_outputs(student.eval()) as own:
        student(**tokens, test_time=True)
    theirs = LayerTeacher(teacher, [0, 2]).hidden_states(tokens)
    torch.testing.assert_close(own[0], theirs[0])
    assert not torch.allclose(own[1], theirs[1]), "the second kept layer sees another input"
    mask = tokens["attention_mask"]
    assert layer_loss(own, theirs, mask) == pytest.approx(layer_loss(own[1:], theirs[1:], mask).item() / 2)
    wrong = LayerTeacher(teacher, [1, 2]).hidden_states(tokens)
    assert layer_loss(own, wrong, mask) > layer_loss(own, theirs, mask)


def test_layer_wise_recovery_brings_the_kept_layers_to_the_teachers(teacher):
    from sparsecse.pruning.layers import drop_layers
    from sparsecse.pruning.recovery import LayerTeacher, layer_outputs

    student = copy.deepcopy(teacher)
    drop_layers(student, [1])
    embeddings = teacher.encode(SENTENCES, max_length=32)
    layers = LayerTeacher(copy.deepcopy(teacher), [1])
    config = Recovery(steps=40, batch_size=16, lr=3e-4, warmup_ratio=0.0, mse_weight=0.0, layer_weight=1.0)
    with pytest.raises(ValueError, match="layer_weight > 0 needs the teacher encoder"):
        recover(student, SENTENCES, embeddings, config)
    with pytest.raises(ValueError, match=r"student layers \[0, 1\] mapped, the student has 1"):
        recover(student, SENTENCES, embeddings, config, layer_teacher=LayerTeacher(teacher, [0, 1]))
    losses = recover(student, SENTENCES, embeddings, config, layer_teacher=layers)
    assert losses[-1] < 0.5 * losses[0], losses
    tokens = student.tokenize(TEXTS, 16)
    with torch.no_grad(), layer_outputs(student.eval()) as own:
        student(**tokens, test_time=True)
    held_out = layer_loss(own, layers.hidden_states(tokens), tokens["attention_mask"]).item()
    assert held_out < 0.5 * losses[0], (held_out, losses[0])
    assert recovery_sentence(config, "snli").endswith(
        "loss 1 x each kept layer's hidden-state MSE against the layer it was."
    )


def test_the_digest_reads_a_gated_teacher_whose_layer_gates_are_scalars(teacher):
    """A teacher in training carries its gates, the layer gates among them 0-dim tensors."""
    from sparsecse.pruning.sparsifier import Sparsifier

    gated = copy.deepcopy(teacher)
    Sparsifier().attach(gated)
    digest = teacher_digest(gated, SENTENCES, 32)
    assert digest != teacher_digest(teacher, SENTENCES, 32)
    gated.gates.layer_1.zero_()
    assert teacher_digest(gated, SENTENCES, 32) != digest
