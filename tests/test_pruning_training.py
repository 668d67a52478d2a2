"""The pruning callback inside real (tiny) training runs: events, checkpoints, resume, DDP. Each test
runs Lightning fits, so the whole file is in the slow suite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import TEXTS, compose_train, cpu_overrides, free_port, pruning_run, stub_latency

from sparsecse.cli import REPO_ROOT
from sparsecse.export.model_io import encoder_from_checkpoint, load_encoder
from sparsecse.pruning.schedule import PruningEvent
from sparsecse.pruning.sparsifier import Sparsifier
from sparsecse.training.data import ContrastiveDataModule
from train import train

pytestmark = pytest.mark.slow


def compose_pruning_run(*args, **kwargs):
    return compose_train(pruning_run(*args, **kwargs))


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("".join(f"sentence {i} is about topic {i % 3} .\n" for i in range(8)))
    return path  # 8 sentences, batch 4: two steps an epoch


def test_structured_event_mid_training_then_physical_removal(
    tmp_path, toy_senteval_dir, tiny_model_dir, corpus
):
    cfg = compose_pruning_run(tmp_path, toy_senteval_dir, tiny_model_dir, corpus, "trainer.max_epochs=2",
                              "pruning.schedule=[{step:2}]", "pruning.head_sparsity=0.5",
                              "pruning.ffn_sparsity=0.25", "save_model=true")  # fmt: skip
    results = train(cfg)
    assert results["sparsity"]["prune/head_sparsity"] == 0.5
    assert results["sparsity"]["prune/ffn_sparsity"] == 0.25
    files = results["checkpoints"]
    assert json.loads((tmp_path / "results.json").read_text())["checkpoints"] == files
    assert Path(files["best"]).name == "best.ckpt", "the final best is the file users reach for"
    best = torch.load(files["best"], weights_only=True)
    assert best["global_step"] == 4, "the best checkpoint must postdate the last pruning event"
    assert sum(int(best["state_dict"][f"encoder.gates.head_{i}"].sum()) for i in (0, 1)) == 4
    (earlier,) = files["best_before_final_pruning"]
    assert Path(earlier).name == "best-before-final-pruning.ckpt"
    dense = torch.load(earlier, weights_only=True)
    assert dense["global_step"] == 2 and int(dense["state_dict"]["encoder.gates.head_0"].sum()) == 4
    assert Path(files["last"]).name == "last.ckpt"
    layers = json.loads((tmp_path / "model" / "config.json").read_text())
    assert sum(len(h) for h in layers["kept_heads"]) == 4
    metrics = next((tmp_path / "csv").rglob("metrics.csv")).read_text()
    assert "prune/head_sparsity" in metrics and "prune/encoder_parameters" in metrics
    card = (tmp_path / "model" / "README.md").read_text()  # the model card tells how it was made
    assert "on `" + str(corpus) + "` for 4 steps: batch 4" in card
    assert ("Pruned during training (schedule [{'step': 2}]) by `magnitude` importance scores "
            "(structured), scored on 1 batch of the training data: 50.0% of the attention heads and 25.0% "
            "of the FFN neurons removed.") in card  # fmt: skip


def test_an_event_the_run_would_never_reach_stops_it_before_the_first_step(
    tmp_path, toy_senteval_dir, tiny_model_dir, corpus
):
    """Before the check, the run ended with a warning and reported a dense model as pruned."""
    from sparsecse.core.errors import ConfigError

    cfg = compose_pruning_run(tmp_path, toy_senteval_dir, tiny_model_dir, corpus, "trainer.max_epochs=2",
                              "pruning.schedule=[{step:5}]", "pruning.head_sparsity=0.5")  # fmt: skip
    with pytest.raises(ConfigError, match=r"^schedule\[0\].step: 5 is after the last step training reaches"):
        train(cfg)
    assert not (tmp_path / "results.json").exists()
    assert not list(tmp_path.rglob("*.ckpt")), "no step ran"


@pytest.mark.parametrize(
    "granularity", ["pruning.head_sparsity=0.5", "pruning.granularity=unstructured"], ids=["heads", "weights"]
)
def test_a_checkpoint_after_pruning_loads_as_the_exported_model(
    tmp_path, toy_senteval_dir, tiny_model_dir, corpus, granularity
):
    """`sparsecse-eval model=best.ckpt` must score the encoder that was trained and exported, not
    its dense backbone with the gates and masks dropped."""
    targets = ["pruning.head_sparsity=0", "pruning.ffn_sparsity=0", "pruning.weight_sparsity=0.4"]
    cfg = compose_pruning_run(tmp_path, toy_senteval_dir, tiny_model_dir, corpus, "trainer.max_epochs=2",
                              "pruning.schedule=[{step:2}]", "save_model=true",
                              *(targets if "unstructured" in granularity else []), granularity)  # fmt: skip
    results = train(cfg)
    from_checkpoint = load_encoder(results["checkpoints"]["best"], "avg")
    exported = load_encoder(str(tmp_path / "model"), "avg")
    assert torch.equal(from_checkpoint.encode(TEXTS), exported.encode(TEXTS))


@pytest.mark.parametrize("granularity", ["structured", "unstructured"])
def test_an_event_that_removes_nothing_is_plain_simcse(
    tmp_path, toy_senteval_dir, tiny_model_dir, corpus, granularity, monkeypatch
):
    """The sparsity-0 setting of a sweep is its dense baseline: same weights, best checkpoint, results
    and export as `pruning=none`, and no scoring spent."""
    common = ["trainer.max_epochs=2", "save_model=true", "evaluate.before=true"]
    dense = pruning_run(tmp_path / "none", toy_senteval_dir, tiny_model_dir, corpus, *common)
    plain = train(compose_train([o for o in dense if not o.startswith("pruning")] + ["pruning=none"]))
    monkeypatch.setattr(
        Sparsifier, "importance", lambda *a: pytest.fail("scored for an event that removes nothing")
    )
    zero = train(compose_pruning_run(tmp_path / "zero", toy_senteval_dir, tiny_model_dir, corpus, *common,
                                     f"pruning.granularity={granularity}", "pruning.schedule=[{step:2}]",
                                     "pruning.head_sparsity=0", "pruning.ffn_sparsity=0"))  # fmt: skip
    assert {k: v for k, v in zero.items() if k != "checkpoints"} == {
        k: v for k, v in plain.items() if k != "checkpoints"
    }
    checkpoints = [torch.load(run["checkpoints"][f], weights_only=True) for run in (plain, zero)
                   for f in ("best", "last")]  # fmt: skip
    (best_plain, last_plain, best_zero, last_zero) = checkpoints
    assert best_zero["global_step"] == best_plain["global_step"]
    for key, value in last_plain["state_dict"].items():
        assert torch.equal(last_zero["state_dict"][key], value), key
    exports = [tmp_path / run / "model" for run in ("none", "zero")]
    assert sorted(p.name for p in exports[1].iterdir()) == sorted(p.name for p in exports[0].iterdir())
    configs = [json.loads((e / "config.json").read_text()) for e in exports]
    assert configs[1] == configs[0] and configs[1]["model_type"] == "bert"
    encoders = [load_encoder(str(e), "avg") for e in exports]
    assert torch.equal(encoders[1].encode(TEXTS), encoders[0].encode(TEXTS))


def test_event_at_the_last_epoch_runs_when_training_ends(tmp_path, toy_senteval_dir, tiny_model_dir, corpus):
    cfg = compose_pruning_run(tmp_path, toy_senteval_dir, tiny_model_dir, corpus, "trainer.max_epochs=1",
                              "pruning.schedule=[{epoch:1}]", "pruning.granularity=unstructured",
                              "pruning.head_sparsity=0", "pruning.ffn_sparsity=0",
                              "pruning.weight_sparsity=0.4")  # fmt: skip
    results = train(cfg)
    assert results["sparsity"]["prune/weight_sparsity"] == pytest.approx(0.4, abs=1e-3)
    assert "best" not in results["checkpoints"], "no checkpoint holds the final sparsity: keep the pruned"


def run_for(
    tmp_path, data_dir, tiny_model_dir, corpus, epochs: int, *extra: str, schedule: str = "[{epoch:1}]"
) -> dict:
    cfg = compose_pruning_run(tmp_path, data_dir, tiny_model_dir, corpus, f"trainer.max_epochs={epochs}",
                              f"pruning.schedule={schedule}", "pruning.head_sparsity=0.25",
                              "pruning.ffn_sparsity=0.25", "callbacks.model_checkpoint.save_top_k=-1",
                              "callbacks.model_checkpoint.save_weights_only=false",  # resumable
                              "callbacks.model_checkpoint.filename='step{step}'", "evaluate.after=false",
                              *extra)  # fmt: skip
    train(cfg)
    return torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)


GATES = [f"encoder.gates.{kind}_{i}" for kind in ("head", "neuron") for i in (0, 1)]


@pytest.mark.parametrize(
    ("score", "schedule", "resume_from", "done"),
    [
        ("magnitude", "[{epoch:1}]", "step4.ckpt", 1),  # after the event at epoch 1 (step 2)
        ("magnitude", "[{epoch:1}]", "step2-before-final-pruning.ckpt", 0),  # resumed before the event
        ("random", "[{epoch:1},{epoch:2}]", "step4-before-final-pruning.ckpt", 1),  # between two events
    ],
    ids=["after-the-event", "before-the-event", "between-random-events"],
)
def test_a_resumed_run_removes_the_same_units_and_ends_equal_to_the_uninterrupted_run(
    tmp_path, toy_senteval_dir, tiny_model_dir, corpus, score, schedule, resume_from, done
):
    """Scoring draws its dropout and random scores from (seed, event, rank), not from whatever random
    state the process happens to be in, so resuming before an event changes nothing."""
    score = f"pruning.score={score}"
    whole = run_for(tmp_path / "whole", toy_senteval_dir, tiny_model_dir, corpus, 3, score, schedule=schedule)
    midway = tmp_path / "whole" / "checkpoints" / resume_from
    assert torch.load(midway, weights_only=True)["callbacks"]["ScheduledPruning"]["events_done"] == done
    resumed = run_for(tmp_path / "resumed", toy_senteval_dir, tiny_model_dir, corpus, 3, score,
                      f"ckpt_path={midway}", schedule=schedule)  # fmt: skip
    assert resumed["global_step"] == whole["global_step"] == 6
    assert resumed["state_dict"]["encoder.gates.head_0"].sum() < 4, "the gates came back"
    for key in GATES:
        assert torch.equal(resumed["state_dict"][key], whole["state_dict"][key]), (
            f"other units removed: {key}"
        )
    for key, value in whole["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key
    assert resumed["sparsecse_val_history"] == whole["sparsecse_val_history"]  # validations at 2, 4, 6
    assert [h["step"] for h in whole["sparsecse_val_history"]] == [2, 4, 6]


def test_pruning_under_bf16_autocast_selects_the_units_sparsecse_prune_selects(
    tmp_path, toy_senteval_dir, tiny_model_dir, corpus
):
    """Scoring runs in float32 wherever it runs: an event inside bf16-mixed training and the one-shot
    tool, on the same encoder and batches, remove the same units."""
    cfg = compose_pruning_run(tmp_path, toy_senteval_dir, tiny_model_dir, corpus,
                              "trainer.precision=bf16-mixed", "trainer.max_steps=1",
                              "pruning.schedule=[{step:0}]", "pruning.head_sparsity=0.5",
                              "pruning.ffn_sparsity=0.5", "pruning.num_batches=2", "evaluate.after=false",
                              "save_model=false")  # fmt: skip
    train(cfg)
    trained = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    encoder = load_encoder(str(tiny_model_dir), "avg")
    data = ContrastiveDataModule(
        str(tiny_model_dir), toy_senteval_dir, str(corpus), batch_size=4, seed=cfg.seed
    )
    sparsifier = Sparsifier(num_batches=2, seed=cfg.seed)
    sparsifier.attach(encoder)
    importance = sparsifier.importance(encoder, iter(data.scoring_dataloader(cfg.seed)), scoring=0, rank=0)
    sparsifier.apply(encoder, PruningEvent("step", 0, 0.5, 0.5), importance)
    for key, gate in zip(GATES, encoder.gates.heads + encoder.gates.neurons):
        assert torch.equal(trained[key], gate), key


def run_two_ranks(overrides: list[str], tmp_path: Path) -> list[str]:
    """`train.py` as two CPU ranks (gloo) started from outside, as torchrun or srun would; returns
    each rank's output once both exited with status 0."""
    port = free_port()
    procs = []
    for rank in (0, 1):
        env = {
            **os.environ,
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "WORLD_SIZE": "2",
            "NODE_RANK": "0",
            "LOCAL_RANK": str(rank),
            "RANK": str(rank),
            "WANDB_MODE": "disabled",
            "PYTHONPATH": f"{REPO_ROOT / 'tests'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        }
        run_dir = f"hydra.run.dir={tmp_path / f'hydra{rank}'}"
        procs.append(
            subprocess.Popen(
                [sys.executable, "train.py", *overrides, run_dir],
                cwd=REPO_ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = []
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out[-3000:]
        outputs.append(out)
    return outputs


def ddp_run(tmp_path, data_dir, tiny_model_dir, corpus, *extra: str) -> list[str]:
    return pruning_run(tmp_path, data_dir, tiny_model_dir, corpus, "trainer.max_steps=2",
                       "trainer.val_check_interval=1", "trainer.strategy=ddp", "trainer.devices=2",
                       "data.batch_size=2", "pruning.schedule=[{step:1}]", "pruning.head_sparsity=0.5",
                       "pruning.ffn_sparsity=0.5", "pruning.num_batches=2", *extra)  # fmt: skip


def test_two_process_ddp_prunes_the_same_units_on_both_ranks(
    tmp_path, toy_senteval_dir, tiny_model_dir, corpus
):
    """Each rank scores its own shard, and the summed scores make both remove the same units."""
    overrides = ddp_run(tmp_path, toy_senteval_dir, tiny_model_dir, corpus, "evaluate.after=false",
                        "save_model=false", "+callbacks.rank_probe._target_=rank_probe.SaveGatesPerRank",
                        f"+callbacks.rank_probe.dirpath={tmp_path}")  # fmt: skip
    run_two_ranks(overrides, tmp_path)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert sum(int(g.sum()) for g in rank0["gates"][:2]) == 4, "half of the 8 heads are gone"
    for a, b in zip(rank0["importance"] + rank0["gates"], rank1["importance"] + rank1["gates"]):
        assert torch.equal(a, b)


def test_under_ddp_rank_zero_alone_evaluates_and_writes(tmp_path, toy_senteval_dir, tiny_model_dir, corpus):
    """Every rank used to evaluate and write model/, results.json and before.json into the same folder
    at once; the other ranks now wait for the end of training and exit."""
    overrides = ddp_run(tmp_path, toy_senteval_dir, tiny_model_dir, corpus, "evaluate.before=true",
                        "evaluate.after=true", "save_model=true")  # fmt: skip
    rank0, rank1 = run_two_ranks(overrides, tmp_path)
    assert "before |" in rank0 and "after  |" in rank0
    assert "before |" not in rank1 and "after  |" not in rank1, "rank 1 evaluated"
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["before"]) == set(results["after"]) == {"stsb", "sts_avg"}
    assert json.loads((tmp_path / "before.json").read_text()) == results["before"]
    exported = load_encoder(str(tmp_path / "model"), "avg")
    assert sum(layer.attention.self.query.out_features // 8 for layer in exported.backbone.encoder.layer) == 4


def test_importance_scoring_writes_heatmap_and_histogram(tmp_path, toy_senteval_dir, tiny_model_dir, corpus):
    cfg = compose_train(
        cpu_overrides(tmp_path, toy_senteval_dir, tiny_model_dir)
        + [f"data.train_file={corpus}", "data.batch_size=4", "pruning=none", "callbacks=with_importance",
           "callbacks.importance.at=[{step:0},{step:1}]", "callbacks.importance.num_batches=1",
           "trainer.max_steps=2", "trainer.val_check_interval=2", "evaluate.before=false",
           "evaluate.after=false"]
    )  # fmt: skip
    train(cfg)
    pictures = sorted(p.name for p in (tmp_path / "importance").glob("*.png"))
    assert pictures == [f"importance_{kind}_{when}.png" for kind in ("heads", "neurons")
                        for when in ("final", "step0", "step1")]  # fmt: skip
    assert all((tmp_path / "importance" / p).stat().st_size > 1000 for p in pictures)


def test_a_compiled_run_prunes_and_saves_its_model(tmp_path, toy_senteval_dir, tiny_model_dir, corpus):
    """compile=true end to end: static batches, a structured event mid-run, removal, evaluation."""
    cfg = compose_pruning_run(tmp_path, toy_senteval_dir, tiny_model_dir, corpus, "trainer.max_epochs=2",
                              "pruning.schedule=[{step:2}]", "pruning.head_sparsity=0.5", "compile=true",
                              "save_model=true")  # fmt: skip
    results = train(cfg)
    assert results["sparsity"]["prune/head_sparsity"] == 0.5
    assert 0 < results["after"]["stsb"] <= 100
    layers = json.loads((tmp_path / "model" / "config.json").read_text())
    assert sum(len(h) for h in layers["kept_heads"]) == 4


def test_recovery_after_an_event_distils_towards_the_encoder_before_it(
    tmp_path, toy_senteval_dir, tiny_model_dir, corpus
):
    """recovery=distill: the teacher is the encoder just before the event (the step-2 checkpoint),
    its embeddings cached once; the pruned encoder then moves towards them before training goes on."""
    cache = tmp_path / "cache"
    cfg = compose_pruning_run(tmp_path, toy_senteval_dir, tiny_model_dir, corpus, "trainer.max_epochs=2",
                              "pruning.schedule=[{step:2}]", "pruning.head_sparsity=0.5", "save_model=true",
                              "recovery=distill", "pruning.recovery.steps=60",
                              "pruning.recovery.batch_size=8", "pruning.recovery.lr=3e-3",
                              f"pruning.recovery.cache_dir={cache}")  # fmt: skip
    results = train(cfg)
    (record,) = results["recovery"]
    assert record["event"] == 0 and record["steps"] == 60
    assert record["last_loss"] < 0.8 * record["first_loss"], record  # dropout keeps the student noisy
    (cached,) = cache.glob("*.pt")
    teacher = torch.load(cached, weights_only=True)["embeddings"]
    before = encoder_from_checkpoint(results["checkpoints"]["best_before_final_pruning"][0])
    sentences = corpus.read_text().splitlines()
    torch.testing.assert_close(teacher, before.encode(sentences, max_length=cfg.data.max_length))
    last = torch.load(results["checkpoints"]["last"], weights_only=True)
    assert last["callbacks"]["ScheduledPruning"]["recoveries"] == results["recovery"]
    card = (tmp_path / "model" / "README.md").read_text()
    assert ("Recovered by distillation from the encoder before each pruning event: 60 steps of batch 8 on "
            f"`{corpus}`, lr 0.003, loss 1 x MSE.") in card  # fmt: skip


def test_a_run_resumed_before_the_event_recovers_as_the_uninterrupted_run(
    tmp_path, toy_senteval_dir, tiny_model_dir, corpus
):
    recovery = ["recovery=distill", "pruning.recovery.steps=5", "pruning.recovery.batch_size=4",
                f"pruning.recovery.cache_dir={tmp_path / 'cache'}"]  # fmt: skip
    whole = run_for(tmp_path / "whole", toy_senteval_dir, tiny_model_dir, corpus, 3, *recovery)
    midway = tmp_path / "whole" / "checkpoints" / "step2-before-final-pruning.ckpt"
    resumed = run_for(tmp_path / "resumed", toy_senteval_dir, tiny_model_dir, corpus, 3, *recovery,
                      f"ckpt_path={midway}")  # fmt: skip
    plain = run_for(tmp_path / "plain", toy_senteval_dir, tiny_model_dir, corpus, 3)
    assert (
        resumed["callbacks"]["ScheduledPruning"]["recoveries"][0]["last_loss"]
        == (whole["callbacks"]["ScheduledPruning"]["recoveries"][0]["last_loss"])
    )
    for key, value in whole["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key
    changed = [k for k, v in whole["state_dict"].items() if not torch.equal(plain["state_dict"][k], v)]
    assert changed, "recovery left the weights as plain pruning does"


def test_speed_target_events_gate_layers_and_units_and_a_resumed_run_ends_alike(
    tmp_path, toy_senteval_dir, tiny_model_dir, corpus, monkeypatch
):
    """Two events ramp to 2.5x (1.43x, then 2.5x) under a stubbed latency model (a tiny model's encode
    time is mostly tokenisation), where 2.5x needs one of the two layers gone: the export drops it and
    slices the gated units; the latency model is measured once and travels in the checkpoints, so a
    run resumed between the events measures nothing and ends equal to the uninterrupted one."""
    from sparsecse.pruning.latency import LatencyModel

    measured = stub_latency(monkeypatch)

    def run(folder: Path, *extra: str) -> dict:
        cfg = compose_pruning_run(folder, toy_senteval_dir, tiny_model_dir, corpus, "trainer.max_epochs=3",
                                  "pruning=speed", "pruning.target_speedup=2.5", "pruning.num_batches=1",
                                  "pruning.schedule=[{epoch:1},{epoch:2}]", "save_model=true",
                                  "callbacks.model_checkpoint.save_top_k=-1", "evaluate.after=false",
                                  "callbacks.model_checkpoint.save_weights_only=false",
                                  "callbacks.model_checkpoint.filename='step{step}'", *extra)  # fmt: skip
        train(cfg)
        return torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)

    whole = run(tmp_path / "whole")
    assert len(measured) == 1 and measured[0].heads == (4, 4), "measured once, on the dense encoder"
    gates = {k: v for k, v in whole["state_dict"].items() if k.startswith("encoder.gates.")}
    assert sum(int(gates[f"encoder.gates.layer_{i}"]) for i in (0, 1)) == 1
    kept = next(i for i in (0, 1) if gates[f"encoder.gates.layer_{i}"] == 1)
    state = whole["callbacks"]["ScheduledPruning"]
    assert state["events_done"] == 2 and LatencyModel.from_json(state["latency"]).dense.heads == (4, 4)
    config = json.loads((tmp_path / "whole" / "model" / "config.json").read_text())
    assert config["num_hidden_layers"] == 1
    results = json.loads((tmp_path / "whole" / "results.json").read_text())
    assert results["layers_kept"] == [kept] and results["dense_layers"] == 2
    assert results["target_speedup"]["asked"] == 2.5 and results["target_speedup"]["predicted"] >= 2.5
    card = (tmp_path / "whole" / "model" / "README.md").read_text()
    assert "it keeps 1 of its 2 transformer layers" in card
    assert ("Pruned during training (schedule [{'epoch': 1}, {'epoch': 2}]) to an encode speed-up of 2.5x "
            f"over `{tiny_model_dir}` in PyTorch (predicted ") in card  # fmt: skip
    exported = load_encoder(str(tmp_path / "whole" / "model"), "avg")
    assert len(exported.backbone.encoder.layer) == 1
    heads = int(gates[f"encoder.gates.head_{kept}"].sum())
    assert exported.backbone.encoder.layer[0].attention.self.num_attention_heads == heads
    done = lambda path: torch.load(path, weights_only=True)["callbacks"]["ScheduledPruning"]["events_done"]  # noqa: E731
    between = next(p for p in sorted((tmp_path / "whole" / "checkpoints").glob("step*.ckpt")) if done(p) == 1)
    resumed = run(tmp_path / "resumed", f"ckpt_path={between}")
    assert len(measured) == 1, "the resumed run took the latency model from its checkpoint"
    for key, value in whole["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key
