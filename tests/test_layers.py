"""Layer dropping: the layers chosen, each layer's importance against the loss measured without it, the
shallower model against the deep one with those layers skipped, and its export."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from helpers import TEXTS, compose_prune

from sparsecse.architecture.layout import encoder_layers
from sparsecse.cli.prune import prune
from sparsecse.core.errors import ConfigError
from sparsecse.export.model_io import load_encoder, save_sparse_encoder
from sparsecse.pruning.importance import Scorer
from sparsecse.pruning.layers import (
    LayerDrop,
    _LayerGate,
    drop_layers,
    evenly_spaced,
    layer_importance,
    most_important,
)
from sparsecse.training.data import ContrastiveCollator

OTHERS = ["a woman reads a book .", "the dog barks at night", "children play football in the rain"]


@pytest.fixture
def deep(make_encoder):
    """4 layers, dropout off: every forward is the same function."""
    return make_encoder("avg", num_hidden_layers=4, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def test_evenly_spaced_keeps_the_first_and_last_layers():
    assert evenly_spaced(12, 6) == [0, 2, 4, 7, 9, 11]
    assert evenly_spaced(6, 3) == [0, 2, 5] and evenly_spaced(6, 2) == [0, 5] and evenly_spaced(6, 1) == [5]
    assert evenly_spaced(4, 4) == [0, 1, 2, 3]
    with pytest.raises(ConfigError, match="keep: must be between 1 and the model's 6 layers, got 7"):
        evenly_spaced(6, 7)


def test_most_important_keeps_the_highest_in_model_order():
    assert most_important(torch.tensor([0.3, 0.9, 0.1, 0.5]), 2) == [1, 3]


def gated(encoder, values: list[float]):
    """Hooks that set each layer's gate: 1 unchanged, 0 skipped."""
    layers = encoder_layers(encoder.backbone)
    return [layer.register_forward_hook(_LayerGate(torch.tensor(v)), with_kwargs=True)
            for layer, v in zip(layers, values)]  # fmt: skip


def alignment_loss(encoder, views) -> torch.Tensor:
    with torch.no_grad():
        emb = encoder.train()(**{k: v.flatten(0, 1) for k, v in views.items()}, test_time=True)
    x, y = torch.nn.functional.normalize(emb.view(2, 3, -1), dim=-1)
    return (x - y).norm(dim=-1).pow(2).mean()


def test_layer_importance_is_the_measured_change_of_the_alignment_loss(deep, tokenizer):
    """`alignment` scores are |l_align(layer skipped) - l_align(whole)|, measured, not a gradient:
    here against the loss computed with each layer's gate at 0, with two views of different
    sentences so that the alignment loss is not zero."""
    tokens = ContrastiveCollator(tokenizer, 16)(TEXTS + OTHERS)  # one padding for both views
    views = {k: v[0].view(2, 3, -1) for k, v in tokens.items()}  # (2, B, T): TEXTS, OTHERS
    importance = layer_importance(deep, [views], Scorer("alignment"))
    whole, expected = alignment_loss(deep, views), []
    for i in range(4):
        hooks = gated(deep, [0.0 if j == i else 1.0 for j in range(4)])
        expected.append((alignment_loss(deep, views) - whole).abs())
        for hook in hooks:
            hook.remove()
    assert min(expected) > 1e-4
    torch.testing.assert_close(importance, torch.stack(expected), rtol=1e-4, atol=1e-7)


def test_layer_removal_runs_share_their_dropout_and_leave_the_random_state(make_encoder, tokenizer):
    """With dropout on, every run of a batch draws its dropout from the batch's seed; the scores follow
    the process's seed, and the process's random state is as it was afterwards."""
    from sparsecse.pruning.layers import _seeded_losses, removal_stats

    encoder = make_encoder("avg", num_hidden_layers=3)
    tokens = ContrastiveCollator(tokenizer, 16)(TEXTS + OTHERS)
    views = {k: v[0].view(2, 3, -1) for k, v in tokens.items()}
    torch.manual_seed(5)
    first = removal_stats(encoder, [views, views])
    after = torch.rand(3)
    torch.manual_seed(5)
    second = removal_stats(encoder, [views, views])
    torch.testing.assert_close(torch.rand(3), after)
    for a, b in zip(first.abs_align + first.align, second.abs_align + second.align):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(_seeded_losses(encoder, views, 11), _seeded_losses(encoder, views, 11))
    assert not torch.equal(_seeded_losses(encoder, views, 11)[0], _seeded_losses(encoder, views, 12)[0])


