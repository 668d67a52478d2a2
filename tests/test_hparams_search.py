"""`train.py hparams_search=minilm_optuna`: the Optuna sweeper gets each job's `optimized_metric`, and
a failed trial is recorded without ending the search."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from helpers import compose_train, cpu_overrides

from sparsecse.cli import REPO_ROOT
from sparsecse.cli.training import optimizable_metrics, optimized_value
from sparsecse.core.errors import ConfigError
from train import train


def test_the_optimized_metric_is_one_the_run_measures(tmp_path, toy_senteval_dir, tiny_model_dir):
    base = cpu_overrides(tmp_path, toy_senteval_dir, tiny_model_dir) + ["evaluate.tasks=[stsb,analysis]"]
    cfg = compose_train([*base, "evaluate.before=false"])
    assert optimizable_metrics(cfg.evaluate) == [
        "after/stsb", "after/sts_avg", "after/alignment", "after/uniformity",
        "val/stsb_spearman", "best_val/stsb_spearman",
    ]  # fmt: skip
    for name, message in (
        ("after/sts_avgg", r"^optimized_metric: 'after/sts_avgg' is not a metric this run measures \(after/"),
        ("before/stsb", "^optimized_metric: 'before/stsb' is not a metric"),  # evaluate.before=false
    ):
        with pytest.raises(ConfigError, match=message):  # before anything loads or trains
            train(compose_train([*base, "evaluate.before=false", f"optimized_metric={name}",
                                 "model.encoder.name_or_path=/nonexistent"]))  # fmt: skip


def test_the_optimized_value_is_read_from_the_results():
    results = {"after": {"sts_avg": 71.5}, "val": {"val/stsb_spearman": 80.25}}
    results["best_val/stsb_spearman"] = 81.0
    assert optimized_value(results, "after/sts_avg") == 71.5
    assert optimized_value(results, "val/stsb_spearman") == 80.25
    assert optimized_value(results, "best_val/stsb_spearman") == 81.0
    with pytest.raises(ConfigError, match="^optimized_metric: after/stsb was not measured by this run"):
        optimized_value(results, "after/stsb")


@pytest.mark.slow
def test_a_two_trial_optuna_search_gets_the_metric_and_survives_a_failed_trial(
    tmp_path, toy_senteval_dir, tiny_model_dir
):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"sentence {i} is about topic {i % 3} .\n" for i in range(8)))
    sweep = tmp_path / "sweep"
    command = [
        sys.executable, str(REPO_ROOT / "train.py"), "hparams_search=minilm_optuna",
        f"hydra.sweep.dir={sweep}",
        f"data_dir={toy_senteval_dir}", f"model.encoder.name_or_path={tiny_model_dir}",
        f"data.train_file={corpus}", "trainer.accelerator=cpu", "trainer.precision=32-true",
        "data.num_workers=0", "data.batch_size=4", "trainer.max_steps=-1", "trainer.max_epochs=2",
        "trainer.val_check_interval=2", "pruning.schedule=[{step:2}]", "evaluate.tasks=[stsb]", "logger=csv",
        "data.download=never",
        # two trials, one with a learning rate AdamW refuses once training starts (TPE's random start
        # draws both values under this seed with optuna 2.10, the version the sweeper allows)
        "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.seed=8", "model.optimizer.lr=choice(-1.0,0.0001)",
        "model.temperature=0.05", "pruning.head_sparsity=0.25", "pruning.uniformity_weight=1.0",  # fixed
    ]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Invalid learning rate" in done.stdout + done.stderr  # the failed trial is reported
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_params"] == {"model.optimizer.lr": 0.0001}
    (job,) = [p for p in sweep.iterdir() if (p / "results.json").is_file()]
    results = json.loads((job / "results.json").read_text())
    assert best["best_value"] == pytest.approx(results["best_val/stsb_spearman"])
    assert "after" not in results and "before" not in results, "a trial evaluates what it optimises"


def test_in_a_sweep_a_bad_setting_fails_its_job_and_a_preemption_stops_the_sweep(capsys):
    """Hydra's launchers record an Exception as a failed job and go on; a SystemExit would end the
    whole sweep at its first bad trial."""
    from sparsecse.cli import JobFailed, exit_on_config_error
    from sparsecse.core.errors import Preempted, TrainingDiverged

    errors = (ConfigError("pruning.head_sparsity", "0.9 is out of reach"), TrainingDiverged("loss is nan"))
    for error in errors:
        with pytest.raises(JobFailed, match=str(error)), exit_on_config_error("sparsecse-train", True):
            raise error
        with pytest.raises(SystemExit), exit_on_config_error("sparsecse-train"):
            raise error
    with pytest.raises(SystemExit) as stop, exit_on_config_error("sparsecse-train", sweep_job=True):
        raise Preempted("stopped by SIGTERM", 15)
    assert stop.value.code == 143
    assert "0.9 is out of reach" in capsys.readouterr().err
