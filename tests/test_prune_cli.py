from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import TEXTS, compose_prune

from sparsecse.cli.prune import prune
from sparsecse.core.errors import ConfigError
from sparsecse.export.model_io import load_encoder
from sparsecse.pruning.removal import structure
from sparsecse.report.compression import recorded_structure


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
        (
            ["output_dir=x", "onnx=yes"],
            "^onnx: must be 'none', 'fp32', 'int8' or 'openvino-int8', got 'yes'$",
        ),
    ],
)
def test_bad_prune_settings(overrides, message, toy_senteval_dir, monkeypatch):
    import sparsecse.export.model_io

    never = lambda *a, **k: pytest.fail("loaded")  # noqa: E731
    monkeypatch.setattr(sparsecse.export.model_io.AutoModel, "from_pretrained", never)
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


def prune_overrides(out, data_dir, model, *extra: str) -> list[str]:
    return [f"model={model}", "pooler=avg", "pruning.num_batches=1", "tasks=[stsb]", f"output_dir={out}",
            f"data_dir={data_dir}", "batch_size=8", *extra]  # fmt: skip


def test_an_output_dir_with_a_result_is_finished_or_refused_and_overwrite_replaces_it_whole(
    tmp_path, toy_senteval_dir, tiny_model_dir, capsys, monkeypatch
):
    out = tmp_path / "sparse"
    first = prune(
        compose_prune(prune_overrides(out, toy_senteval_dir, tiny_model_dir, "pruning.head_sparsity=0.5"))
    )
    written = (out / "model.safetensors").read_bytes()
    import sparsecse.cli.prune

    monkeypatch.setattr(sparsecse.cli.prune, "load_encoder", lambda *a: pytest.fail("computed again"))
    moved = tmp_path / "moved"
    out.rename(moved)  # a result moved elsewhere is still the same result
    again = prune(
        compose_prune(prune_overrides(moved, toy_senteval_dir, tiny_model_dir, "pruning.head_sparsity=0.5"))
    )
    assert again == json.loads((moved / "results.json").read_text()) and again["after"] == first["after"]
    assert f"{moved} already finished with this config; its results are in {moved / 'results.json'}" in (
        capsys.readouterr().out
    )
    other = prune_overrides(moved, toy_senteval_dir, tiny_model_dir, "pruning.head_sparsity=0.25")
    with pytest.raises(ConfigError) as refused:
        prune(compose_prune(other))
    assert str(refused.value) == (
        f"output_dir: {moved} holds a result of another config (pruning.head_sparsity: 0.5 -> 0.25); "
        "overwrite=true replaces it; another output_dir keeps both"
    )
    assert (moved / "model.safetensors").read_bytes() == written, "nothing written by the refused run"
    monkeypatch.undo()
    (moved / "onnx").mkdir()
    (moved / "onnx" / "model_qint8.onnx").write_bytes(b"the earlier result's graph")
    replaced = prune(compose_prune([*other, "overwrite=true"]))
    assert replaced["sparsity"]["prune/head_sparsity"] == 0.25
    assert not (moved / "onnx").exists(), "an overwrite removes what it replaces"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["moved"], "no temporary folder left"


def test_an_output_dir_from_elsewhere_is_refused_before_anything_runs(
    tmp_path, toy_senteval_dir, tiny_model_dir
):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("a user's own file")
    for extra in ([], ["overwrite=true"]):
        with pytest.raises(
            ConfigError, match=r"^output_dir: .*mine holds files that are not an export of this "
        ):
            prune(compose_prune(prune_overrides(out, toy_senteval_dir, tiny_model_dir, *extra)))
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    earlier = tmp_path / "earlier"  # a result written before results.json recorded its config
    prune(compose_prune(prune_overrides(earlier, toy_senteval_dir, tiny_model_dir)))
    results = json.loads((earlier / "results.json").read_text())
    del results["config"]
    (earlier / "results.json").write_text(json.dumps(results))
    with pytest.raises(
        ConfigError, match="holds an earlier result with no record of its config; overwrite=true"
    ):
        prune(compose_prune(prune_overrides(earlier, toy_senteval_dir, tiny_model_dir)))


def test_a_full_disk_leaves_no_half_written_model(tmp_path, toy_senteval_dir, tiny_model_dir, monkeypatch):
    """safetensors reports a full disk in its own exception; the output folder is not created."""
    import sparsecse.model.encoder
    from sparsecse.core.errors import OutputWriteError

    class SafetensorError(Exception):
        pass

    def full_disk(self, directory, **kwargs):
        Path(directory).mkdir(parents=True)
        (Path(directory) / "config.json").write_text("{}")  # what was written before the weights
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(sparsecse.model.encoder.SentenceEncoder, "save_pretrained", full_disk)
    out = tmp_path / "sparse"
    with pytest.raises(OutputWriteError) as stopped:
        prune(
            compose_prune(prune_overrides(out, toy_senteval_dir, tiny_model_dir, "pruning.head_sparsity=0.5"))
        )
    assert str(stopped.value) == f"cannot write {out}: No space left on device; nothing was written to {out}"
    assert list(tmp_path.iterdir()) == []


def test_a_layer_dropped_distilled_model_s_card_says_so(tmp_path, toy_senteval_dir, tiny_model_dir, capsys):
    """No units removed: no scoring, no "0.0% removed" sentence; the layers kept and the distillation."""
    out = tmp_path / "shallow"
    cfg = compose_prune(prune_overrides(out, toy_senteval_dir, tiny_model_dir, "layers.keep=1",
                                        "pruning.head_sparsity=0", "pruning.ffn_sparsity=0",
                                        "recovery.steps=2", "recovery.batch_size=4",
                                        f"recovery.cache_dir={tmp_path / 'cache'}"))  # fmt: skip
    results = prune(cfg)
    assert "scoring" not in capsys.readouterr().out
    assert results["layers_kept"] == [1] and results["sparsity"]["prune/head_sparsity"] == 0.0
    card = (out / "README.md").read_text()
    assert f"from `{tiny_model_dir}`: it keeps 1 of its 2 transformer layers." in card
    assert f"- Transformer layers kept: [1] of the 2 of `{tiny_model_dir}` (chosen evenly)." in card
    assert (
        f"- Recovered by distillation from `{tiny_model_dir}` as it was before anything was removed: 2 steps"
        in card
    )
    assert "removed." not in card and "Pruned" not in card
