"""The study after training: one ranking per (granularity, score, seed) serves every sparsity, and
each point is the model the Sparsifier would leave at that sparsity."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import TEXTS, compose_study, stub_latency, synthetic_latency, views, write_checkpoint

from sparsecse.pruning.removal import remove_pruned_units
from sparsecse.pruning.sparsifier import Sparsifier
from sparsecse.pruning.study import event_at, pruned_copy, rankings, run_study, study_points


def batches(encoder):
    return [views(encoder)] * 2


def test_a_deterministic_score_is_ranked_once_and_the_others_once_per_seed():
    found = list(rankings(["structured"], ["random", "weight_magnitude"], [1, 2, 3]))
    assert found == [("structured", "random", 1), ("structured", "weight_magnitude", 1),
                     ("structured", "random", 2), ("structured", "random", 3)]  # fmt: skip


def test_each_ranking_is_scored_once_and_serves_every_sparsity(make_encoder, monkeypatch):
    dense = make_encoder("avg")
    scored = []
    real = Sparsifier.importance
    monkeypatch.setattr(
        Sparsifier, "importance", lambda self, *a, **k: scored.append(1) or real(self, *a, **k)
    )
    points = study_points(["structured", "unstructured"], ["magnitude", "random"], [1], [0.25, 0.5])
    kept = {}
    for point, results in run_study(dense, lambda e: {"n": 1.0}, lambda seed: batches(dense), points, {}):
        kept[(point.granularity, point.score, point.sparsity)] = results["parameters"]
    assert len(scored) == 4  # 2 granularities x 2 scores x 1 seed, not x 2 sparsities
    for granularity in ("structured", "unstructured"):
        # exactly equal sparsity: every score mode leaves the same number of parameters at each p
        for p in (0.25, 0.5):
            assert kept[(granularity, "magnitude", p)] == kept[(granularity, "random", p)]
        assert kept[(granularity, "magnitude", 0.5)] < kept[(granularity, "magnitude", 0.25)]


def test_a_point_is_the_model_the_sparsifier_leaves_and_a_larger_p_removes_a_superset(make_encoder):
    dense = make_encoder("avg")
    sparsifier = Sparsifier(score="magnitude", num_batches=2, seed=3)
    scored = make_encoder("avg")
    sparsifier.attach(scored)
    importance = sparsifier.importance(scored, batches(scored))

    by_hand = make_encoder("avg")  # what sparsecse-prune does with one event
    sparsifier.attach(by_hand)
    sparsifier.apply(by_hand, event_at("structured", 0.5), importance)
    small, _, _ = pruned_copy(dense, sparsifier, importance, 0.25)
    large, summary, _ = pruned_copy(dense, sparsifier, importance, 0.5)
    kept_large = [g.nonzero().flatten().tolist() for g in by_hand.gates.heads]
    remove_pruned_units(by_hand)
    torch.testing.assert_close(large.encode(TEXTS), by_hand.encode(TEXTS), rtol=0, atol=0)
    assert summary["prune/head_sparsity"] == 0.5
    assert dense.gates is None and dense.backbone.config.model_type == "bert"  # the dense model is untouched
    small_heads = small.backbone.config.kept_heads
    assert all(set(k) <= set(s) for k, s in zip(kept_large, small_heads))


@pytest.mark.slow
def test_the_study_runs_at_toy_size_and_its_report_draws_a_line_per_score_mode(
    tmp_path, toy_senteval_dir, tiny_model_dir
):
    from sparsecse.cli.study import study
    from sparsecse.report import load_sweep, study_lines, write_report

    out = tmp_path / "study"
    overrides = [f"model={tiny_model_dir}", f"data_dir={toy_senteval_dir}", f"output_dir={out}",
                 "granularities=[structured]", "scores=[magnitude,random]", "seeds=[1]",
                 "sparsities=[0.25,0.5]", "tasks=[sts,analysis]", "device=cpu",
                 "sparsifier.num_batches=2", "batch_size=8"]  # fmt: skip
    timing = study(compose_study(overrides))
    assert timing["points"] == 4
    dense = json.loads((out / "dense" / "results.json").read_text())
    point = json.loads((out / "structured" / "random" / "sparsity=0.5,seed=1" / "results.json").read_text())
    assert point["setting"] == {
        "granularity": "structured",
        "score": "random",
        "sparsity": "0.5",
        "seed": "1",
    }
    assert point["sparsity"]["prune/head_sparsity"] == 0.5 and point["parameters"] < dense["parameters"]
    assert set(point["after"]) >= {"sts_avg", "alignment", "uniformity"}

    sweep = load_sweep(out)
    assert len(sweep.runs) == 5 and not sweep.failed
    panels, reference = study_lines(sweep, "sts_avg")
    assert reference == [dense["after"]["sts_avg"]]
    assert {mode: sorted(xs) for mode, xs in panels["structured"].items()} == {
        "magnitude": [0.25, 0.5],
        "random": [0.25, 0.5],
    }
    written, _ = write_report(sweep)
    names = {path.name for path in written}
    assert {
        "sparsity_lines_sts_avg.png",
        "sparsity_lines_alignment.png",
        "sparsity_lines_uniformity.png",
    } <= names
    assert all(path.stat().st_size > 0 for path in written)

    # A restart with another seed keeps every point written and runs only the new ones.
    written_before = {path: path.stat().st_mtime_ns for path in out.rglob("results.json")}
    more = study(compose_study([*overrides, "seeds=[1,2]"]))
    assert more["points"] == 4 and more["dense"] == 0.0
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in written_before.items())
    assert (out / "structured" / "random" / "sparsity=0.5,seed=2" / "results.json").is_file()
    assert len(json.loads((out / "study.json").read_text())["starts"]) == 2


def test_the_study_takes_a_project_checkpoint_as_its_encoder(tmp_path, toy_senteval_dir, tiny_model_dir):
    """The encoder the default job writes is a `*.ckpt`: its tokenizer is the model it recorded, and the
    dense point is that encoder, as `sparsecse-eval` scores it."""
    from sparsecse.cli.study import study
    from sparsecse.evaluation import evaluate_encoder
    from sparsecse.export.model_io import load_encoder

    trained = load_encoder(tiny_model_dir, "avg")
    with torch.no_grad():  # not the weights of tiny_model_dir: the dense point must come from the checkpoint
        trained.backbone.encoder.layer[0].output.dense.weight.mul_(-2.0)
    checkpoint = write_checkpoint(trained, tmp_path / "best.ckpt")
    out = tmp_path / "study"
    overrides = [f"model={checkpoint}", f"data_dir={toy_senteval_dir}", f"output_dir={out}",
                 "granularities=[structured]", "scores=[magnitude]", "sparsities=[0.5]", "tasks=[stsb]",
                 "device=cpu", "sparsifier.num_batches=1", "batch_size=8"]  # fmt: skip
    study(compose_study(overrides))
    dense = json.loads((out / "dense" / "results.json").read_text())["after"]
    assert dense == pytest.approx(evaluate_encoder(trained.eval(), toy_senteval_dir, ["stsb"], 128))
    assert dense != pytest.approx(
        evaluate_encoder(load_encoder(tiny_model_dir, "avg"), toy_senteval_dir, ["stsb"], 128)
    )
    assert (out / "structured" / "magnitude" / "sparsity=0.5,seed=1" / "results.json").is_file()


def test_a_study_folder_of_another_config_is_refused_before_anything_loads(tmp_path, toy_senteval_dir):
    from sparsecse.cli.study import study
    from sparsecse.core.errors import ConfigError

    base = [f"data_dir={toy_senteval_dir}", f"output_dir={tmp_path}", "model=/nonexistent/model"]
    (tmp_path / "dense").mkdir()
    (tmp_path / "dense" / "results.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"^output_dir: .* holds results with no record of their config"):
        study(compose_study(base))
    (tmp_path / "dense" / "results.json").unlink()
    with pytest.raises(ConfigError, match="^model: "):  # the folder is new: recorded, then the model fails
        study(compose_study(base))
    with pytest.raises(ConfigError, match=r"^output_dir: .* another config \(pooler: 'avg' -> 'cls'\)"):
        study(compose_study([*base, "pooler=cls", "seeds=[1,2]"]))
    with pytest.raises(ConfigError, match="^model: "):  # more points of the same study are welcome
        study(compose_study([*base, "seeds=[1,2]", "sparsities=[0.5]"]))
    elsewhere = tmp_path / "copy-of-the-data"
    elsewhere.symlink_to(toy_senteval_dir)
    with pytest.raises(ConfigError, match="^model: "):  # and so is the same data in another folder
        study(compose_study([*base, f"data_dir={elsewhere}"]))


def test_a_bad_study_list_is_one_line_naming_it(tmp_path, toy_senteval_dir):
    from sparsecse.cli.study import study
    from sparsecse.core.errors import ConfigError

    base = [f"data_dir={toy_senteval_dir}", f"output_dir={tmp_path}"]
    for overrides, message in (
        (["scores=[magnitude,taylor]"], "^scores: must be 'magnitude', .*, got 'taylor'$"),
        (["sparsities=[0.1,1.5]"], r"^sparsities\[1\]: must be less than 1, got 1.5$"),
        (["sparsifier.num_batches=0"], "^sparsifier.num_batches: must be greater than or equal to 1, got 0$"),
        (["seed=3"], r"^seed: sparsecse-study takes its seeds from `seeds` \(e.g. seeds=\[3\]\)"),
    ):
        with pytest.raises(ConfigError, match=message):
            study(compose_study(base + overrides))


@pytest.mark.slow
def test_the_study_during_training_composes_and_runs_at_toy_size(tmp_path, toy_senteval_dir, tiny_model_dir):
    """SimCSE and one pruned arm, one seed, the default job's 160 steps on a tiny model: the multirun
    finishes and its report holds one row per arm, the SimCSE row dense."""
    import os
    import subprocess
    import sys

    from sparsecse.cli import REPO_ROOT
    from sparsecse.report import load_sweep

    sweep = tmp_path / "sweep"
    overrides = [
        "-m", "experiment=study_during_training", f"hydra.sweep.dir={sweep}",
        "hydra.sweeper.params.seed=1", "hydra.sweeper.params.pruning='none,demo_random'",
        f"data_dir={toy_senteval_dir}", f"model.encoder.name_or_path={tiny_model_dir}",
        "trainer.accelerator=cpu", "trainer.precision=32-true", "logger=csv", "data.num_workers=0",
        "data.batch_size=2", "trainer.max_epochs=4", "trainer.val_check_interval=40",
        "evaluate.tasks=[stsb,analysis]",
    ]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, "train.py", *overrides], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = load_sweep(sweep)
    assert not report.failed
    rows = {row.setting["pruning"]: row for row in report.rows}
    assert set(rows) == {"none", "demo_random"}
    dense, pruned = rows["none"].runs[0], rows["demo_random"].runs[0]
    assert dense.metrics["parameter_sparsity"] == 0.0 < pruned.metrics["parameter_sparsity"]


def test_speed_target_points_share_one_joint_scoring_and_are_the_speed_target_models(make_encoder):
    """Each (score, seed) scores every layer, head and neuron once; each speed-up's model is the one
    sparsecse-prune's speed target leaves from the same scores (here a synthetic latency model)."""
    import copy

    from sparsecse.pruning.speed_target import SpeedTarget, encoder_shape, joint_scores, set_gates

    dense = make_encoder("avg", num_hidden_layers=3).eval()
    latency = synthetic_latency(encoder_shape(dense))
    points = study_points(["structured"], ["magnitude", "weight_magnitude"], [1], [0.25], speedups=[1.5, 2.5])
    assert [(p.granularity, p.score, p.sparsity) for p in points if p.granularity == "joint"] == [
        ("joint", "magnitude", 1.5), ("joint", "magnitude", 2.5)]  # fmt: skip
    found = {}
    for point, results in run_study(dense, lambda e: {"n": float(len(e.backbone.encoder.layer))},
                                    lambda seed: batches(dense), points, {}, latency):  # fmt: skip
        found[(point.granularity, point.score, point.sparsity)] = results
    fast = found[("joint", "magnitude", 2.5)]
    assert fast["target_speedup"]["asked"] == 2.5 and fast["target_speedup"]["predicted"] >= 2.5
    assert fast["after"]["n"] == len(fast["layers_kept"]) < 3
    assert found[("joint", "magnitude", 2.5)]["seconds"]["scoring"] == 0.0, "the 1.5x point's scoring serves"
    by_hand = copy.deepcopy(dense)
    sparsifier = Sparsifier(seed=1)
    sparsifier.attach(by_hand)
    scored = copy.deepcopy(by_hand)
    allocation = SpeedTarget(2.5).allocation(by_hand, joint_scores(scored, batches(dense), sparsifier),
                                             sparsifier, latency)  # fmt: skip
    set_gates(by_hand, allocation)
    assert allocation.layers == fast["layers_kept"]
    assert fast["sparsity"]["prune/layers"] == len(allocation.layers)


