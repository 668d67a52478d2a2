from __future__ import annotations

import copy

import pytest
import torch
from helpers import tiny_bert
from transformers import AutoModel, RobertaConfig, RobertaModel

from sparsecse.architecture.surgery import (
    SparseBertConfig,
    SparseBertModel,
    SparseRobertaModel,
    check_structure,
    slice_linear,
)
from sparsecse.pruning.removal import apply_gates, cut_to_structure, remove_units, structure

TEXTS = ["a man is playing a guitar .", "the cat sat on the mat , quietly and alone ."]
ATTENTION = ["eager", "sdpa"]


@pytest.fixture(scope="module")
def batch(tokenizer):
    return dict(tokenizer(TEXTS, padding=True, return_tensors="pt"))  # padded: the mask matters


def run(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).last_hidden_state.float()


def zero_slices(module: torch.nn.Module, mask: torch.Tensor, size: int = 1):
    """Reference gating: multiply the input of `module` by `mask`, each entry covering `size` features."""

    def hook(_, args):
        return (args[0] * mask.repeat_interleave(size).to(args[0].dtype), *args[1:])

    return module.register_forward_pre_hook(hook)


def masks(model, removed_heads: dict[int, list[int]], removed_neurons: dict[int, list[int]]):
    """(head masks, neuron masks) over each layer's current units, 0 at the given positions."""
    heads, neurons = [], []
    for i, layer in enumerate(model.encoder.layer):
        h = torch.ones(layer.attention.self.query.out_features // layer.attention.self.attention_head_size)
        n = torch.ones(layer.intermediate.dense.out_features)
        h[removed_heads.get(i, [])] = 0
        n[removed_neurons.get(i, [])] = 0
        heads.append(h)
        neurons.append(n)
    return heads, neurons


@pytest.mark.parametrize("attn", ATTENTION)
def test_removing_heads_equals_zeroing_their_context(attn, batch):
    model = tiny_bert(attn_implementation=attn)
    heads, neurons = masks(model, {0: [1, 3], 1: [0]}, {})
    reference = copy.deepcopy(model)
    for layer, mask in zip(reference.encoder.layer, heads):
        zero_slices(layer.attention.output.dense, mask, layer.attention.self.attention_head_size)
    remove_units(model, heads, neurons)
    assert model.config._attn_implementation == attn
    assert (run(model, batch) - run(reference, batch)).abs().max() < 1e-5


@pytest.mark.parametrize("attn", ATTENTION)
def test_removing_neurons_equals_zeroing_their_activation(attn, batch):
    model = tiny_bert(attn_implementation=attn)
    heads, neurons = masks(model, {}, {0: list(range(0, 64, 3)), 1: [5, 6, 7]})
    reference = copy.deepcopy(model)
    for layer, mask in zip(reference.encoder.layer, neurons):
        zero_slices(layer.output.dense, mask)
    remove_units(model, heads, neurons)
    assert (run(model, batch) - run(reference, batch)).abs().max() < 1e-5


@pytest.mark.parametrize("attn", ATTENTION)
def test_one_head_left_and_different_head_counts_per_layer(attn, batch):
    model = tiny_bert(attn_implementation=attn)
    heads, neurons = masks(model, {0: [0, 1, 3], 1: [2]}, {})
    reference = copy.deepcopy(model)
    for layer, mask in zip(reference.encoder.layer, heads):
        zero_slices(layer.attention.output.dense, mask, layer.attention.self.attention_head_size)
    remove_units(model, heads, neurons)
    assert structure(model)["heads"] == [1, 3]
    assert [layer.attention.self.num_attention_heads for layer in model.encoder.layer] == [1, 3]
    assert (run(model, batch) - run(reference, batch)).abs().max() < 1e-5


def test_a_layer_may_keep_no_neurons(batch):
    model = tiny_bert().train()
    heads, neurons = masks(model, {}, {1: list(range(64))})
    remove_units(model, heads, neurons)
    assert structure(model)["ffn"] == [64, 0]
    model(**batch).last_hidden_state.sum().backward()  # forward and backward run
    bias = model.encoder.layer[1].output.dense.bias  # all that is left of the layer's FFN: it still learns
    assert bias.grad.isfinite().all() and bias.grad.abs().sum() > 0


def test_dtype_device_and_requires_grad_are_kept():
    model = tiny_bert().to(torch.bfloat16)
    model.embeddings.requires_grad_(False)
    model.encoder.layer[0].attention.self.key.weight.requires_grad_(False)
    heads, neurons = masks(model, {0: [2]}, {0: [1, 2]})
    remove_units(model, heads, neurons)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert not model.encoder.layer[0].attention.self.key.weight.requires_grad
    assert model.encoder.layer[0].attention.self.query.weight.requires_grad
    out = model(input_ids=torch.tensor([[101, 2023, 102]])).last_hidden_state
    assert out.dtype == torch.bfloat16 and out.isfinite().all()


def test_slice_linear_rows_and_columns():
    linear = torch.nn.Linear(4, 3).to(torch.float16)
    rows = slice_linear(linear, torch.tensor([0, 2]), dim=0)
    cols = slice_linear(linear, torch.tensor([1, 3]), dim=1)
    assert rows.weight.dtype == cols.weight.dtype == torch.float16
    assert torch.equal(rows.weight, linear.weight[[0, 2]]) and torch.equal(rows.bias, linear.bias[[0, 2]])
    assert torch.equal(cols.weight, linear.weight[:, [1, 3]]) and torch.equal(cols.bias, linear.bias)
    assert (rows.in_features, rows.out_features, cols.in_features, cols.out_features) == (4, 2, 2, 3)


def test_two_surgeries_compose_to_original_indices(batch):
    model = tiny_bert()
    once = copy.deepcopy(model)
    remove_units(model, *masks(model, {0: [1], 1: [1]}, {0: [0, 5], 1: [63]}))  # heads 0 2 3 | 0 2 3
    remove_units(model, *masks(model, {0: [1], 1: [0]}, {0: [0]}))  # positions: heads 2 | 0, neuron 1
    config = model.config
    assert config.kept_heads == [[0, 3], [2, 3]]
    assert config.kept_neurons[0] == [2, 3, 4] + list(range(6, 64))
    assert config.kept_neurons[1] == list(range(63))
    remove_units(once, *masks(once, {0: [1, 2], 1: [0, 1]}, {0: [0, 1, 5], 1: [63]}))
    assert once.config.kept_heads == config.kept_heads and once.config.kept_neurons == config.kept_neurons
    assert (run(model, batch) - run(once, batch)).abs().max() < 1e-6


def test_config_and_model_agree_and_rebuild(batch):
    model = tiny_bert(with_pooler=False)
    remove_units(model, *masks(model, {0: [0, 2], 1: [3]}, {1: [4, 8]}))
    assert isinstance(model, SparseBertModel) and isinstance(model.config, SparseBertConfig)
    assert model.config.model_type == "sparsecse_bert"
    assert all(layer.attention.self.config is model.config for layer in model.encoder.layer)
    check_structure(model)
    rebuilt = SparseBertModel(SparseBertConfig.from_dict(model.config.to_dict()), add_pooling_layer=False)
    rebuilt.load_state_dict(model.state_dict())  # strict: same names and shapes
    assert (run(rebuilt.eval(), batch) - run(model, batch)).abs().max() < 1e-6


def test_no_removal_keeps_config_lists_empty():
    model = tiny_bert()
    remove_units(model, *masks(model, {0: [1]}, {}))
    assert model.config.kept_heads == [[0, 2, 3], [0, 1, 2, 3]] and model.config.kept_neurons is None


def test_structure_counts():
    model = tiny_bert()
    dense = structure(model)
    remove_units(model, *masks(model, {0: [0]}, {1: list(range(32))}))
    info = structure(model)
    assert info["heads"] == [3, 4] and info["ffn"] == [64, 32]
    assert info["head_sparsity"] == 1 / 8 and info["ffn_sparsity"] == 0.25
    removed = 3 * (32 * 8 + 8) + 8 * 32 + 32 * (32 + 1) + 32 * 32  # q, k, v rows, output columns, FFN
    assert dense["params"] - info["params"] == removed
    assert (
        info["params"] - info["params_without_embeddings"]
        == dense["params"] - dense["params_without_embeddings"]
    )


def test_bad_masks_change_nothing():
    model = tiny_bert()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    heads, neurons = masks(model, {1: [0, 1, 2, 3]}, {0: [0]})
    with pytest.raises(ValueError, match=r"head_keep\[1\] removes every head"):
        remove_units(model, heads, neurons)
    with pytest.raises(ValueError, match="entries"):
        remove_units(model, [torch.ones(3), torch.ones(4)], neurons)
    with pytest.raises(ValueError, match="only 0 and 1"):
        remove_units(model, [torch.full((4,), 0.5), torch.ones(4)], neurons)
    assert type(model).__name__ == "BertModel" and model.config.model_type == "bert"
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_roberta_surgery_and_round_trip(tmp_path):
    torch.manual_seed(0)
    config = RobertaConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
    )
    model = RobertaModel(config, add_pooling_layer=False).eval()
    ids = torch.tensor([[0, 5, 6, 7, 2]])
    reference = copy.deepcopy(model)
    heads, neurons = masks(model, {1: [1, 2]}, {0: [3]})
    for layer, h, n in zip(reference.encoder.layer, heads, neurons):
        zero_slices(layer.attention.output.dense, h, layer.attention.self.attention_head_size)
        zero_slices(layer.output.dense, n)
    remove_units(model, heads, neurons)
    assert model.config.model_type == "sparsecse_roberta" and model.config.kept_heads[1] == [0, 3]
    assert (run(model, {"input_ids": ids}) - run(reference, {"input_ids": ids})).abs().max() < 1e-5
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path, add_pooling_layer=False)
    assert isinstance(loaded, SparseRobertaModel)
    assert torch.equal(run(loaded.eval(), {"input_ids": ids}), run(model, {"input_ids": ids}))


