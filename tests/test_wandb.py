"""Offline wandb in Hydra multiruns: one finished run per job, grouped by sweep, tagged by setting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from wandb_records import run_summary

from sparsecse.cli import REPO_ROOT


def multirun(tmp_path: Path, data_dir: Path, model: Path, *overrides: str, mode: str = "-m"):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"sentence {i} is about topic {i % 3} .\n" for i in range(8)))
    command = [
        sys.executable, str(REPO_ROOT / "train.py"), mode, f"hydra.sweep.dir={tmp_path / 'sweep'}",
        f"data_dir={data_dir}", f"model.encoder.name_or_path={model}", f"data.train_file={corpus}",
        "trainer.accelerator=cpu", "data.num_workers=0", "data.batch_size=4", "trainer.max_steps=2",
        "trainer.val_check_interval=1", "pruning=none", "evaluate.before=false", "evaluate.tasks=[stsb]",
        "save_model=false", "logger=wandb", *overrides,
    ]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def wandb_runs(run_dir: Path) -> list[dict]:
    return [run_summary(p) for p in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))]


@pytest.mark.slow
def test_each_job_of_a_multirun_finishes_its_own_wandb_run(tmp_path, toy_senteval_dir, tiny_model_dir):
    done = multirun(tmp_path, toy_senteval_dir, tiny_model_dir, "seed=1,2", "model.temperature=0.05,0.1")
    assert done.returncode == 0, done.stderr[-3000:]
    sweep = tmp_path / "sweep"
    jobs = [f"model.temperature={t},seed={seed}" for seed in (1, 2) for t in (0.05, 0.1)]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == sorted(jobs)  # named by the swept keys
    runs = [wandb_runs(sweep / job) for job in jobs]
    assert [len(r) for r in runs] == [1, 1, 1, 1]  # no job logged into another's run
    runs = [r[0] for r in runs]
    assert {r["exit_code"] for r in runs} == {0}
    assert {r["group"] for r in runs} == {f"train/{sweep.name}"}
    assert runs[0]["tags"] == runs[2]["tags"] == ["model.temperature=0.05"]  # the setting, not the seed
    assert runs[1]["name"] == "seed=1,model.temperature=0.1"  # swept keys only, not the fixed ones
    after = json.loads((sweep / jobs[1] / "results.json").read_text())["after"]
    assert float(runs[1]["summary"]["after/stsb"]) == pytest.approx(after["stsb"])
    assert runs[1]["summary"]["results/_type"] == '"table-file"'  # the results table
    assert runs[1]["summary"]["plots/align_uniform_path/_type"] == '"images/separated"'
    assert (sweep / jobs[1] / "align_uniform_path.png").stat().st_size > 1000


@pytest.mark.slow
def test_a_failing_job_finishes_its_run_with_an_exit_code(tmp_path, toy_senteval_dir, tiny_model_dir):
    # AdamW refuses a negative learning rate when training starts, after the wandb run began
    done = multirun(tmp_path, toy_senteval_dir, tiny_model_dir, "model.optimizer.lr=-1")
    runs = wandb_runs(tmp_path / "sweep" / "default")  # the one job of a sweep that sweeps nothing
    assert done.returncode != 0 and "Invalid learning rate" in done.stderr
    assert len(runs) == 1 and runs[0]["exit_code"] == 1


@pytest.mark.slow
def test_a_restarted_run_logs_into_the_same_wandb_run(tmp_path, toy_senteval_dir, tiny_model_dir):
    """The second start finds last.ckpt in the same run folder, resumes from it, and reopens the
    wandb run with the id the first start saved there."""
    single = f"hydra.run.dir={tmp_path / 'run'}"
    first = multirun(tmp_path, toy_senteval_dir, tiny_model_dir, mode=single)
    assert first.returncode == 0, first.stderr[-3000:]
    (tmp_path / "run" / "results.json").unlink()  # stopped after its last checkpoint: not finished
    second = multirun(tmp_path, toy_senteval_dir, tiny_model_dir, mode=single)
    assert second.returncode == 0, second.stderr[-3000:]
    run_id = (tmp_path / "run" / "wandb_run_id").read_text().strip()
    files = sorted((tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert [f.name for f in files] == [f"run-{run_id}.wandb"] * 2
    assert f"resuming from {tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}" in second.stdout + second.stderr
