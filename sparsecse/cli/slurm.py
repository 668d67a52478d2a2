"""`hydra/launcher=slurm`: hydra-submitit-launcher, with a driver that learns each job's state from
`squeue` and gives up, in one line, on a job that ended without a result (the launcher class itself
is in hydra_plugins/sparsecse_slurm, where Hydra looks for launchers).

submitit asks `sacct` for job states. A cluster without accounting storage (a common small setup)
answers every call with an error, so every state stays UNKNOWN: a job killed before submitit could
write its result (say, `scancel` or a node failure at start-up) is then waited on for ever, and each
poll logs a warning. `squeue --states=all` answers on any cluster while the controller remembers the
job (`MinJobAge`, 300 s by default, after it ends); a job it no longer knows has ended.
"""

from __future__ import annotations

import subprocess
import time

from submitit.slurm.slurm import SlurmInfoWatcher

GONE = "GONE"  # the state of a job squeue no longer knows: finished, as far as waiting goes
# Why a job may pend for ever: it asks for more than any node of its partition has, or for an
# account, QOS or constraint the cluster does not know. Such a job is cancelled and reported.
NEVER_RUNS = ("PartitionConfig", "PartitionNodeLimit", "BadConstraints", "InvalidAccount", "InvalidQOS")


class QueueWatcher(SlurmInfoWatcher):
    """submitit's watcher of SLURM job states, asking `squeue` instead of `sacct`."""

    def _make_command(self) -> list[str] | None:
        ids = sorted({job_id.split("_")[0] for job_id in self._registered - self._finished})
        return ["squeue", "--states=all", f"--jobs={','.join(ids)}", "--format=%i|%T|%N|%r"] if ids else None

    def update(self) -> None:
        command = self._make_command()
        if command is None:
            return
        self._num_calls += 1
        answer = subprocess.run(command, capture_output=True, text=True, check=False)
        if answer.returncode == 0 or "Invalid job id" in answer.stderr:
            rows = answer.stdout.splitlines()[1:]  # below squeue's own header
            found = self.read_info("\n".join(["JobID|State|NodeList|Reason", *rows]))
            for job_id, info in found.items():
                if info["State"] == "PENDING" and info.get("Reason") in NEVER_RUNS:
                    subprocess.run(["scancel", job_id.split("_")[0]], capture_output=True, check=False)
                    never = (
                        f"CANCELLED (it can never start: SLURM says {info['Reason']}; see hydra.launcher.*)"
                    )
                    found[job_id] = {**info, "State": never}
            self._info_dict.update(found)
            for job_id in self._registered - self._finished - set(found):
                self._info_dict[job_id] = {"State": GONE}
        self._last_status_check = time.time()
        for job_id in self._registered - self._finished:
            if self.is_done(job_id, mode="cache"):
                self._finished.add(job_id)