def test_apply_gates_makes_gated_encoder_physical(make_encoder):
    from sparsecse.pruning.gates import UnitGates

    encoder = make_encoder("cls")
    encoder.attach_gates(UnitGates(encoder.backbone))
    encoder.gates.head_0[[0, 3]] = 0
    encoder.gates.neuron_1[:10] = 0
    gated = encoder.encode(TEXTS)
    apply_gates(encoder)
    assert encoder.gates is None
    assert structure(encoder.backbone)["heads"] == [2, 4] and structure(encoder.backbone)["ffn"] == [64, 54]
    assert not any(m._forward_pre_hooks for m in encoder.backbone.modules())
    assert (encoder.encode(TEXTS) - gated).abs().max() < 1e-5


def test_a_dense_encoder_is_cut_to_a_recorded_structure(make_encoder):
    encoder = make_encoder(num_hidden_layers=3)
    cut_to_structure(encoder, [2, 4], [0, 48])
    assert structure(encoder.backbone)["heads"] == [2, 4] and structure(encoder.backbone)["ffn"] == [0, 48]
    assert encoder.encode(["a cat"]).shape == (1, 32)
    with pytest.raises(ValueError, match="layer 0: cannot cut 2 heads"):
        cut_to_structure(encoder, [3], [8])
    with pytest.raises(ValueError, match="need 1 to 2 layers"):
        cut_to_structure(encoder, [1, 1, 1], [8, 8, 8])
    assert structure(encoder.backbone)["heads"] == [2, 4]  # a refused cut changes nothing