def test_a_speed_target_list_is_checked_before_anything_loads(tmp_path, toy_senteval_dir):
    from sparsecse.cli.study import study
    from sparsecse.core.errors import ConfigError

    overrides = [f"data_dir={toy_senteval_dir}", f"output_dir={tmp_path}", "target_speedups=[2,1.0]"]
    with pytest.raises(ConfigError, match=r"^target_speedups\[1\]: must be greater than 1, got 1.0$"):
        study(compose_study(overrides))


@pytest.mark.slow
def test_the_study_writes_speed_target_points_its_report_lists(
    tmp_path, toy_senteval_dir, tiny_model_dir, monkeypatch
):
    """The latency model is stubbed (a tiny model's encode time is mostly tokenisation)."""
    from sparsecse.cli.study import study
    from sparsecse.report import load_sweep, write_report

    stub_latency(monkeypatch)
    out = tmp_path / "study"
    study(compose_study([f"model={tiny_model_dir}", f"data_dir={toy_senteval_dir}", f"output_dir={out}",
                         "granularities=[structured]", "scores=[magnitude]", "seeds=[1]", "sparsities=[0.25]",
                         "target_speedups=[1.5]", "tasks=[stsb]", "device=cpu", "sparsifier.num_batches=1",
                         "batch_size=8"]))  # fmt: skip
    point = json.loads((out / "joint" / "magnitude" / "speedup=1.5,seed=1" / "results.json").read_text())
    assert point["setting"] == {
        "granularity": "joint",
        "score": "magnitude",
        "target_speedup": "1.5",
        "seed": "1",
    }
    assert point["target_speedup"]["predicted"] >= 1.5 and "stsb" in point["after"]
    sweep = load_sweep(out)
    assert len(sweep.runs) == 3 and not sweep.failed
    written, _ = write_report(sweep)
    table = next(path for path in written if path.suffix == ".md").read_text()
    assert "joint" in table and "1.5" in table
