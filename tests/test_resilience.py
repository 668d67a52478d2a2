"""Requeue-safe runs: stable folders, resume after SIGKILL or a preemption signal, NaN losses,
unwritable checkpoints, and the DDP launcher refused inside a multirun."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import compose_train, cpu_overrides, pruning_run
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

import callbacks.checkpointing
from callbacks.checkpointing import WARNING_SIGNAL
from sparsecse.cli import CONFIG_DIR, REPO_ROOT
from sparsecse.cli.jobs import job_name, sweep_name
from sparsecse.core.errors import CheckpointWriteError, ConfigError, TrainingDiverged
from sparsecse.core.paths import run_name
from train import train


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("".join(f"sentence {i} is about topic {i % 3} .\n" for i in range(12)))
    return path  # 12 sentences, batch 4: three steps an epoch


def test_run_names_are_the_overrides_or_a_stable_hash():
    assert run_name("") == "default"
    assert run_name("pruning.head_sparsity=0.3,seed=1") == "pruning.head_sparsity=0.3,seed=1"
    assert run_name(["seed=2", "model=minilm"]) == "model=minilm,seed=2"  # order-free
    odd = run_name("data.train_file=/data/wiki 1m.txt")
    assert odd.startswith("data.train_file=_data_wiki_1m.txt-") and "/" not in odd
    assert odd == run_name("data.train_file=/data/wiki 1m.txt") != run_name("data.train_file=/data/x.txt")
    assert len(run_name("x=" + "a" * 500)) == 80


def test_sweep_and_job_folders_come_from_the_command_line(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["train.py", "-m", "seed=1,2", "pruning.head_sparsity=0.3",
                                      "hydra/launcher=slurm", "resume=false"])  # fmt: skip
    assert sweep_name() == "pruning.head_sparsity=0.3,seed=1,2"
    OmegaConf.save({"hydra": {"overrides": {"task": ["seed=1,2", "pruning.head_sparsity=0.3"]}}},
                   tmp_path / "multirun.yaml")  # fmt: skip
    assert job_name(str(tmp_path), ["seed=2", "pruning.head_sparsity=0.3"], None) == "seed=2"
    params = OmegaConf.create({"model.temperature": "0.05,0.1"})
    job = job_name(str(tmp_path), ["seed=1", "pruning.head_sparsity=0.3", "model.temperature=0.1"], params)
    assert job == "model.temperature=0.1,seed=1"
    # An experiment's sweep over seeds, narrowed to one seed by a later start into the same folder:
    # its jobs are still named by the seed, beside the earlier seeds' folders, and never collide.
    narrowed = tmp_path / "narrowed"
    narrowed.mkdir()
    OmegaConf.save({"hydra": {"overrides": {"task": ["hydra.sweeper.params.seed='3'"]}}},
                   narrowed / "multirun.yaml")  # fmt: skip
    params = OmegaConf.create({"seed": "3", "pruning": "none,demo"})
    assert job_name(str(narrowed), ["seed=3", "pruning=demo", "pruning.head_sparsity=0.3"], params) == (
        "pruning=demo,seed=3"
    )


def fault_run(tmp_path: Path, data_dir, model, corpus, *extra: str) -> list[str]:
    """Six steps over two epochs, a pruning event at step 2, validation every 2 steps, last.ckpt at
    every step."""
    return pruning_run(
        tmp_path,
        data_dir,
        model,
        corpus,
        "trainer.max_epochs=2",
        "pruning.schedule=[{step:2}]",
        "pruning.head_sparsity=0.5",
        "pruning.ffn_sparsity=0.25",
        "evaluate.after=false",
        "callbacks.last_checkpoint.every_n_steps=1",
        *extra,
    )


@pytest.mark.slow
def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(
    tmp_path, toy_senteval_dir, tiny_model_dir, corpus
):
    poison = ["+callbacks.poison._target_=fault_probe.PoisonAt", "+callbacks.poison.step=4"]
    cfg = compose_train(fault_run(tmp_path, toy_senteval_dir, tiny_model_dir, corpus, *poison))
    with pytest.raises(TrainingDiverged, match=r"^train/loss is nan at step 4; training stopped$"):
        train(cfg)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 4
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values())


@pytest.mark.slow
@pytest.mark.parametrize(
    "failure, as_torch_reports_it",
    [
        (OSError(errno.ENOSPC, "No space left on device"), False),
        (OSError(errno.EROFS, "Read-only file system"), False),
        (OSError(errno.ENOSPC, "No space left on device"), True),
    ],
    ids=["disk-full", "read-only", "disk-full-in-torch"],
)
def test_unwritable_checkpoint_is_one_line_and_the_previous_one_survives(
    tmp_path, toy_senteval_dir, tiny_model_dir, corpus, monkeypatch, failure, as_torch_reports_it
):
    real_save, saves = torch.save, []

    def failing_save(obj, f):
        saves.append(obj["global_step"])
        if obj["global_step"] == 3:
            f.write(b"partial bytes")  # what a full disk leaves behind
            if not as_torch_reports_it:
                raise failure
            try:  # torch.save's writer reports the file object's OSError as a RuntimeError
                raise failure
            except OSError:
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")  # noqa: B904
        real_save(obj, f)

    monkeypatch.setattr(callbacks.checkpointing.torch, "save", failing_save)
    cfg = compose_train(fault_run(tmp_path, toy_senteval_dir, tiny_model_dir, corpus))
    message = (
        rf"^cannot write checkpoint \S+/last.ckpt: {failure.strerror}; the previous checkpoint is intact$"
    )
    with pytest.raises(CheckpointWriteError, match=message):
        train(cfg)
    monkeypatch.undo()
    checkpoints = tmp_path / "checkpoints"
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 2
    assert sorted(p.name for p in checkpoints.iterdir() if "tmp" in p.name) == []


@pytest.mark.slow
def test_a_full_disk_stops_the_job_at_once_with_one_line(tmp_path, toy_senteval_dir, tiny_model_dir, corpus):
    """With DataLoader workers (which ignore stop signals), a failed checkpoint write once left the
    process waiting for them after its traceback, until the cluster's time limit killed it."""
    fault = ["+callbacks.fault._target_=fault_probe.DiskFullAt", "+callbacks.fault.step=2"]
    overrides = fault_run(tmp_path, toy_senteval_dir, tiny_model_dir, corpus, "data.num_workers=1", *fault)
    stopped = run_script(overrides, tmp_path, timeout=120)
    assert stopped.returncode == 1, stopped.stderr[-2000:]
    last = stopped.stderr.strip().splitlines()[-1]
    assert last == (
        f"sparsecse-train: cannot write checkpoint {tmp_path}/checkpoints/best.ckpt: No space left on "
        "device; no earlier checkpoint there"
    )
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 1
    assert [p.name for p in (tmp_path / "checkpoints").iterdir() if "tmp" in p.name] == []


