"""All-reduce bus bandwidth between processes of this node (MPI on host memory, through mpi4py).

busbw = bytes / time * 2(n-1)/n, as nccl-tests defines it: the rate each link must carry in a
ring all-reduce, comparable across rank counts. The sum is also checked (every rank adds its
rank+1), so a transport that corrupts data fails however fast it is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from harness.distribute.measured import cpu_model
from harness.validate.context import NodeContext
from harness.validate.judge import judge_all
from harness.validate.results import CheckResult, Measurement
from harness.validate.spec import check
from harness.validate.verdict import Verdict

RANKS = 2
MESSAGE_MIB = {False: 64, True: 16}
TIMEOUT_S = 120.0


def bus_bandwidth(size_bytes: float, seconds: float, ranks: int) -> float:
    """nccl-tests' busbw for all-reduce, in bytes per second."""
    return size_bytes / seconds * 2 * (ranks - 1) / ranks


def mpirun_command(ranks: int, size_bytes: int) -> list[str]:
    command = ["mpirun", "-np", str(ranks), "--oversubscribe"]
    if os.geteuid() == 0:
        command.append("--allow-run-as-root")
    return [*command, sys.executable, "-m", "harness.validate.allreduce_worker", "--bytes", str(size_bytes)]


@check("collective.allreduce", "all-reduce bus bandwidth between 2 processes on this node (MPI)", unit="GB/s",
       reference="fleet median (allreduce_busbw)", needs=("mpi",), timeout_s=TIMEOUT_S + 10)
def allreduce(ctx: NodeContext) -> CheckResult:
    size = MESSAGE_MIB[ctx.settings.light] * 2**20
    try:
        done = subprocess.run(mpirun_command(RANKS, size), capture_output=True, text=True,
                              timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return CheckResult("collective.allreduce", Verdict.ERROR, f"mpirun did not finish in {TIMEOUT_S:.0f} s")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return CheckResult("collective.allreduce", Verdict.ERROR,
                           f"mpirun exited with code {done.returncode}: {last[:300]}")
    found = json.loads(lines[-1])
    if not found["correct"]:
        return CheckResult("collective.allreduce", Verdict.FAIL, "all-reduce returned a wrong sum")
    rate = bus_bandwidth(found["bytes"], found["seconds"], found["ranks"]) / 1e9
    name = f"{found['ranks']} ranks, {found['bytes'] // 2**20} MiB"
    reference = ctx.references.reference("cpus", cpu_model(), "allreduce_busbw")
    return judge_all("collective.allreduce", [Measurement(name, rate, "GB/s", "allreduce_busbw", reference,
                                                           fleet=True)], "nothing measured")
