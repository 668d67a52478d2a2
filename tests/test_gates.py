from __future__ import annotations

import pytest
import torch
from helpers import TEXTS

from sparsecse.pruning.gates import Sparsity, UnitGates, WeightMasks, prunable_linears


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_gates_at_one_are_the_plain_model_bit_for_bit(make_encoder, attn):
    encoder = make_encoder("avg", attn_implementation=attn).eval()
    batch = encoder.tokenize(TEXTS)
    plain = encoder(**batch)
    encoder.attach_gates(UnitGates(encoder.backbone))
    assert torch.equal(encoder(**batch), plain)


def zero_head_by_hand(layer, head: int, size: int):
    """The reference: zero one head's slice of the attention context with a hook of our own."""

    def hook(module, args):
        context = args[0].clone()
        context[..., head * size : (head + 1) * size] = 0
        return (context,)

    return layer.attention.output.dense.register_forward_pre_hook(hook)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_head_gate_at_zero_removes_exactly_that_head(make_encoder, attn):
    encoder = make_encoder("avg", attn_implementation=attn).eval()
    batch = encoder.tokenize(TEXTS)
    layer = encoder.backbone.encoder.layer[1]
    handle = zero_head_by_hand(layer, 2, layer.attention.self.attention_head_size)
    expected = encoder(**batch)
    handle.remove()
    encoder.attach_gates(UnitGates(encoder.backbone))
    encoder.gates.head_1[2] = 0
    torch.testing.assert_close(encoder(**batch), expected, atol=0, rtol=0)
    encoder.gates.head_1[2] = 1
    assert not torch.allclose(encoder(**batch), expected)


def test_neuron_gate_zeroes_the_activation(make_encoder):
    encoder = make_encoder("avg").eval()
    batch = encoder.tokenize(TEXTS)
    seen = {}
    encoder.attach_gates(UnitGates(encoder.backbone))
    encoder.gates.neuron_0[[3, 7]] = 0

    def record(module, args, output):
        seen["x"] = args[0]

    encoder.backbone.encoder.layer[0].output.dense.register_forward_hook(record)
    encoder(**batch)
    assert torch.count_nonzero(seen["x"][..., [3, 7]]) == 0 and torch.count_nonzero(seen["x"][..., 0]) > 0


def test_gate_gradients_equal_finite_differences(make_encoder):
    """float64: dl/dgate from autograd against a central difference on each of a few gates."""
    encoder = make_encoder("avg", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                           attn_implementation="eager").double().eval()  # fmt: skip
    encoder.attach_gates(UnitGates(encoder.backbone).double())
    batch = encoder.tokenize(TEXTS)
    target = torch.randn(len(TEXTS), 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def loss():
        return ((encoder(**batch) - target) ** 2).sum()

    gates = encoder.gates.tensors()
    for g in gates:
        g.requires_grad_(True)
    grads = torch.autograd.grad(loss(), gates)
    eps = 1e-4  # float64 round-off in the loss (~1e-14) over 2 eps stays far below the gradients
    with torch.no_grad():
        for tensor_index, unit in ((0, 1), (1, 3), (2, 5), (3, 60)):
            gate = gates[tensor_index]
            gate[unit] += eps
            up = loss()
            gate[unit] -= 2 * eps
            down = loss()
            gate[unit] += eps
            numeric = (up - down) / (2 * eps)
            assert grads[tensor_index][unit].item() == pytest.approx(numeric.item(), rel=1e-5, abs=1e-8)


def test_gates_travel_in_the_state_dict(make_encoder):
    encoder = make_encoder("avg")
    encoder.attach_gates(UnitGates(encoder.backbone))
    encoder.gates.head_0[1] = 0
    state = encoder.state_dict()
    assert "gates.head_0" in state and state["gates.head_0"][1] == 0
    assert "gates.head_0" not in encoder.backbone.state_dict()


def test_weight_masks_survive_optimizer_steps_and_weight_decay(make_encoder):
    encoder = make_encoder("avg")
    encoder.attach_masks(WeightMasks(encoder.backbone))
    key = next(iter(encoder.masks.linears))
    mask = encoder.masks.mask(key)
    keep = torch.rand(mask.shape, generator=torch.Generator().manual_seed(0)) > 0.5
    encoder.masks.set(key, keep)
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=1e-2, weight_decay=0.1)
    batch = encoder.tokenize(TEXTS)
    for _ in range(3):
        encoder(**batch).pow(2).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
        encoder.masks.apply_masks()
    weight = encoder.masks.linears[key].weight
    assert torch.count_nonzero(weight[~keep]) == 0 and torch.count_nonzero(weight[keep]) > 0