def run_script(
    overrides: list[str], tmp_path: Path, timeout: float = 600, **env: str
) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", **env,
           "PYTHONPATH": f"{REPO_ROOT / 'tests'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}  # fmt: skip
    command = [sys.executable, "train.py", *overrides, f"hydra.run.dir={tmp_path}"]
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def final_state(run_dir: Path) -> tuple[dict, list]:
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    return last, json.loads((run_dir / "results.json").read_text())["val_history"]


@pytest.mark.slow
@pytest.mark.parametrize(("signal_name", "at_step", "saved_step"), [("SIGKILL", 5, 4), ("SIGUSR2", 4, 5)])
def test_killed_mid_epoch_after_pruning_then_restarted_equals_the_uninterrupted_run(
    tmp_path, toy_senteval_dir, tiny_model_dir, corpus, signal_name, at_step, saved_step
):
    """Epoch 2 holds steps 4-6; the pruning event was at step 2. SIGKILL after step 5: the process
    dies at once; last.ckpt is step 4's (written after its validation). SIGUSR2 (SLURM's warning)
    after step 4: seen after step 5, which is saved, and the run stops with a one-line message.
    Either way, the same command resumes mid-epoch."""
    whole = tmp_path / "whole"
    assert run_script(fault_run(whole, toy_senteval_dir, tiny_model_dir, corpus), whole).returncode == 0
    broken = tmp_path / "broken"
    # the restart runs the same config (the fault is armed from the environment), as a requeue does
    overrides = fault_run(
        broken, toy_senteval_dir, tiny_model_dir, corpus, "+callbacks.fault._target_=fault_probe.SignalAt"
    )
    stopped = run_script(overrides, broken, SIGNAL_AT=f"{at_step}:{signal_name}")
    if signal_name == "SIGKILL":
        assert stopped.returncode == -9
    else:
        assert stopped.returncode == 128 + signal.SIGUSR2, stopped.stderr[-2000:]
        assert stopped.stderr.strip().splitlines()[-1] == (
            f"sparsecse-train: stopped by SIGUSR2 at step 5; saved {broken}/checkpoints/last.ckpt;"
            " run the same command again to resume"
        )
        log = (broken / "train.log").read_text().splitlines()  # the run folder keeps the project's lines
        assert any(line.endswith("sparsecse-train: training ...") for line in log)
        assert any("pruning at step 2: removed" in line for line in log)
        assert log[-1].endswith("[sparsecse.run][ERROR] " + stopped.stderr.strip().splitlines()[-1])
    at_stop = torch.load(broken / "checkpoints" / "last.ckpt", weights_only=True)
    assert at_stop["global_step"] == saved_step
    assert at_stop["callbacks"]["ScheduledPruning"]["events_done"] == 1
    resumed = run_script(overrides, broken)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (expected, expected_history), (got, got_history) = final_state(whole), final_state(broken)
    assert got["global_step"] == expected["global_step"] == 6
    for key, value in expected["state_dict"].items():
        assert torch.equal(got["state_dict"][key], value), key
    assert got_history == expected_history and [h["step"] for h in got_history] == [2, 4, 6]


