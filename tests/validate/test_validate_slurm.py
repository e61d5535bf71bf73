"""`harness validate --partition/--nodes` on a real Slurm: two slurmd nodes on this machine.

Every validation runs as pinned jobs through sbatch (one per node, then a pair job across n1 and
n2 with mpirun inside the allocation); drain and resume go through scontrol and are checked with
sinfo, as an administrator would. Nodes are returned to service after every test, whatever
happened, so a failure here cannot leave the cluster unusable for the tests after it.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import cli
from harness.validate import schema
from tests.conftest import wait_until

NODES = ("n1", "n2")
QUICK = ["--light", "--checks", "node,stack,collective.internode", "--gpus", "0", "--time", "10"]
"""Checks that do not compare the two nodes' speed: both nodes share this machine's two cores, so a
benchmark of one would be slowed by the other's and the fleet rule would flag it."""
JOB_NAMES = ("harness-validate-n1", "harness-validate-n2", "harness-validate-n1-n2")
OTHER_REASON = "disk swap scheduled by the storage team"


def scontrol(*args: str) -> None:
    subprocess.run(["scontrol", *args], capture_output=True, text=True, check=True)


def node_state(node: str) -> tuple[str, str]:
    """(state, reason) as `sinfo -h -n NODE -o "%T|%E"` shows them."""
    out = subprocess.run(["sinfo", "-h", "-n", node, "-o", "%T|%E"], capture_output=True, text=True, check=True)
    state, _, reason = out.stdout.splitlines()[0].partition("|")
    return state, reason


def back_in_service() -> None:
    """No validation job left, no node drained, no reservation of ours (it cannot go while jobs run)."""
    def no_jobs() -> bool:
        found = subprocess.run(["squeue", "-h", "-n", ",".join(JOB_NAMES)], capture_output=True, text=True)
        return not found.stdout.strip()

    try:
        wait_until(no_jobs, 120, 0.5, "the validation jobs to leave the queue")
    except pytest.fail.Exception:
        subprocess.run(["scancel", "-n", ",".join(JOB_NAMES)])
        wait_until(no_jobs, 30, 0.5, "the cancelled validation jobs to leave the queue")
    for node in NODES:
        state, _ = node_state(node)
        if "drain" in state:
            scontrol("update", f"NodeName={node}", "State=RESUME")
    for line in subprocess.run(["scontrol", "-o", "show", "reservation"], capture_output=True,
                               text=True).stdout.splitlines():
        found = re.search(r"ReservationName=(harness-validate-\S+)", line)
        if found:
            scontrol("delete", f"ReservationName={found[1]}")
    # a resumed node is "idle*" until slurmctld pings it
    wait_until(lambda: all(node_state(node)[0] == "idle" for node in NODES), 60, 0.5, "both nodes idle")


@pytest.fixture
def slurm(slurm: Path) -> Iterator[Path]:
    """The conftest `slurm` working folder, with both nodes in service before and after the test."""
    back_in_service()
    yield slurm
    back_in_service()


def expected_file(workdir: Path, n2_python: str | None) -> Path:
    """Every node must run this Python; with `n2_python`, n2 is expected to run another one."""
    import platform

    text = f'python: "{platform.python_version()}"\n'
    if n2_python:
        text += f'nodes:\n  n2: {{python: "{n2_python}"}}\n'
    path = workdir / "expected.yaml"
    path.write_text(text)
    return path


def validate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["validate", *args])
    out, err = capsys.readouterr()
    return code, out, err


def verdicts(report: dict[str, Any]) -> dict[str, str]:
    return {node["node"]: node["verdict"] for node in report["nodes"]}


def checks_of(report: dict[str, Any], node: str) -> dict[str, dict[str, Any]]:
    found = next(n for n in report["nodes"] if n["node"] == node)
    return {check["name"]: check for check in found["checks"]}


