"""Sweeps through `hydra/launcher=slurm` on a real SLURM cluster: a multirun that completes, and jobs
requeued, preempted or stopped by their time limit that resume to the uninterrupted run's numbers.

Needs a running cluster (`bash .ci/slurm_cluster.sh start DIR`, then `SLURM_CONF=DIR/slurm.conf`);
.ci/run starts one. Every test here submits real jobs, so the file is marked `slurm`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from callbacks.checkpointing import WARNING_SIGNAL
from sparsecse.cli import REPO_ROOT

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def cluster() -> None:
    conf = os.environ.get("SLURM_CONF", "")
    if not (conf and Path(conf).is_file() and shutil.which("sinfo")):
        pytest.skip("no SLURM cluster: bash .ci/slurm_cluster.sh start DIR, then SLURM_CONF=DIR/slurm.conf")
    if subprocess.run(["sinfo", "-h"], capture_output=True).returncode != 0:
        pytest.skip(f"SLURM at {conf} does not answer (sinfo)")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("slurm-corpus") / "corpus.txt"
    path.write_text("".join(f"sentence {i} is about topic {i % 7} and more .\n" for i in range(4000)))
    return path  # 500 steps an epoch at batch 8


def overrides(data_dir: Path, model: Path, corpus: Path, steps: int, *extra: str) -> list[str]:
    """A tiny CPU run of `steps` steps, validated and evaluated (STS-B) at the end only."""
    return [
        "trainer=cpu", f"data_dir={data_dir}", f"model.encoder.name_or_path={model}",
        f"data.train_file={corpus}",
        "data.batch_size=8", "trainer.max_epochs=-1", f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={steps}",
        "evaluate.before=false", "evaluate.tasks=[stsb]", "logger=csv", "save_model=false",
        "pruning.schedule=[{step:20}]", "pruning.num_batches=1", "callbacks.last_checkpoint.every_n_steps=50",
        "~callbacks.progress_bar", *extra,
    ]  # fmt: skip


def environment() -> dict[str, str]:
    """One thread, as in every SLURM job here, so that the numbers compare bit for bit."""
    return {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def sweep(sweep_dir: Path, settings: list[str], *launcher: str) -> subprocess.Popen:
    """The driver of a SLURM multirun, running; its output in sweep_dir/driver.log."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "train.py", "-m", "hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1",
               f"hydra.sweep.dir={sweep_dir}", *launcher, *settings]  # fmt: skip
    log = (sweep_dir / "driver.log").open("w")
    return subprocess.Popen(command, cwd=REPO_ROOT, env=environment(), stdout=log, stderr=subprocess.STDOUT)


def finish(driver: subprocess.Popen, sweep_dir: Path, timeout: float = 420) -> None:
    try:
        returncode = driver.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        driver.kill()
        subprocess.run(["scancel", "--name=train"], capture_output=True)
        raise
    assert returncode == 0, (sweep_dir / "driver.log").read_text()[-3000:]