@pytest.mark.slow
def test_lightning_ddp_launcher_inside_a_multirun_is_refused(tmp_path, toy_senteval_dir, tiny_model_dir):
    overrides = [
        "-m",
        *cpu_overrides(tmp_path, toy_senteval_dir, tiny_model_dir),
        "seed=1,2",
        "trainer.strategy=ddp",
        "trainer.devices=2",
        "debug=fast_dev_run",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, "train.py", *overrides], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode != 0
    refusal = "sparsecse-train: error: trainer.strategy: Lightning's ddp launcher cannot run"
    lines = proc.stderr.strip().splitlines()
    # each job is refused with its line, and the sweep goes on to the next one (then fails at the end)
    assert sum(line.startswith(refusal) for line in lines) == 2, proc.stderr[-3000:]
    (end,) = [line for line in lines if line.startswith("sparsecse.cli.JobFailed: ")]  # the sweep's end
    assert end == "sparsecse.cli.JobFailed: " + next(line for line in lines if line.startswith(refusal))


def test_the_slurm_launcher_runs_one_task_per_device_and_asks_for_gpus_only_to_train_on_them():
    from hydra.utils import get_class

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        for trainer, gpus in (("cpu", 0), ("default", 0), ("gpu", 4)):
            chosen = ["hydra/launcher=slurm", f"trainer={trainer}", "trainer.devices=4"]
            cfg = compose("train", chosen, return_hydra_config=True)
            launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
            assert (launcher["gpus_per_node"], launcher["tasks_per_node"]) == (gpus, 4), trainer
    bases = [
        cls.__qualname__ for cls in get_class(launcher["_target_"]).__mro__
    ]  # the plugin scan reloads modules
    assert "SlurmLauncher" in bases and launcher["max_num_timeout"] > 0


@pytest.mark.slow
def test_a_restarted_job_resumes_and_reuses_its_scores_before_training(
    tmp_path, toy_senteval_dir, tiny_model_dir, corpus, monkeypatch
):
    import sparsecse.cli.training as training_steps

    overrides = cpu_overrides(tmp_path, toy_senteval_dir, tiny_model_dir) + [
        f"data.train_file={corpus}", "data.batch_size=4", "trainer.max_steps=2",
        "trainer.val_check_interval=2", "pruning=none", "evaluate.tasks=[stsb]", "save_model=false",
    ]  # fmt: skip
    first = train(compose_train(overrides))
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    (tmp_path / "results.json").unlink()  # as if stopped after its last checkpoint
    calls = []
    real = training_steps.evaluate_encoder
    monkeypatch.setattr(training_steps, "evaluate_encoder", lambda *a: calls.append(a) or real(*a))
    again = train(compose_train(overrides))
    assert len(calls) == 1, "only the evaluation after training runs again"
    assert again["before"] == first["before"] and again["val_history"] == first["val_history"]


