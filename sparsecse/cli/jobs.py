"""A job's identity, the same each time it is (re)started: its run folder's name (from the overrides,
never the clock), its wandb group, name, tags and run id; and how a job ends (exit status, wandb run
closed). Hydra-aware glue of the entry points."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from sparsecse.cli import exit_on_config_error
from sparsecse.core.console import RUN_LOG
from sparsecse.core.errors import ConfigError, RunStopped
from sparsecse.core.paths import run_name
from sparsecse.core.runs import named_before

NOT_IN_FOLDER_NAMES = ("resume", "ckpt_path")  # restarting a run must not move it to another folder


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def sweep_name() -> str:
    """A sweep's folder name: its command line's overrides (Hydra's own and restart keys left out)."""
    typed = [a for a in sys.argv[1:] if "=" in a and not a.startswith(("-", "hydra.", "hydra/"))]
    return run_name([a for a in typed if override_key(a) not in NOT_IN_FOLDER_NAMES])


def swept_overrides(sweep_dir: str, overrides: list[str], sweeper_params: DictConfig | None) -> list[str]:
    """A sweep job's overrides of the swept keys (all of them if the swept keys are unknown)."""
    swept = swept_keys(Path(sweep_dir), sweeper_params)
    return [o for o in overrides if swept is None or override_key(o) in swept]


def job_name(sweep_dir: str, overrides: list[str], sweeper_params: DictConfig | None) -> str:
    """A sweep job's folder name: its values of the swept keys ("default" for the one job of a
    multirun that sweeps nothing)."""
    return run_name(swept_overrides(sweep_dir, overrides, sweeper_params))


# Run folders are named by the overrides, not the clock, so a requeued job finds its checkpoints.
# Cached: a job launched elsewhere (submitit) gets the sweep's name from the sweep's pickled config.
OmegaConf.register_new_resolver("sparsecse_sweep_name", sweep_name, use_cache=True, replace=True)
OmegaConf.register_new_resolver("sparsecse_job_name", job_name, replace=True)
OmegaConf.register_new_resolver("sparsecse_run_name", run_name, replace=True)


def instantiate_group(cfg: DictConfig, group: str, **kwargs):
    """Instantiate `cfg[group]`; a ConfigError from inside names the key under the group."""
    try:
        return instantiate(cfg[group], **kwargs)
    except Exception as err:
        cause = err if isinstance(err, ConfigError) else err.__cause__
        if isinstance(cause, ConfigError):
            raise cause.under(group) from None
        raise


def instantiate_dict(entries: DictConfig | None, **extra_for: dict) -> list:
    """Named `_target_` entries (callbacks, loggers) -> objects; a null entry is dropped.
    `extra_for` maps a class-name suffix to keyword arguments given to those entries unless set."""
    objects = []
    for entry in (entries or {}).values():
        if entry is None:
            continue
        extra = next((kw for suffix, kw in extra_for.items() if entry._target_.endswith(suffix)), {})
        objects.append(instantiate(entry, **{k: v for k, v in extra.items() if not entry.get(k)}))
    return objects


def swept_keys(sweep_dir: Path, sweeper_params: DictConfig | None) -> set[str] | None:
    """Keys given several values on this sweep's command line (as `multirun.yaml`, written before the
    jobs start, records it), and every key of `hydra.sweeper.params` whatever its values: a sweep that
    an experiment declares over seeds keeps `seed=3` in its folder names when a later start narrows
    it to that one seed, beside the earlier `seed=1` folders. None if unknown."""
    try:
        command_line = OmegaConf.load(sweep_dir / "multirun.yaml").hydra.overrides.task
    except (OSError, AttributeError):
        return None
    parsed = OverridesParser.create().parse_overrides(list(command_line))
    keys = {o.key_or_group for o in parsed if o.is_sweep_override()}
    return keys | set(sweeper_params or {})


CONF_DIGEST = "conf_digest.json"  # in a sweep folder: the config files its first job was composed from


def conf_digest(config_dir: Path) -> dict[str, str]:
    """Every config file under `config_dir` -> the SHA-256 of its text (first 16 hex digits), with the
    moved modules named as before the move (`sparsecse.core.runs.named_before`): a sweep started
    before the move goes on after it, since the move changed no setting."""
    files = sorted(config_dir.rglob("*.yaml"))
    digest = lambda p: hashlib.sha256(named_before(p.read_bytes().decode()).encode()).hexdigest()[:16]  # noqa: E731
    return {str(p.relative_to(config_dir)): digest(p) for p in files}


def check_sweep_configs(sweep_dir: Path, config_dir: Path) -> None:
    """Hydra composes each job of a sweep when the job starts, from the config files as they are
    then: a file edited while a sweep runs would silently give the later jobs other settings than
    the earlier ones. The first job records the files' digests in the sweep folder; a job that finds
    them changed is refused."""
    current, path = conf_digest(config_dir), sweep_dir / CONF_DIGEST
    sweep_dir.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "x") as f:  # the first job of the sweep, even with jobs starting side by side
            json.dump(current, f, indent=1)
        return
    except FileExistsError:
        recorded = json.loads(path.read_text())
    changed = sorted(k for k in recorded.keys() | current.keys() if recorded.get(k) != current.get(k))
    if changed:
        shown = ", ".join(changed[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")
        ways_out = f"run the sweep in a new folder, or delete {path} to accept the change"
        message = f"{config_dir} changed since this sweep started ({shown}), so its jobs would not share"
        raise ConfigError("hydra.sweep.dir", f"{message} their settings; {ways_out}")


def sweep_identity(task_name: str) -> dict:
    """Inside a Hydra multirun: the wandb group (the sweep), and the run's name and tags: the values
    this job takes for the swept keys (the tags leave out the seed, so a setting's seeds share them)."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return {"name": task_name}
    hydra_cfg = HydraConfig.get()
    chosen = swept_overrides(
        hydra_cfg.sweep.dir, list(hydra_cfg.overrides.task), hydra_cfg.sweeper.get("params")
    )
    return {
        "group": f"{task_name}/{Path(hydra_cfg.sweep.dir).name}",
        "name": ",".join(chosen) or task_name,
        "tags": [o[:64] for o in chosen if override_key(o) != "seed"],  # wandb's limit: 64 characters
    }


def wandb_run_id(output_dir: Path) -> str:
    """The run folder's wandb id, created on first use: a restarted job logs into the same run."""
    path = output_dir / "wandb_run_id"
    if path.is_file():
        return path.read_text().strip()
    run_id = uuid.uuid4().hex[:12]
    if rank_zero_only.rank == 0:
        output_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(run_id + "\n")
    return run_id


def instantiate_loggers(cfg: DictConfig) -> list[Logger]:
    """The `logger` entries; wandb ones get the sweep's group, name and tags, and the run folder's
    id (resumed when the job restarts), unless set."""
    entries = cfg.get("logger") or {}
    if not any(e is not None and e._target_.endswith("WandbLogger") for e in entries.values()):
        return instantiate_dict(entries)
    identity = sweep_identity(cfg.task_name)
    identity |= {"id": wandb_run_id(Path(cfg.output_dir)), "resume": "allow"}
    loggers = instantiate_dict(entries, WandbLogger=identity)
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            # Lightning always passes anonymous=None, which wandb warns "has no effect": only the
            # logger's own init arguments can leave it out (no public way)
            logger._wandb_init.pop("anonymous", None)
    return loggers


def submitit_warning() -> str | None:
    """The signal submitit asked SLURM to send before this job's time limit (`--signal=<it>@<delay>`),
    None outside a submitit job."""
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
        return None
    return "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")  # submitit's own default


def check_warning_signal(callbacks: DictConfig | None) -> None:
    """Before any compute, in a submitit job: LastCheckpoint must listen to the signal SLURM will send
    before the time limit, or the job would lose the steps since its last periodic save."""
    warning = submitit_warning()
    last = (callbacks or {}).get("last_checkpoint")
    if warning is None or last is None or warning in last.get("signals", []):
        return
    raise ConfigError("callbacks.last_checkpoint.signals", f"{list(last.signals)} lacks {warning}, which "
                      "submitit has SLURM send before the time limit; add it")  # fmt: skip


def discard_unused_run_folder() -> None:
    """A job refused before anything was written leaves no folder for sparsecse-report to list as a
    failed run: the folder Hydra made for it goes if it holds only Hydra's records and the log."""
    if not HydraConfig.initialized():
        return
    folder = Path(HydraConfig.get().runtime.output_dir)
    written = {p.name for p in folder.iterdir()} if folder.is_dir() else None
    if written is not None and written <= {".hydra", f"{HydraConfig.get().job.name}.log"}:
        shutil.rmtree(folder)


def stop_worker_processes() -> None:
    """DataLoader workers ignore the job's stop signals (`sparsecse.training.data.ignore_stop_signals`), and
    Lightning shuts them down only when training ends normally: after an error, Python's exit would
    wait for them forever (multiprocessing terminates daemon children, then joins them), keeping a
    failed job on the cluster until its time limit. They are killed instead."""
    workers = [child for child in multiprocessing.active_children() if child.daemon]
    if workers:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # torch's handler would report each as a crash
    for worker in workers:
        worker.kill()
        worker.join(timeout=10)


@contextmanager
def job_exit(program: str) -> Iterator[None]:
    """One line for a ConfigError or a stopped run (with its exit status; in a multirun the job fails
    and the sweep goes on), and the wandb run closed with the job's exit code: every job of a
    multirun closes its own run, failed ones with a non-zero code; otherwise the next job would log
    into this one ("run already in progress")."""
    exit_code = 1
    sweep_job = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        with exit_on_config_error(program, sweep_job):
            try:
                yield
            except ConfigError:
                discard_unused_run_folder()
                raise
            except RunStopped:  # its line is said by exit_on_config_error
                raise
            except Exception as err:  # a crash: its one-line reason ends the run's log
                RUN_LOG.error(f"{program}: stopped by {type(err).__name__}: {err}")
                raise
        exit_code = 0
    finally:
        import wandb

        wandb.finish(exit_code=exit_code)
        if exit_code:
            stop_worker_processes()
