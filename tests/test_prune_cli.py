from __future__ import annotations

import json

import pytest
import torch
from helpers import TEXTS, compose_prune

from sparsecse.cli.prune import prune
from sparsecse.compression import recorded_structure
from sparsecse.errors import ConfigError
from sparsecse.model_io import load_encoder
from sparsecse.removal import structure


def test_post_hoc_sparsification_writes_a_loadable_model(tmp_path, toy_senteval_dir, tiny_model_dir):
    out = tmp_path / "sparse"
    cfg = compose_prune([f"model={tiny_model_dir}", "pooler=avg", "pruning.head_sparsity=0.5",
                         "pruning.ffn_sparsity=0.25", "pruning.num_batches=2", "tasks=[stsb]",
                         f"output_dir={out}", f"data_dir={toy_senteval_dir}", "batch_size=8"])  # fmt: skip
    results = prune(cfg)
    assert set(results["before"]) == set(results["after"]) == {"stsb", "sts_avg"}
    assert results["sparsity"]["prune/head_sparsity"] == 0.5
    assert json.loads((out / "results.json").read_text())["after"] == results["after"]
    card = (out / "README.md").read_text()
    assert (f"Pruned after training from `{tiny_model_dir}` (sparsecse-prune, one event) by `magnitude` "
            "importance scores (structured), scored on 2 batches of `snli_sentences`: 50.0% of the attention "
            "heads and 25.0% of the FFN neurons removed.") in card  # fmt: skip
    assert f"| after | {results['after']['stsb']:.2f} | {results['after']['sts_avg']:.2f} |" in card
    loaded = load_encoder(str(out), "avg")
    assert sum(layer.attention.self.query.out_features // 8 for layer in loaded.backbone.encoder.layer) == 4
    units = structure(loaded.backbone)  # the shapes a stand-in of this point is cut to
    assert recorded_structure(results) == (units["heads"], units["ffn"])
    overrides = [
        f"model={out}",
        "tasks=[stsb]",
        f"output_dir={tmp_path / 'x'}",
        f"data_dir={toy_senteval_dir}",
        "pruning.head_sparsity=0",
        "pruning.ffn_sparsity=0",
    ]
    again = prune(compose_prune(overrides))
    assert again["before"]["stsb"] == pytest.approx(results["after"]["stsb"], abs=1e-6)
    torch.testing.assert_close(load_encoder(str(tmp_path / "x"), "avg").encode(TEXTS), loaded.encode(TEXTS))


def test_evaluate_before_false_evaluates_only_the_pruned_model(
    tmp_path, toy_senteval_dir, tiny_model_dir, capsys
):
    out = tmp_path / "sparse"
    cfg = compose_prune([f"model={tiny_model_dir}", "pooler=avg", "pruning.head_sparsity=0.5",
                         "pruning.num_batches=1", "tasks=[stsb]", "evaluate_before=false",
                         f"output_dir={out}", f"data_dir={toy_senteval_dir}", "batch_size=8"])  # fmt: skip
    results = prune(cfg)
    assert results["before"] == {} and set(results["after"]) == {"stsb", "sts_avg"}
    table = capsys.readouterr().out
    assert "after |" in table and "before |" not in table
    lines = table.splitlines()  # every long stage: a line when it starts, one with its time when it ends
    for name in ("scoring 1 batch of snli_sentences, seed 0", "evaluation of the pruned model",
                 f"writing the model to {out}"):  # fmt: skip
        assert f"sparsecse-prune: {name} ..." in lines
        assert any(line.startswith(f"sparsecse-prune: {name} done in ") for line in lines), name
    assert "sparsecse-prune: evaluation before pruning ..." not in lines
    assert "\nsparsecse-prune: removed 50.0% of the heads and " in table
    card = (out / "README.md").read_text()
    assert "| after |" in card and "| before |" not in card


@pytest.mark.parametrize(
    "overrides, message",
    [
        ([], "output_dir: is required"),
        (["output_dir=x", "pruning.score=taylor"], "pruning.score: must be 'magnitude', .*, got 'taylor'"),
        (["output_dir=x", "pruning.head_sparsity=1.5"], "head_sparsity: must be less than 1, got 1.5"),
        (["output_dir=x", "pooler=mean"], "pooler: must be 'cls', .*, got 'mean'"),
        (["output_dir=x", "model=/no/such/model"], "model: cannot load model"),
        (["output_dir=x", "onnx=yes"], "^onnx: must be 'none', 'fp32' or 'int8', got 'yes'$"),
    ],
)
def test_bad_prune_settings(overrides, message, toy_senteval_dir, monkeypatch):
    import sparsecse.model_io

    never = lambda *a, **k: pytest.fail("loaded")  # noqa: E731
    monkeypatch.setattr(sparsecse.model_io.AutoModel, "from_pretrained", never)
    with pytest.raises(ConfigError, match=message):
        prune(compose_prune([f"data_dir={toy_senteval_dir}", *overrides]))


@pytest.mark.parametrize("key", ["seed", "pruning.seed"])
@pytest.mark.parametrize("score", ["magnitude", "random"])  # the batches' seed; the random draw's
def test_a_seed_scores_alike_in_prune_and_in_the_study(
    tmp_path, toy_senteval_dir, tiny_model_dir, score, key
):
    from helpers import compose_study

    from sparsecse.cli.study import study

    common = [f"model={tiny_model_dir}", "pooler=avg", "tasks=[stsb]", f"data_dir={toy_senteval_dir}",
              "batch_size=8"]  # fmt: skip
    pruned = {
        seed: prune(
            compose_prune(
                [
                    *common,
                    f"pruning.score={score}",
                    "pruning.head_sparsity=0.5",
                    "pruning.ffn_sparsity=0.5",
                    "pruning.num_batches=2",
                    f"seed={seed}",
                    f"output_dir={tmp_path / str(seed)}",
                ]
            )
        )  # fmt: skip
        for seed in (2, 3)
    }
    study(compose_study([*common, f"scores=[{score}]", "granularities=[structured]", "seeds=[2]",
                         "sparsities=[0.5]", "sparsifier.num_batches=2", "device=cpu",
                         f"output_dir={tmp_path / 'study'}"]))  # fmt: skip
    point = json.loads(
        (tmp_path / "study" / "structured" / score / "sparsity=0.5,seed=2" / "results.json").read_text()
    )
    assert pruned[2]["seed"] == int(point["setting"]["seed"]) == 2
    assert json.loads((tmp_path / "2" / "results.json").read_text())["seed"] == 2
    assert point["after"]["stsb"] == pruned[2]["after"]["stsb"]
    assert pruned[3]["after"]["stsb"] != pruned[2]["after"]["stsb"], "the seed decides the ranking"
