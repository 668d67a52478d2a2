"""The Hydra spine: configs compose, every experiment instantiates, train() runs end to end."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import EXPERIMENTS, compose_train, cpu_overrides
from hydra.utils import instantiate
from toy_senteval import SNLI_SENTENCES, SNLI_TRIPLETS

from train import instantiate_dict, instantiate_group, train


@pytest.fixture
def corpus_files(tmp_path) -> dict[str, Path]:
    text = tmp_path / "wiki.txt"
    text.write_text("".join(f"sentence number {i} about things .\n" for i in range(40)))
    nli = tmp_path / "nli.csv"
    nli.write_text("sent0,sent1,hard_neg\n" + "".join(f"a {i},b {i},c {i}\n" for i in range(40)))
    return {"txt": text, "csv": nli}


def test_train_yaml_composes_with_the_defaults():
    cfg = compose_train([])
    assert cfg.model.encoder.name_or_path == "minilm"
    assert cfg.data.train_file == "snli_sentences"
    assert cfg.logger.wandb.offline is True


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_instantiates(
    experiment, tmp_path, toy_senteval_dir, tiny_model_dir, corpus_files
):
    cfg = compose_train([f"experiment={experiment}"])
    train_file = cfg.data.train_file
    suffix = "csv" if str(train_file).endswith(".csv") else "txt"
    overrides = cpu_overrides(tmp_path, toy_senteval_dir, tiny_model_dir) + [f"experiment={experiment}"]
    if train_file not in ("snli_sentences", "snli_triplets"):
        overrides.append(f"data.train_file={corpus_files[suffix]}")
    cfg = compose_train(overrides)
    datamodule = instantiate_group(cfg, "data")
    module = instantiate_group(cfg, "model")
    trainer = instantiate_group(cfg, "trainer", callbacks=instantiate_dict(cfg.callbacks), logger=False)
    sizes = {"snli_sentences": SNLI_SENTENCES, "snli_triplets": SNLI_TRIPLETS}
    assert len(datamodule.train_set) == sizes.get(train_file, 40), "the corpus the experiment names"
    assert module.encoder.pooler == cfg.model.encoder.pooler
    assert trainer.max_epochs == cfg.trainer.max_epochs


def test_paper_settings_are_one_flag_away():
    unsup = compose_train(["experiment=unsup_bert_base"])
    assert (unsup.model.encoder.name_or_path, unsup.model.encoder.pooler) == (
        "bert-base-uncased",
        "cls",
    )
    assert unsup.model.encoder.mlp_only_train and unsup.model.optimizer.lr == 3e-5
    assert (unsup.data.batch_size, unsup.data.max_length, unsup.trainer.max_epochs) == (64, 32, 1)
    assert unsup.trainer.val_check_interval == 125 and unsup.trainer.max_steps == -1
    sup = compose_train(["experiment=sup_bert_base"])
    assert (sup.data.batch_size, sup.model.optimizer.lr, sup.trainer.max_epochs) == (512, 5e-5, 3)
    assert not sup.model.encoder.mlp_only_train and sup.data.train_file.endswith("nli_for_simcse.csv")


@pytest.mark.parametrize("experiment", ["unsup_bert_base", "sup_bert_base", "unsup_sparsecse_bert_base"])
def test_paper_experiments_train_as_simcse_does(
    experiment, tmp_path, toy_senteval_dir, tiny_model_dir, corpus_files
):
    """docs/simcse_settings.md: what SimCSE's example scripts and transformers 4.2.1's Trainer use."""
    cfg = compose_train([f"experiment={experiment}"])
    trainer = cfg.trainer
    assert (trainer.gradient_clip_val, trainer.get("gradient_clip_algorithm", "norm")) == (1.0, "norm")
    assert (trainer.precision, trainer.val_check_interval, trainer.get("accumulate_grad_batches", 1)) == (
        "16-mixed", 125, 1)  # fmt: skip
    assert (cfg.seed, cfg.data.max_length, cfg.model.temperature, cfg.model.hard_negative_weight) == (
        42,
        32,
        0.05,
        0,
    )
    assert cfg.model.encoder.pooler == "cls" and cfg.model.encoder.reinit_mlp
    assert (
        cfg.callbacks.model_checkpoint.monitor == "val/stsb_spearman"
        and cfg.callbacks.model_checkpoint.mode == "max"
    )
    suffix = "csv" if cfg.data.train_file.endswith(".csv") else "txt"
    module = instantiate_group(
        compose_train(
            cpu_overrides(tmp_path, toy_senteval_dir, tiny_model_dir)
            + [f"experiment={experiment}", f"data.train_file={corpus_files[suffix]}"]
        ),  # fmt: skip
        "model",
    )
    optimizer = module.optimizer_factory(params=module.parameters())
    group = optimizer.param_groups[0]
    assert type(optimizer).__name__ == "AdamW"
    assert (group["betas"], group["eps"], group["weight_decay"]) == ((0.9, 0.999), 1e-8, 0.0)
    scheduler = module.scheduler_factory(optimizer, num_training_steps=4)
    assert [scheduler.lr_lambdas[0](step) for step in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]


def test_validation_is_float32_under_mixed_precision(make_encoder, tokenizer):
    """SimCSE chooses its best checkpoint on float32 STS-B dev scores; so do we, whatever autocast the
    trainer runs validation under."""
    from sparsecse.training.data import PairCollator
    from sparsecse.training.module import SimCSEModule

    module = SimCSEModule(make_encoder("avg"), optimizer=None).eval()
    pairs = [
        ("a man plays", "a man is playing", 4.5),
        ("dogs run", "the cat sleeps", 0.5),
        ("it rains", "rain", 3.0),
    ]
    batch = PairCollator(tokenizer)(pairs)
    scores = []
    for autocast in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            module.validation_step(batch, 0)
        scores.append((module.val_align.compute(), module.val_uniform.compute()))
        module.val_align.reset(), module.val_uniform.reset(), module.val_spearman.reset()
    assert scores[0] == scores[1]


@pytest.mark.slow
@pytest.mark.parametrize("train_file", ["snli_sentences", "csv"])
def test_fast_dev_run_writes_results(
    tmp_path, toy_senteval_dir, tiny_model_dir, corpus_files, train_file, capsys
):
    corpus = corpus_files.get(train_file, train_file)
    cfg = compose_train(
        cpu_overrides(tmp_path, toy_senteval_dir, tiny_model_dir)
        + [
            "debug=fast_dev_run",
            f"data.train_file={corpus}",
            "evaluate.after=true",
            "evaluate.tasks=[stsb]",
            "save_model=true",
        ]
    )
    results = train(cfg)
    assert set(results["after"]) == {"stsb", "sts_avg"}
    assert json.loads((tmp_path / "results.json").read_text())["after"] == results["after"]
    assert (tmp_path / "model" / "model.safetensors").is_file()
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists(), "a wiring check leaves nothing to resume"
    folder = tmp_path.resolve()
    ending = (
        f"sparsecse-train: run folder {folder}\n  results: {folder / 'results.json'}\n"
        f"  model: {folder / 'model'}\n"
    )
    assert capsys.readouterr().out.endswith(ending), "the run ends with where it wrote"


@pytest.mark.slow
def test_short_run_validates_and_keeps_the_best_checkpoint(tmp_path, toy_senteval_dir, tiny_model_dir):
    cfg = compose_train(
        cpu_overrides(tmp_path, toy_senteval_dir, tiny_model_dir)
        + ["pruning=none", "trainer.max_steps=4", "trainer.val_check_interval=2", "evaluate.before=false",
           "evaluate.tasks=[stsb]", "data.batch_size=8"]
    )  # fmt: skip
    results = train(cfg)
    assert set(results["val"]) == {"val/stsb_spearman", "val/align", "val/uniform"}
    assert [h["step"] for h in results["val_history"]] == [2, 4]
    assert results["val_history"][-1]["val/align"] == pytest.approx(results["val"]["val/align"])
    assert results["parameters"] == results["dense_parameters"] and results["parameter_sparsity"] == 0.0
    assert Path(results["checkpoints"]["best"]).name == "best.ckpt"
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    # the best checkpoint keeps what evaluation needs; only last.ckpt keeps what resuming needs
    best = torch.load(results["checkpoints"]["best"], weights_only=True)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert "optimizer_states" not in best and "optimizer_states" in last
    assert best["state_dict"].keys() == last["state_dict"].keys() and "hyper_parameters" in best
    assert (
        Path(results["checkpoints"]["best"]).stat().st_size
        < 0.6 * (tmp_path / "checkpoints" / "last.ckpt").stat().st_size
    )
    metrics = (tmp_path / "csv").rglob("metrics.csv")
    assert any("val/stsb_spearman" in m.read_text() for m in metrics)


def test_instantiated_optimizer_and_scheduler(tmp_path, toy_senteval_dir, tiny_model_dir):
    cfg = compose_train(
        cpu_overrides(tmp_path, toy_senteval_dir, tiny_model_dir) + ["model.scheduler.warmup_ratio=0.5"]
    )
    module = instantiate(cfg.model)
    optimizer = module.optimizer_factory(params=module.parameters())
    scheduler = module.scheduler_factory(optimizer, num_training_steps=4)
    lrs = []
    for _ in range(4):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([0.0, 1.5e-5, 3e-5, 1.5e-5])


def test_the_optimizer_is_adamw_with_the_configured_settings(tmp_path, toy_senteval_dir, tiny_model_dir):
    """What `model.optimizer` drives: every parameter is trained by AdamW at the configured learning rate,
    betas and decoupled weight decay (a step from zero gradients shrinks each weight by lr x decay)."""
    cfg = compose_train(
        cpu_overrides(tmp_path, toy_senteval_dir, tiny_model_dir)
        + ["model.optimizer.lr=0.01", "model.optimizer.weight_decay=0.1", "+model.optimizer.betas=[0.8,0.7]"]
    )
    module = instantiate(cfg.model)
    module._trainer = SimpleNamespace(estimated_stepping_batches=4)  # what configure_optimizers reads
    optimizer = module.configure_optimizers()["optimizer"]
    (group,) = optimizer.param_groups
    assert (group["lr"], group["weight_decay"], tuple(group["betas"])) == (0.01, 0.1, (0.8, 0.7))
    assert [id(p) for p in group["params"]] == [id(p) for p in module.parameters()]
    before = [p.detach().clone() for p in group["params"]]
    for p in group["params"]:
        p.grad = torch.zeros_like(p)
    optimizer.step()  # Adam's own update is 0 here; L2-in-the-gradient decay would move by ~lr instead
    for old, new in zip(before, group["params"]):
        torch.testing.assert_close(new.detach(), old * (1 - 0.01 * 0.1))


@pytest.mark.slow
def test_evaluation_after_fit_runs_on_the_training_device_in_its_precision(
    tmp_path, toy_senteval_dir, tiny_model_dir, monkeypatch
):
    """Lightning's teardown moves the module to the CPU after fit; the evaluation must not stay there,
    and it runs in the trainer's inference precision (here bf16 autocast on the CPU)."""
    import sparsecse.cli.training as training_steps
    import train as train_module

    seen = []

    def spy(encoder, *args):
        seen.append((encoder.device, torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return {"stsb": 0.0}

    monkeypatch.setattr(training_steps, "evaluate_encoder", spy)
    devices = []
    real_build = train_module.build_trainer
    monkeypatch.setattr(train_module, "build_trainer", lambda *a: devices.append(t := real_build(*a)) or t)
    train(compose_train(cpu_overrides(tmp_path, toy_senteval_dir, tiny_model_dir)
                        + ["pruning=none", "trainer.max_steps=1", "trainer.precision=bf16-mixed",
                           "evaluate.tasks=[stsb]", "save_model=false"]))  # fmt: skip
    root = devices[0].strategy.root_device
    assert seen == [(root, True, torch.bfloat16)] * 2, "before and after training"


def test_on_slurm_the_checkpoint_plugin_is_kept(tmp_path, toy_senteval_dir, tiny_model_dir, monkeypatch):
    """SLURMEnvironment is added to the configured plugins: AtomicCheckpointIO's atomic writes and
    weights-only reads are needed most where jobs are preempted."""
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    from callbacks import AtomicCheckpointIO
    from sparsecse.cli.training import build_trainer

    for name, value in {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "sparsecse", "SLURM_JOB_ID": "7",
                        "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    trainer = build_trainer(compose_train(cpu_overrides(tmp_path, toy_senteval_dir, tiny_model_dir)), [], [])
    environment = trainer._accelerator_connector.cluster_environment
    assert isinstance(environment, SLURMEnvironment) and not environment.auto_requeue
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_a_stage_prints_a_line_when_it_starts_and_one_with_its_time_when_it_ends(capsys, monkeypatch):
    from sparsecse.cli import training
    from sparsecse.core import console

    clock = iter([100.0, 627.4])
    monkeypatch.setattr(console.time, "perf_counter", lambda: next(clock))
    with training.stage("training"):
        assert capsys.readouterr().out == "sparsecse-train: training ...\n"
    assert capsys.readouterr().out == "sparsecse-train: training done in 8 min 47 s\n"
    shown = [console.format_seconds(s) for s in (4.25, 59.96, 61, 3725)]
    assert shown == ["4.2 s", "1 min 00 s", "1 min 01 s", "1 h 02 min"]


@pytest.mark.slow
def test_debug_profiler_writes_where_the_step_time_goes(tmp_path, toy_senteval_dir, tiny_model_dir):
    overrides = ["debug=profiler", "pruning=none", "trainer.max_steps=3", "data.batch_size=8"]
    cfg = compose_train(cpu_overrides(tmp_path, toy_senteval_dir, tiny_model_dir) + overrides)
    train(cfg)
    (report,) = (tmp_path / "profile").glob("*profile*.txt")
    assert "run_training_batch" in report.read_text()
