"""Check that submitit drives the local two-node Slurm cluster (slurm/cluster.sh).

Submits one job of 2 tasks over 2 nodes; each task returns (SLURM_PROCID, hostname) and
`job.results()` collects one result per task. Prints the results and the wall time.

    slurm/cluster.sh start
    eval "$(slurm/cluster.sh env)"        # SLURM_CONF: sbatch/squeue find the cluster
    .venv/bin/python slurm/examples/check_submitit.py [FOLDER]

There is no accounting (no slurmdbd), so `sacct` fails and submitit logs "Bypassing sacct
error" while it waits: expected, harmless. Exits 1 if the results are not one per task.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import time

import submitit


def where() -> tuple[str, str, str]:
    """Runs in each Slurm task: its rank, host name and Slurm node name."""
    return os.environ["SLURM_PROCID"], socket.gethostname(), os.environ.get("SLURMD_NODENAME", "?")


def main() -> int:
    if "SLURM_CONF" not in os.environ:
        print('warning: SLURM_CONF is not set; run: eval "$(slurm/cluster.sh env)"', file=sys.stderr)
    folder = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="submitit-check-")
    executor = submitit.AutoExecutor(folder=os.path.join(folder, "%j"))
    executor.update_parameters(
        slurm_partition="debug",
        nodes=2,
        tasks_per_node=1,
        cpus_per_task=1,
        timeout_min=5,
    )
    start = time.monotonic()
    job = executor.submit(where)
    print(f"submitted job {job.job_id} (logs in {folder})")
    results = job.results()  # one entry per task, in task order
    elapsed = time.monotonic() - start
    print(f"results: {results}")
    print(f"submit -> results: {elapsed:.1f} s")
    ranks = sorted(r[0] for r in results)
    nodes = sorted(r[2] for r in results)
    if ranks != ["0", "1"] or nodes != ["n1", "n2"]:
        print(f"unexpected: ranks {ranks}, nodes {nodes} (want 0,1 on n1,n2)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
