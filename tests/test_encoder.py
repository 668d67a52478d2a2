from __future__ import annotations

import pytest
import torch
from helpers import TEXTS

from sparsecse.core.errors import ConfigError
from sparsecse.core.paths import resolve_model_path
from sparsecse.export.model_io import load_encoder
from sparsecse.model.encoder import POOLERS, masked_mean


def test_masked_mean_ignores_padding():
    hidden = torch.tensor([[[1.0], [3.0], [100.0]]])
    assert masked_mean(hidden, torch.tensor([[1, 1, 0]])).item() == 2.0


@pytest.mark.parametrize("pooler", POOLERS)
def test_poolers_match_their_definition(make_encoder, pooler):
    encoder = make_encoder(pooler).eval()
    batch = encoder.tokenize(TEXTS)
    out = encoder.backbone(**batch, output_hidden_states=True)
    layers, mask = out.hidden_states, batch["attention_mask"]
    expected = {
        "cls": out.pooler_output,
        "cls_before_pooler": out.last_hidden_state[:, 0],
        "avg": masked_mean(out.last_hidden_state, mask),
        "avg_first_last": masked_mean((layers[1] + layers[-1]) / 2, mask),
        "avg_top2": masked_mean((layers[-2] + layers[-1]) / 2, mask),
    }[pooler]
    torch.testing.assert_close(encoder(**batch), expected)


def test_mlp_only_train_drops_the_mlp_at_evaluation(make_encoder):
    encoder = make_encoder(
        "cls", mlp_only_train=True, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    batch = encoder.tokenize(TEXTS)
    trained = encoder.train()(**batch)
    evaluated = encoder.eval()(**batch)
    out = encoder.backbone(**batch)
    torch.testing.assert_close(trained, out.pooler_output)
    torch.testing.assert_close(evaluated, out.last_hidden_state[:, 0])


def test_encode_keeps_input_order_and_ignores_batching(make_encoder):
    encoder = make_encoder("avg")
    one_by_one = torch.cat([encoder.encode([t]) for t in TEXTS])
    batched = encoder.encode(TEXTS, batch_size=2)
    torch.testing.assert_close(batched, one_by_one, atol=1e-5, rtol=1e-5)
    assert encoder.training, "encode must restore the training mode"


def test_encode_truncates_only_when_asked(make_encoder):
    encoder = make_encoder("avg")
    long_text = " ".join(["word"] * 50)
    full, cut = encoder.encode([long_text]), encoder.encode([long_text], max_length=8)
    assert not torch.allclose(full, cut)


def test_unknown_pooler_is_rejected_before_loading():
    with pytest.raises(ConfigError, match="pooler: must be 'cls', .*, got 'mean'"):
        load_encoder("/does/not/matter", pooler="mean")


def test_unknown_model_names_the_model(tmp_path):
    with pytest.raises(ConfigError, match="name_or_path: cannot load model"):
        load_encoder(str(tmp_path / "nope"), pooler="avg")


def test_minilm_short_name_resolves_to_the_installed_wheel():
    path = resolve_model_path("minilm")
    assert path.endswith("model") and (__import__("pathlib").Path(path) / "config.json").is_file()


def test_reset_mlp_draws_fresh_weights(make_encoder):
    encoder = make_encoder("cls")
    before = encoder.backbone.pooler.dense.weight.clone()
    encoder.reset_mlp()
    assert not torch.equal(before, encoder.backbone.pooler.dense.weight)
    assert torch.count_nonzero(encoder.backbone.pooler.dense.bias) == 0


def test_saved_encoder_loads_back_by_path(make_encoder, tmp_path):
    encoder = make_encoder("avg").eval()
    encoder.save_pretrained(tmp_path / "model")
    assert (tmp_path / "model" / "model.safetensors").is_file()
    loaded = load_encoder(str(tmp_path / "model"), "avg")
    torch.testing.assert_close(loaded.encode(TEXTS), encoder.encode(TEXTS))


MIXED = TEXTS + ["ok", "a " * 20 + "long one", "three word text", "yes"]


@pytest.mark.parametrize("pooler", ["avg", "cls", "avg_first_last"])
@pytest.mark.parametrize("max_length", [None, 8])
def test_compiled_encode_pads_to_few_shapes_and_matches_eager(make_encoder, pooler, max_length):
    from sparsecse.model.encoder import STATIC_LENGTHS

    encoder = make_encoder(pooler)
    eager = encoder.encode(MIXED, batch_size=3, max_length=max_length)
    encoder.compile_for_inference(backend="eager")  # the padding logic; inductor's is the slow test's
    compiled, shapes = encoder.compiled_forward, []
    encoder.compiled_forward = lambda **batch: shapes.append(batch["input_ids"].shape) or compiled(**batch)
    static = encoder.encode(MIXED, batch_size=3, max_length=max_length)
    torch.testing.assert_close(static, eager, atol=1e-5, rtol=1e-5)
    assert len(shapes) == 3 and all(rows == 3 and length in STATIC_LENGTHS for rows, length in shapes)
    assert encoder.training, "encode must restore the training mode"


@pytest.mark.slow
def test_inductor_compiled_encode_matches_eager(make_encoder):
    encoder = make_encoder("avg")
    eager = encoder.encode(MIXED, batch_size=4)
    encoder.compile_for_inference()
    torch.testing.assert_close(encoder.encode(MIXED, batch_size=4), eager, atol=1e-4, rtol=1e-4)