def test_the_epoch_order_is_sharded_by_rank_and_resumes_mid_epoch():
    from sparsecse.data.sampling import EpochShuffle

    shares = [list(EpochShuffle(11, seed=3, rank=r, world_size=2)) for r in (0, 1)]
    assert [len(s) for s in shares] == [6, 6] and set(shares[0] + shares[1]) == set(range(11))
    assert shares[0] == list(EpochShuffle(11, seed=3, rank=0, world_size=2)), "drawn from (seed, epoch) alone"
    resumed = EpochShuffle(11, seed=3, rank=1, world_size=2)
    resumed.resume(epoch=0, examples=4)
    assert list(resumed) == shares[1][4:] and len(resumed) == 6
    assert list(resumed) == shares[1], "only the resumed epoch's first pass is shortened"
    resumed.set_epoch(1)
    assert list(resumed) != shares[1]


def short_run(tmp_path, data_dir, tiny_model_dir, corpus, *extra: str) -> list[str]:
    return cpu_overrides(tmp_path, data_dir, tiny_model_dir) + [
        f"data.train_file={corpus}", "data.batch_size=4", "trainer.max_steps=2",
        "trainer.val_check_interval=2", "pruning=none", "evaluate.tasks=[stsb]", "evaluate.before=false",
        "save_model=false", *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_a_start_with_another_config_refuses_to_resume_and_keeps_what_was_written(
    tmp_path, toy_senteval_dir, tiny_model_dir, corpus
):
    """Run folders are named by command-line overrides only: after a YAML edit, the same command
    used to resume the old run (its weights, optimizer and schedule) under the new settings."""
    train(compose_train(short_run(tmp_path, toy_senteval_dir, tiny_model_dir, corpus)))
    (tmp_path / "results.json").unlink()  # interrupted after its last checkpoint: resumable
    written = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    edited = short_run(tmp_path, toy_senteval_dir, tiny_model_dir, corpus, "model.temperature=0.1")
    message = (
        f"resume: {tmp_path} holds a run started with another config (model.temperature: 0.05 -> 0.1); "
        "resume=false starts afresh there; hydra.run.dir=DIR (hydra.sweep.dir in a multirun) runs elsewhere"
    )
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        train(compose_train(edited))
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == written, (
        "nothing written is lost"
    )
    afresh = train(compose_train(edited + ["resume=false"]))
    assert json.loads((tmp_path / "run_config.json").read_text())["model"]["temperature"] == 0.1
    assert afresh["val_history"][0]["step"] == 2


@pytest.mark.slow
def test_a_finished_run_started_again_reports_its_results_without_training(
    tmp_path, toy_senteval_dir, tiny_model_dir, corpus, monkeypatch, capsys
):
    import sparsecse.cli.training as training_steps
    import train as train_module

    overrides = short_run(tmp_path, toy_senteval_dir, tiny_model_dir, corpus)
    first = train(compose_train(overrides))
    monkeypatch.setattr(train_module, "build_trainer", lambda *a: pytest.fail("trained again"))
    monkeypatch.setattr(training_steps, "evaluate_encoder", lambda *a: pytest.fail("evaluated again"))
    assert train(compose_train(overrides)) == json.loads(json.dumps(first))
    assert (
        capsys.readouterr()
        .out.strip()
        .endswith(
            f"{tmp_path} already finished with this config; its results are in {tmp_path}/results.json "
            "(resume=false trains it again)"
        )
    )


@pytest.mark.slow
def test_a_folder_without_a_config_record_is_not_resumed(tmp_path, toy_senteval_dir, tiny_model_dir, corpus):
    train(compose_train(short_run(tmp_path, toy_senteval_dir, tiny_model_dir, corpus)))
    (tmp_path / "run_config.json").unlink()  # as an older version of SparseCSE left it
    with pytest.raises(ConfigError, match=r"^resume: \S+ holds an earlier run with no record of its config"):
        train(compose_train(short_run(tmp_path, toy_senteval_dir, tiny_model_dir, corpus)))


def test_submitit_slurm_and_last_checkpoint_agree_on_the_warning_signal(tmp_path):
    """The one signal: what submitit asks SLURM for in the batch script, what its job handler waits
    for, and what the default config's LastCheckpoint listens to."""
    from hydra import compose, initialize_config_dir
    from submitit.slurm.slurm import SlurmJobEnvironment, _make_sbatch_string

    script = _make_sbatch_string(command="true", folder=str(tmp_path), signal_delay_s=120)
    assert f"#SBATCH --signal={WARNING_SIGNAL.removeprefix('SIG')}@120" in script
    assert SlurmJobEnvironment._usr_sig() == signal.Signals[WARNING_SIGNAL]
    with initialize_config_dir(str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    assert WARNING_SIGNAL in cfg.callbacks.last_checkpoint.signals
    assert cfg.hydra.launcher.signal_delay_s > 0


def test_a_submitit_job_whose_checkpoint_ignores_the_warning_signal_is_refused(monkeypatch):
    from omegaconf import OmegaConf

    from sparsecse.cli.jobs import check_warning_signal

    callbacks = OmegaConf.create({"last_checkpoint": {"signals": ["SIGUSR1", "SIGTERM"]}})
    check_warning_signal(callbacks)  # outside submitit: nothing to agree with
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    with pytest.raises(
        ConfigError, match=r"^callbacks.last_checkpoint.signals: \['SIGUSR1', 'SIGTERM'\] lacks SIGUSR2"
    ):
        check_warning_signal(callbacks)
    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "USR1")
    check_warning_signal(callbacks)


def test_dataloader_workers_ignore_the_jobs_stop_signals():
    """SLURM signals every process of a job; a worker must leave the stop to the main process."""
    from torch.utils.data import DataLoader

    from sparsecse.training.data import STOP_SIGNALS, ignore_stop_signals

    def handlers(_):
        return [signal.getsignal(s) for s in STOP_SIGNALS]

    loader = DataLoader(
        [0], batch_size=1, num_workers=1, worker_init_fn=ignore_stop_signals, collate_fn=handlers
    )
    assert next(iter(loader)) == [signal.SIG_IGN] * len(STOP_SIGNALS)


class FakeTrainer:
    """What LastCheckpoint reads and calls, recording the steps it saves."""

    fast_dev_run = False
    strategy = type("Strategy", (), {"reduce_boolean_decision": staticmethod(lambda flag, all: flag)})()

    def __init__(self):
        self.global_step, self.saved = 0, []

    def save_checkpoint(self, path, weights_only=None):
        assert weights_only is False, "last.ckpt holds what resuming needs; saying so keeps Lightning quiet"
        self.saved.append(self.global_step)


def test_with_gradient_accumulation_each_due_step_is_saved_once_and_step_0_never(tmp_path):
    """Two batches a step (accumulate_grad_batches=2), last.ckpt every step: the batches that end
    before the first update (global step 0) saved a checkpoint of nothing, and each later step twice."""
    callback, trainer = callbacks.checkpointing.LastCheckpoint(tmp_path, every_n_steps=1), FakeTrainer()
    for batch in range(6):
        callback.on_train_batch_start(trainer, None, None, batch)
        trainer.global_step = (batch + 1) // 2  # the optimizer steps after every second batch
        callback.on_train_batch_end(trainer, None, None, None, batch)
    callback.on_fit_end(trainer, None)
    assert trainer.saved == [1, 2, 3]


@pytest.mark.slow
def test_a_config_refused_before_any_compute_leaves_no_run_folder(tmp_path, toy_senteval_dir, tiny_model_dir):
    run = tmp_path / "run"
    overrides = [*cpu_overrides(run, toy_senteval_dir, tiny_model_dir), "data.batch_size=0"]
    refused = run_script(overrides, run)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1] == (
        "sparsecse-train: error: data.batch_size: must be greater than or equal to 1, got 0"
    )
    assert not run.exists(), "sparsecse-report would list it as a failed run"