def test_a_partition_run_gives_a_verdict_per_node_and_names_the_failing_one(
    slurm: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import jsonschema

    out = slurm / "validation"
    expected = expected_file(slurm, "2.7.*")
    code, text, err = validate(capsys, "--partition", "debug", *QUICK, "--expected", str(expected),
                               "--out", str(out))
    assert code == 1, text + err
    assert "node n1: PASS" in text and "node n2: FAIL" in text, text
    assert re.search(r"submitted job \d+: node-local checks on n1", err) and "all-reduce between the nodes" in err
    report = json.loads((out / "validation.json").read_text())
    jsonschema.validate(report, schema.load_schema())
    assert report["mode"] == "partition" and verdicts(report) == {"n1": "PASS", "n2": "FAIL"}
    failed = [name for name, check in checks_of(report, "n2").items() if check["verdict"] == "FAIL"]
    assert failed == ["stack.versions"] and "2.7.*" in checks_of(report, "n2")["stack.versions"]["message"]
    for node in NODES:
        pair = checks_of(report, node)["collective.internode"]
        assert pair["verdict"] == "PASS" and pair["measurements"][0]["value"] > 0, pair
    html = (out / "validation.html").read_text()
    assert "Node n1: PASS" in html and "Node n2: FAIL" in html
    assert all(len((out / "history" / f"{node}.jsonl").read_text().splitlines()) == 1 for node in NODES)
    assert node_state("n2")[0] == "idle", "without --drain no node is touched"


def test_drain_then_resume_once_the_node_passes(slurm: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(slurm / "validation")
    expected = expected_file(slurm, "2.7.*")
    code, text, err = validate(capsys, "--nodes", "n[1-2]", *QUICK, "--expected", str(expected), "--out", out,
                               "--drain")
    assert code == 1 and "would drain n2" in text and "scontrol update NodeName=n2 State=DRAIN" in text, text + err
    assert node_state("n2")[0] == "idle", "without --yes nothing changes"

    code, text, err = validate(capsys, "--nodes", "n[1-2]", *QUICK, "--expected", str(expected), "--out", out,
                               "--drain", "--yes")
    assert code == 1 and "drain n2: harness-validate: stack.versions FAIL" in text, text + err
    state, reason = node_state("n2")
    assert state == "drained" and reason.startswith("harness-validate: stack.versions FAIL"), (state, reason)
    assert node_state("n1")[0] == "idle"

    expected_file(slurm, None)  # n2's entry is fixed: it now passes
    code, text, err = validate(capsys, "--nodes", "n[1-2]", *QUICK, "--expected", str(expected), "--out", out,
                               "--resume-drained")
    assert code == 0 and "would resume n2" in text and "scontrol update NodeName=n2 State=RESUME" in text, text
    assert "n1: not drained" in err and node_state("n2")[0] == "drained"

    code, text, err = validate(capsys, "--nodes", "n[1-2]", *QUICK, "--expected", str(expected), "--out", out,
                               "--resume-drained", "--yes")
    assert code == 0, text + err
    assert "node n2: PASS" in text and "resume n2: now PASS" in text
    assert node_state("n2")[0] == "idle"
    reservations = subprocess.run(["scontrol", "-o", "show", "reservation"], capture_output=True, text=True).stdout
    assert "harness-validate" not in reservations


def test_a_node_drained_by_someone_else_is_left_alone(slurm: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scontrol("update", "NodeName=n2", "State=DRAIN", f"Reason={OTHER_REASON}")
    out = str(slurm / "validation")
    expected = expected_file(slurm, "2.7.*")
    code, text, err = validate(capsys, "--nodes", "n[1-2]", *QUICK, "--expected", str(expected), "--out", out,
                               "--drain", "--yes")
    assert code == 0, text + err  # n1 passes; n2 could not take a job and is not judged
    assert "n2: not validated" in err and OTHER_REASON in err
    assert node_state("n2") == ("drained", OTHER_REASON)

    code, text, err = validate(capsys, "--nodes", "n2", *QUICK, "--out", out, "--resume-drained", "--yes")
    assert code == 0 and "drained by someone else" in err and "left alone" in err, text + err
    assert node_state("n2") == ("drained", OTHER_REASON)


def test_a_check_that_cannot_run_is_an_error_and_the_exit_code_says_so(
    slurm: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMPI_MCA_pml", "no-such-component")  # the jobs inherit it: every mpirun fails
    out = slurm / "validation"
    code, text, err = validate(capsys, "--partition", "debug", *QUICK[:2], "node,collective", *QUICK[3:],
                               "--out", str(out))
    assert code == 1, text + err
    report = json.loads((out / "validation.json").read_text())
    for node in NODES:
        checks = checks_of(report, node)
        assert checks["collective.allreduce"]["verdict"] == "ERROR", checks["collective.allreduce"]
        assert checks["collective.internode"]["verdict"] == "ERROR"
        assert "either node" in checks["collective.internode"]["message"]
        assert checks["node.memory"]["verdict"] == "PASS"
    assert verdicts(report) == {"n1": "ERROR", "n2": "ERROR"}