def test_prunable_linears_are_the_layers_linears_only(make_encoder):
    encoder = make_encoder("cls")
    names = list(prunable_linears(encoder.backbone))
    assert len(names) == 2 * 6 and "layer0.attention.self.query" in names
    assert not any("pooler" in n or "embeddings" in n for n in names)


def test_a_layer_gate_at_zero_is_the_model_without_that_layer_and_export_drops_it(make_encoder):
    """Gated off, a layer's output is its input: the encoder is the one with the layer dropped, bit
    for bit; the export drops it and slices the other layers' gated units."""
    import copy

    from sparsecse.pruning.gates import effective_parameters, sparsity_summary
    from sparsecse.pruning.layers import drop_layers
    from sparsecse.pruning.removal import remove_pruned_units

    encoder = make_encoder("avg", num_hidden_layers=3).eval()
    batch = encoder.tokenize(TEXTS)
    shallow = copy.deepcopy(encoder)
    drop_layers(shallow, [0, 2])
    encoder.attach_gates(UnitGates(encoder.backbone))
    encoder.gates.layer_1.zero_()
    torch.testing.assert_close(encoder(**batch), shallow(**batch), atol=0, rtol=0)
    encoder.gates.head_2[0] = 0
    layer_params = sum(p.numel() for p in encoder.backbone.encoder.layer[1].parameters())
    dense_params = sum(p.numel() for p in encoder.backbone.encoder.layer.parameters())
    summary = sparsity_summary(encoder)
    assert summary.layers == 2 and summary.heads[1] == 0
    assert effective_parameters(encoder) < dense_params - layer_params
    gated = encoder(**batch)
    remove_pruned_units(encoder)
    assert len(encoder.backbone.encoder.layer) == 2 and encoder.backbone.config.num_hidden_layers == 2
    assert encoder.backbone.encoder.layer[1].attention.self.num_attention_heads == 3
    torch.testing.assert_close(encoder(**batch), gated, atol=1e-6, rtol=1e-5)


def test_a_checkpoint_from_before_layer_gates_loads_with_every_layer_kept(make_encoder):
    encoder = make_encoder("avg", num_hidden_layers=2)
    gates = UnitGates(encoder.backbone)
    gates.head_0[1] = 0
    earlier = {k: v for k, v in gates.state_dict().items() if not k.startswith("layer_")}
    loaded = UnitGates(encoder.backbone)
    loaded.load_state_dict(earlier)
    assert loaded.kept_layers() == [0, 1] and loaded.head_0[1] == 0


def test_the_sparsity_record_keeps_the_keys_results_and_dashboards_use():
    reached = Sparsity(1234, head_sparsity=0.25, ffn_sparsity=0.5, layers=2, heads=(4, 2), neurons=(64, 0))
    assert reached.metrics() == {
        "prune/encoder_parameters": 1234.0, "prune/head_sparsity": 0.25, "prune/ffn_sparsity": 0.5,
        "prune/layers": 2.0, "prune/heads_layer0": 4.0, "prune/neurons_layer0": 64.0,
        "prune/heads_layer1": 2.0, "prune/neurons_layer1": 0.0,
    }  # fmt: skip
    assert Sparsity(10, weight_sparsity=0.3).metrics() == {"prune/encoder_parameters": 10.0,
                                                            "prune/weight_sparsity": 0.3}  # fmt: skip
