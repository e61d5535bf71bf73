"""What the Slurm jobs of a partition run execute on their nodes; each writes one JSON file.

submitit pickles these callables into the job folder; the job calls them on its node. Each writes
its result atomically into the shared results folder, where the command waiting on the login node
finds it: a `NodeResult` for a node job, a pair outcome for a pair job. A job that dies before
writing leaves no file, and the waiting side reports that as an ERROR, never as a pass.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harness import atomic
from harness.validate.context import environment
from harness.validate.suite import Request, prepare, run_local_node
from harness.validate.verdict import Verdict

PAIR_MESSAGE_MIB = {False: 64, True: 16}
PAIR_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class NodeJob:
    """Run the node-local suite on the job's node and write its NodeResult to `target`."""

    request: Request
    target: str

    def __call__(self) -> str:
        prepared = prepare(replace(self.request, out=None), environment())
        result = run_local_node(prepared, progress=_log)
        atomic.write_json(Path(self.target), result.to_dict())
        print(f"{result.node}: {result.verdict.value} -> {self.target}", flush=True)
        return self.target


def _log(spec: object, outcome: object) -> None:
    name = getattr(spec, "name", spec)
    if outcome is None:
        print(f"running {name} ...", flush=True)
    else:
        print(f"{name}: {getattr(outcome, 'verdict', '?')} {getattr(outcome, 'message', '')}", flush=True)


@dataclass(frozen=True)
class PairJob:
    """An all-reduce between one process on each of the job's two nodes (mpirun inside the allocation)."""

    nodes: tuple[str, str]
    light: bool
    target: str

    def __call__(self) -> str:
        outcome = run_pair(self.nodes, PAIR_MESSAGE_MIB[self.light] * 2**20)
        atomic.write_json(Path(self.target), outcome)
        print(json.dumps(outcome), flush=True)
        return self.target


def pair_command(size_bytes: int) -> list[str]:
    """One rank per node of the allocation: Open MPI's mpirun starts the remote rank through Slurm."""
    command = ["mpirun", "-np", "2", "--map-by", "node"]
    if os.geteuid() == 0:
        command.append("--allow-run-as-root")
    return [*command, sys.executable, "-m", "harness.validate.allreduce_worker", "--bytes", str(size_bytes)]


def run_pair(nodes: tuple[str, str], size_bytes: int) -> dict[str, Any]:
    """The pair outcome as JSON: verdict (PASS, FAIL, ERROR, SKIPPED), message, busbw in GB/s."""
    base: dict[str, Any] = {"nodes": list(nodes), "busbw_gbs": None}
    missing = _mpi_missing()
    if missing:
        return {**base, "verdict": Verdict.SKIPPED.value, "message": f"needs mpi: {missing}"}
    try:
        done = subprocess.run(pair_command(size_bytes), capture_output=True, text=True, timeout=PAIR_TIMEOUT_S,
                              check=False)
    except subprocess.TimeoutExpired:
        return {**base, "verdict": Verdict.ERROR.value, "message": f"mpirun did not finish in {PAIR_TIMEOUT_S:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {**base, "verdict": Verdict.ERROR.value, "message": f"mpirun exited with code {done.returncode}: "
                f"{last[:300]}"}
    found = json.loads(lines[-1])
    return judge_pair(nodes, found)


def judge_pair(nodes: tuple[str, str], found: dict[str, Any]) -> dict[str, Any]:
    """A worker's line -> the pair outcome: both nodes must have taken part and the sum be right."""
    from harness.validate.checks.collective import bus_bandwidth

    ran_on = sorted(set(found.get("nodes") or []))
    if ran_on and ran_on != sorted(nodes):
        return {"nodes": list(nodes), "busbw_gbs": None, "verdict": Verdict.ERROR.value,
                "message": f"the ranks ran on {', '.join(ran_on)}, not on {' and '.join(nodes)}"}
    rate = bus_bandwidth(found["bytes"], found["seconds"], found["ranks"]) / 1e9
    if not found["correct"]:
        return {"nodes": list(nodes), "busbw_gbs": rate, "verdict": Verdict.FAIL.value,
                "message": "all-reduce returned a wrong sum"}
    size = found["bytes"] // 2**20
    return {"nodes": list(nodes), "busbw_gbs": rate, "verdict": Verdict.PASS.value,
            "message": f"all-reduce busbw {rate:.3g} GB/s ({size} MiB, 1 rank per node; no reference, "
                       "compared with the other pairs)"}


def _mpi_missing() -> str | None:
    import importlib.util

    if shutil.which("mpirun") is None:
        return "mpirun is not on PATH (apt install openmpi-bin)"
    if importlib.util.find_spec("mpi4py") is None:
        return "mpi4py is not installed (pip install mpi4py)"
    return None