def test_a_dropped_model_is_the_deep_model_with_those_layers_skipped(deep):
    skipped = copy.deepcopy(deep)
    hooks = gated(skipped, [1.0, 0.0, 0.0, 1.0])
    expected = skipped.encode(TEXTS)
    for hook in hooks:
        hook.remove()
    drop_layers(deep, [3, 0])
    assert deep.backbone.config.num_hidden_layers == 2 and len(encoder_layers(deep.backbone)) == 2
    torch.testing.assert_close(deep.encode(TEXTS), expected)
    assert not torch.allclose(skipped.encode(TEXTS), expected), "skipping changed the function"


def test_a_dropped_model_saves_as_a_plain_bert_and_reloads(deep, tmp_path):
    drop_layers(deep, [0, 2])
    save_sparse_encoder(deep, tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["num_hidden_layers"] == 2 and config["model_type"] == "bert", "loads without this project"
    torch.testing.assert_close(load_encoder(str(tmp_path / "m"), "avg").encode(TEXTS), deep.encode(TEXTS))


def test_bad_layer_settings():
    with pytest.raises(ConfigError, match="choose: must be 'evenly' or 'importance', got 'first'"):
        LayerDrop(keep=2, choose="first")
    with pytest.raises(ConfigError, match="keep: must be greater than or equal to 1, got 0"):
        LayerDrop(keep=0)


@pytest.mark.parametrize("choose", ["evenly", "importance"])
def test_keeping_more_layers_than_the_model_has_is_refused_before_anything_runs(
    choose, tmp_path, toy_senteval_dir, tiny_model_dir, deep
):
    """`keep >= total` once returned every layer and ran the whole job; the tiny model has 2 layers."""
    out = tmp_path / "out"
    cfg = compose_prune([f"model={tiny_model_dir}", "layers.keep=3", f"layers.choose={choose}",
                         f"output_dir={out}", f"data_dir={toy_senteval_dir}"])  # fmt: skip
    message = r"^layers\.keep: must be between 1 and the model's 2 layers, got 3$"
    with pytest.raises(ConfigError, match=message):
        prune(cfg)
    assert not out.exists(), "refused before anything is written"
    with pytest.raises(ConfigError, match="keep: must be between 1 and the model's 4 layers, got 5"):
        LayerDrop(keep=5, choose=choose).kept(deep, [], Scorer())
    assert LayerDrop(keep=4, choose="evenly").kept(deep, [], Scorer()) == [0, 1, 2, 3]


@pytest.mark.parametrize("choose", ["evenly", "importance"])
def test_sparsecse_prune_drops_layers_then_prunes_units(tmp_path, toy_senteval_dir, tiny_model_dir, choose):
    out = tmp_path / "shallow"
    cfg = compose_prune([f"model={tiny_model_dir}", "pooler=avg", "layers.keep=1", f"layers.choose={choose}",
                         "pruning.head_sparsity=0.5", "pruning.ffn_sparsity=0", "pruning.num_batches=1",
                         "tasks=[stsb]", f"output_dir={out}", f"data_dir={toy_senteval_dir}",
                         "batch_size=8"])  # fmt: skip
    results = prune(cfg)
    assert len(results["layers_kept"]) == 1 and (choose == "importance" or results["layers_kept"] == [1])
    assert results["sparsity"]["prune/head_sparsity"] == 0.5
    config = json.loads((out / "config.json").read_text())
    assert (
        config["num_hidden_layers"] == 1
        and len(config["kept_heads"]) == 1
        and len(config["kept_heads"][0]) == 2
    )
    assert (
        f"Transformer layers kept: {results['layers_kept']} of the 2 of `{tiny_model_dir}` (chosen {choose})."
        in (out / "README.md").read_text()
    )
    loaded = load_encoder(str(out), "avg")
    assert loaded.encode(TEXTS).shape == (3, 32)