def job_id(sweep_dir: Path, timeout: float = 60) -> str:
    """The first job's SLURM id, from the folder submitit makes for it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [p.name for p in (sweep_dir / ".submitit").glob("*") if p.is_dir() and p.name.isdigit()]
        if found:
            return min(found, key=int)
        time.sleep(0.5)
    raise AssertionError(f"no job submitted under {sweep_dir}/.submitit")


def wait_for(path: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.2)


def job_logs(sweep_dir: Path) -> str:
    return "\n".join(p.read_text() for p in sorted((sweep_dir / ".submitit").rglob("*_log.*")))


def final_state(run_dir: Path) -> tuple[dict, dict]:
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    return last, json.loads((run_dir / "results.json").read_text())


def assert_same_run(got_dir: Path, expected_dir: Path) -> None:
    (got, got_results), (expected, expected_results) = final_state(got_dir), final_state(expected_dir)
    assert got["global_step"] == expected["global_step"]
    for key, value in expected["state_dict"].items():
        assert torch.equal(got["state_dict"][key], value), key
    for key in ("val_history", "after", "sparsity"):
        assert got_results[key] == expected_results[key], key


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, toy_senteval_dir, tiny_model_dir, corpus):
    """The reference of a run of `steps` steps: the same run, never stopped, outside SLURM."""
    made: dict[int, Path] = {}

    def run(steps: int) -> Path:
        if steps not in made:
            run_dir = tmp_path_factory.mktemp(f"uninterrupted-{steps}")
            settings = overrides(toy_senteval_dir, tiny_model_dir, corpus, steps)
            done = subprocess.run([sys.executable, "train.py", *settings, f"hydra.run.dir={run_dir}"],
                                  cwd=REPO_ROOT, env=environment(), capture_output=True, text=True,
                                  timeout=900)  # fmt: skip
            assert done.returncode == 0, done.stderr[-3000:]
            made[steps] = run_dir
        return made[steps]

    return run


@pytest.fixture
def released(tmp_path):
    """SLURM holds a requeued job for two minutes (Reason=BeginTime) before it may start again; the
    tests release their own jobs at once, so that a requeue costs seconds."""
    stop = threading.Event()

    def release() -> None:
        while not stop.wait(1.0):
            held = subprocess.run(
                ["squeue", "-h", "-t", "PENDING", "-o", "%A %r"], capture_output=True, text=True
            )
            for line in held.stdout.splitlines():
                job, reason = line.split(maxsplit=1)
                if reason.strip() == "BeginTime" and (tmp_path / ".submitit").exists():
                    subprocess.run(
                        ["scontrol", "update", f"JobId={job}", "StartTime=now"], capture_output=True
                    )

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join()


def test_a_two_job_sweep_completes_in_the_documented_layout(
    cluster, tmp_path, toy_senteval_dir, tiny_model_dir, corpus
):
    settings = overrides(toy_senteval_dir, tiny_model_dir, corpus, 20, "seed=1,2")
    driver = sweep(tmp_path, settings)
    finish(driver, tmp_path)
    for seed in (1, 2):
        run = tmp_path / f"seed={seed}"
        assert (run / ".hydra" / "overrides.yaml").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
        assert json.loads((run / "results.json").read_text())["steps"] == 20
    assert (tmp_path / "multirun.yaml").is_file()
    assert "sacct" not in (tmp_path / "driver.log").read_text(), "no poll asks for accounting"


@pytest.mark.parametrize("workers", [0, 1])
def test_a_requeued_job_resumes_to_the_uninterrupted_run(
    cluster, released, tmp_path, toy_senteval_dir, tiny_model_dir, corpus, uninterrupted, workers
):
    """`scontrol requeue` (what preemption does): SIGTERM to every process of the job. The main process
    saves last.ckpt between two steps and exits; DataLoader workers ignore the signal."""
    settings = overrides(toy_senteval_dir, tiny_model_dir, corpus, 1500, f"data.num_workers={workers}")
    driver = sweep(tmp_path, settings)
    wait_for(tmp_path / "default" / "checkpoints" / "last.ckpt")  # step 50: training is under way
    subprocess.run(["scontrol", "requeue", job_id(tmp_path)], check=True)
    finish(driver, tmp_path)
    logs = job_logs(tmp_path)
    assert "stopped by SIGTERM at step" in logs and "resuming from" in logs, logs[-3000:]
    assert "is killed by signal" not in logs
    assert_same_run(tmp_path / "default", uninterrupted(1500))


def test_a_job_at_its_time_limit_saves_on_slurms_signal_and_resumes(
    cluster, released, tmp_path, toy_senteval_dir, tiny_model_dir, corpus, uninterrupted
):
    """A 2-minute limit with the warning 30 s ahead. SLURM may send it up to a minute early (its
    event resolution), so it comes 30-90 s into an attempt: after start-up, while the 8,000 steps
    train. SLURM itself signals the job, LastCheckpoint saves, submitit requeues it, and the next
    attempt resumes (as often as the limit needs)."""
    settings = overrides(
        toy_senteval_dir, tiny_model_dir, corpus, 8000, "callbacks.last_checkpoint.every_n_steps=0"
    )
    driver = sweep(tmp_path, settings, "hydra.launcher.timeout_min=2", "hydra.launcher.signal_delay_s=30")
    finish(driver, tmp_path, timeout=900)
    logs = job_logs(tmp_path)
    assert f"stopped by {WARNING_SIGNAL} at step" in logs and "resuming from" in logs, logs[-3000:]
    assert_same_run(tmp_path / "default", uninterrupted(8000))
