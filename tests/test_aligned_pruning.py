"""FFN widths kept at multiples of N (`ffn_multiple_of`): GPU GEMMs whose inner size is not a multiple
of 8 fall back to slow kernels, so a pruned encoder must keep aligned widths to run faster."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers import views

from sparsecse.pruning.gates import Sparsity
from sparsecse.pruning.removal import remove_pruned_units
from sparsecse.pruning.schedule import PruningEvent
from sparsecse.pruning.selection import aligned_counts, keep_top, select_kept
from sparsecse.pruning.sparsifier import Sparsifier, event_outcome


def test_counts_round_to_multiples_and_keep_the_total_nearest():
    # floors 32 each (96); 150 kept is 4.69 multiples, so two layers keep one more: the largest
    # remainders (18 each, a tie: the first layers)
    assert aligned_counts([50, 50, 50], [128] * 3, 32) == [64, 64, 32]
    assert aligned_counts([100, 37, 64, 0], [128] * 4, 32) == [96, 32, 64, 0]  # 201 -> 6 multiples
    assert aligned_counts([120, 10, 10], [128] * 3, 32) == [128, 0, 0]  # 140 -> 4 multiples (4.4)
    assert aligned_counts([20, 20], [16, 128], 16) == [16, 16], "a layer keeps no more than it has"


def test_a_layer_falls_below_one_multiple_only_when_the_ranking_says_so():
    # layer 0's units are all poor: the global ranking keeps 3 of them, which rounds to none
    importance = [torch.tensor([0.1, 0.2, 0.3, 0.05] * 4), torch.arange(1.0, 17.0)]
    alive = [torch.ones(16, dtype=torch.bool)] * 2
    kept = select_kept(importance, alive, n_remove=13)
    assert [int(k.sum()) for k in kept] == [3, 16]
    counts = aligned_counts([3, 16], [16, 16], 8)
    assert counts == [0, 16]
    aligned = keep_top(importance, alive, counts)
    assert not aligned[0].any() and aligned[1].all()


def test_keep_top_keeps_each_layers_best_alive_units():
    importance = [torch.tensor([5.0, 1.0, 4.0, 3.0])]
    alive = [torch.tensor([False, True, True, True])]  # the best unit is already gone
    assert keep_top(importance, alive, [2])[0].tolist() == [False, False, True, True]


@pytest.mark.parametrize("multiple", [8, 16])
def test_every_layer_keeps_a_multiple_and_the_total_is_the_nearest_achievable(make_encoder, multiple):
    encoder = make_encoder("avg", intermediate_size=128)  # 2 layers of 128 FFN neurons: 8 multiples of 16
    sparsifier = Sparsifier(num_batches=1, ffn_multiple_of=multiple)
    sparsifier.attach(encoder)
    importance = sparsifier.importance(encoder, iter([views(encoder)]))
    for target in (0.3, 0.6):  # cumulative events: the second starts from aligned widths
        summary = sparsifier.apply(encoder, PruningEvent("step", 1, 0.25, target), importance)
        widths = [int(g.sum()) for g in encoder.gates.neurons]
        assert all(w % multiple == 0 for w in widths), widths
        nearest = round(256 * (1 - target) / multiple) * multiple  # kept, the nearest multiple to the target
        assert sum(widths) == nearest and summary.ffn_sparsity == 1 - nearest / 256
    for gate, score in zip(encoder.gates.neurons, importance["neurons"]):  # the best of each layer are kept
        kept, dropped = score[gate.bool()], score[~gate.bool()]
        assert not len(dropped) or not len(kept) or kept.min() >= dropped.max()
    remove_pruned_units(encoder)
    assert [layer.intermediate.dense.out_features for layer in encoder.backbone.encoder.layer] == widths


def test_widths_are_multiples_of_64_by_default_in_a_model_wide_enough(make_encoder):
    """The default, 64, applies to FFNs of at least 8 x 64 neurons (MiniLM has 1536, bert-base 3072);
    a narrower FFN, as in the tests' models, keeps the exact global ranking."""
    assert Sparsifier().units.ffn_multiple_of == 64
    kept = {}
    for width in (512, 256):
        encoder = make_encoder("avg", intermediate_size=width)
        sparsifier = Sparsifier(num_batches=1)
        sparsifier.attach(encoder)
        event, batch = PruningEvent("step", 1, 0.25, 0.3), views(encoder)
        sparsifier.apply(encoder, event, sparsifier.importance(encoder, iter([batch])))
        kept[width] = [int(g.sum()) for g in encoder.gates.neurons]
        assert sparsifier.ffn_multiple(encoder) == (64 if width == 512 else 1)
    assert all(w % 64 == 0 for w in kept[512]) and sum(kept[512]) == 704, kept  # 716.8 kept -> 11 x 64
    assert sum(kept[256]) == 512 - round(0.3 * 512) and any(w % 64 for w in kept[256]), kept


