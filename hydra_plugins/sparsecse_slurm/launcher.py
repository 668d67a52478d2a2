"""The launcher of `hydra/launcher=slurm` (conf/hydra/launcher/slurm.yaml): hydra-submitit-launcher's
SLURM launcher, watching its jobs through `squeue` (sparsecse/cli/slurm.py). Hydra takes launchers
from the hydra_plugins package only. Without the [slurm] extra there is nothing to offer."""

from __future__ import annotations

import sys
from typing import Any

try:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
    from submitit.core.utils import UncompletedJobError
    from submitit.slurm.slurm import SlurmJob

    from sparsecse.cli.slurm import QueueWatcher
except ImportError:  # hydra-submitit-launcher is not installed
    SlurmLauncher = None

if SlurmLauncher is not None:

    class QueueWatchingSlurmLauncher(SlurmLauncher):
        """hydra-submitit-launcher's SLURM launcher, its jobs watched through `squeue`."""

        def launch(self, *args: Any, **kwargs: Any):
            SlurmJob.watcher = QueueWatcher(delay_s=60)  # polls at least every minute while jobs run
            try:
                return super().launch(*args, **kwargs)
            except UncompletedJobError as err:
                job, state = str(err).splitlines()[:2]  # "Job 6 (task: 0) with path ...", "... (state: X)"
                state = state.split("(state: ", 1)[-1][:-1]
                logs = f"{self.config.hydra.sweep.dir}/.submitit"
                print(f"sparsecse-train: SLURM job {job.split()[1]} ended without a result, state {state}; "
                      f"its logs are in {logs}", file=sys.stderr)  # fmt: skip
                raise SystemExit(1) from None