def test_the_outcome_line_says_what_was_reached_and_what_was_asked():
    event = PruningEvent("step", 80, head_sparsity=0.3, ffn_sparsity=0.3)
    summary = Sparsity(9_830_000, head_sparsity=0.3, ffn_sparsity=0.2986111)
    assert event_outcome(event, summary, 64) == (
        "removed 30.0% of the heads and 29.9% of the FFN neurons (30.0% requested, FFN widths at multiples "
        "of 64); 9.83M parameters left in the transformer layers"
    )
    exact = dataclasses.replace(summary, ffn_sparsity=0.3)
    assert event_outcome(event, exact) == (
        "removed 30.0% of the heads and 30.0% of the FFN neurons; 9.83M parameters left in the transformer "
        "layers"
    )


def test_sparsecse_prune_exports_aligned_widths_that_reload(
    tmp_path, toy_senteval_dir, tiny_model_dir, capsys
):
    from helpers import TEXTS, compose_prune

    from sparsecse.cli.prune import prune
    from sparsecse.export.model_io import load_encoder

    out = tmp_path / "aligned"
    results = prune(compose_prune([f"model={tiny_model_dir}", "pooler=avg", "pruning.ffn_sparsity=0.3",
                                   "pruning.head_sparsity=0", "pruning.ffn_multiple_of=8",
                                   "pruning.num_batches=1",
                                   "tasks=[stsb]", f"output_dir={out}", f"data_dir={toy_senteval_dir}",
                                   "batch_size=8"]))  # fmt: skip
    # 88 of 128 kept: the multiple of 8 nearest 89.6 (the tiny model's 64-wide FFN is 8 multiples of 8)
    assert results["sparsity"]["prune/ffn_sparsity"] == 40 / 128
    assert "(30.0% requested, FFN widths at multiples of 8)" in capsys.readouterr().out
    loaded = load_encoder(str(out), "avg")
    widths = [layer.intermediate.dense.out_features for layer in loaded.backbone.encoder.layer]
    assert sum(widths) == 88 and all(w % 8 == 0 for w in widths)
    again = prune(compose_prune([f"model={out}", "tasks=[stsb]", f"output_dir={tmp_path / 'x'}",
                                 f"data_dir={toy_senteval_dir}", "pruning.head_sparsity=0",
                                 "pruning.ffn_sparsity=0"]))  # fmt: skip
    assert again["before"]["stsb"] == pytest.approx(results["after"]["stsb"], abs=1e-6)
    torch.testing.assert_close(load_encoder(str(tmp_path / "x"), "avg").encode(TEXTS), loaded.encode(TEXTS))


def test_a_whole_unit_rounding_shows_the_request_without_blaming_alignment():
    event = PruningEvent("step", 20, head_sparsity=0.3, ffn_sparsity=0.3)
    summary = Sparsity(10_000, head_sparsity=0.25, ffn_sparsity=38 / 128)
    assert event_outcome(event, summary).startswith(
        "removed 25.0% of the heads (30.0% requested) and 29.7% of the FFN neurons (30.0% requested);"
    )
