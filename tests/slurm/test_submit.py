"""`harness submit`, `status`, `logs`, `cancel` without a cluster: fake Slurm commands on PATH.

As in submitit's own tests, `sbatch` is a script that keeps the batch file it is given, so the
production path runs and the script is compared with golden files (tests/golden/; regenerate
with HARNESS_UPDATE_GOLDEN=1). The real cluster is exercised in tests/slurm/test_cluster_jobs.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from harness import cli
from harness.config import SlurmConfig
from harness.distribute.cluster import detect
from harness.errors import ConfigError, Preempted
from harness.rundir import read_state
from harness.slurm import backends, follow, records, resources, scheduler
from harness.slurm.job import TrainJob, task_banner
from harness.slurm.profiles import get_profile, load_profiles
from harness.slurm.scheduler import JobInfo
from harness.slurm.submit import SubmitOptions, plan
from tests.conftest import CONFIGS, ROOT, wait_until

GOLDEN = ROOT / "tests" / "golden"
CLUSTERS = CONFIGS / "clusters.yaml"
FAKE_JOB_ID = "4242"
SINFO = "debug*|2|up|infinite|1-infinite\ngpu|4|up|2-00:00:00|1-2\n"


def write_script(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


@pytest.fixture
def fake_slurm(tmp_path: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """sinfo, sbatch, squeue, scontrol, scancel and srun as small scripts; returns their record folder.

    sbatch keeps the script it receives and answers like Slurm; squeue/scontrol print the files
    `squeue`/`scontrol` of the record folder when present, else "Invalid job id".
    """
    record = tmp_path / "slurm-record"
    record.mkdir()
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    write_script(bin_dir / "sinfo", f"#!/bin/sh\ncat <<'EOF'\n{SINFO}EOF\n")
    write_script(bin_dir / "srun", "#!/bin/sh\nexit 0\n")
    write_script(
        bin_dir / "sbatch",
        f"""#!/bin/sh
if [ -e "{record}/fail" ]; then
  echo "sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified" >&2
  exit 1
fi
cp "$1" "{record}/script.sh"
echo "Submitted batch job {FAKE_JOB_ID}"
""",
    )
    for name in ("squeue", "scontrol"):
        write_script(
            bin_dir / name,
            f"""#!/bin/sh
if [ -e "{record}/{name}" ]; then cat "{record}/{name}"; exit 0; fi
echo "slurm_load_jobs error: Invalid job id specified" >&2
exit 1
""",
        )
    write_script(bin_dir / "scancel", f'#!/bin/sh\necho "$@" >> "{record}/scancel"\n')
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("HARNESS_PROFILES", raising=False)
    return record


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(args)
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- time limits


@pytest.mark.parametrize(
    ("text", "minutes"),
    [
        ("90", 90),
        ("1:30", 2),  # MM:SS, seconds round up
        ("00:30:00", 30),
        ("2:00:00", 120),
        ("1-0", 1440),
        ("1-02", 1560),
        ("1-02:30", 1590),
        ("2-00:00:00", 2880),
        ("0:00:01", 1),
    ],
)
def test_time_limits_in_slurm_formats(text: str, minutes: int) -> None:
    assert resources.parse_time(text) == minutes


@pytest.mark.parametrize("text", ["", "soon", "1:75:00", "1:00:61", "-5", "1:2:3:4", "0", "1h"])
def test_malformed_time_limits_name_the_value_and_the_formats(text: str) -> None:
    with pytest.raises(ConfigError) as err:
        resources.parse_time(text)
    assert repr(text) in str(err.value)


def test_format_time() -> None:
    assert resources.format_time(90) == "01:30:00"
    assert resources.format_time(1590) == "1-02:30:00"


# --------------------------------------------------------------------------- resources


def test_precedence_flags_over_config_over_profile() -> None:
    profile = SlurmConfig.model_validate(
        {"partition": "gpu", "account": "site", "setup": ["module load cuda"], "env": {"A": "1", "B": "1"}}
    )
    config = SlurmConfig.model_validate({"account": "mine", "setup": ["echo hi"], "env": {"B": "2"}, "nodes": 2})
    merged = resources.merge(profile, config, {"nodes": 4, "partition": None})
    assert merged.partition == "gpu"  # only the profile sets it
    assert merged.account == "mine"  # the config wins over the profile
    assert merged.nodes == 4  # a flag wins over the config; a flag left out (None) does not count
    assert merged.setup == ["module load cuda", "echo hi"]
    assert merged.env == {"A": "1", "B": "2"}
    assert merged.time_minutes == 60  # nobody set it: the default


@pytest.mark.parametrize(
    ("strategy", "gpus", "expected"),
    [("multiworker", 4, 4), ("horovod", 8, 8), ("auto", 2, 2), ("mirrored", 4, 1), ("single", 1, 1), ("horovod", 0, 1)],
)
def test_default_tasks_per_node(strategy: str, gpus: int, expected: int) -> None:
    assert resources.default_tasks_per_node(strategy, gpus) == expected


FIT_CASES: list[tuple[str, dict[str, Any], str | None]] = [
    ("horovod", {"gpus_per_node": 4}, None),
    ("horovod", {"gpus_per_node": 4, "tasks_per_node": 1}, "1 task on 4 GPUs would leave 3 idle"),
    ("multiworker", {"nodes": 2, "gpus_per_node": 2, "tasks_per_node": 1}, "leave 1 GPUs per node idle"),
    ("multiworker", {"gpus_per_node": 2, "tasks_per_node": 4}, "every task needs a GPU of its own"),
    ("multiworker", {"nodes": 2}, None),
    ("multiworker", {"nodes": 1, "tasks_per_node": 1}, None),
    ("mirrored", {"gpus_per_node": 4}, None),
    ("mirrored", {"nodes": 2}, "mirrored runs in one process on one node"),
    ("mirrored", {"tasks_per_node": 2}, "mirrored runs one process per node"),
    ("single", {"nodes": 2}, "single runs one process"),
    ("single", {"gpus_per_node": 2}, "single uses one GPU"),
    ("single", {}, None),
    ("auto", {"nodes": 2, "gpus_per_node": 4}, None),
    ("auto", {"executor": "local", "nodes": 2}, "local executor runs on this machine only"),
    ("auto", {"time_minutes": 2}, "must be longer than slurm.signal_delay_s=120"),
]


@pytest.mark.parametrize(("strategy", "settings", "problem"), FIT_CASES)
def test_strategy_must_fit_the_resources(strategy: str, settings: dict[str, Any], problem: str | None) -> None:
    slurm = resources.with_tasks(SlurmConfig.model_validate(settings), strategy)
    if problem is None:
        resources.check_fit(strategy, slurm)
        return
    with pytest.raises(ConfigError) as err:
        resources.check_fit(strategy, slurm)
    assert problem in str(err.value)


def test_effective_strategy_says_what_auto_will_pick() -> None:
    assert resources.effective_strategy("auto", 8, 4) == "multiworker"
    assert resources.effective_strategy("auto", 1, 4) == "mirrored"
    assert resources.effective_strategy("auto", 1, 0) == "single"
    assert resources.effective_strategy("horovod", 8, 4) == "horovod"


# --------------------------------------------------------------------------- profiles


def test_every_shipped_cluster_profile_loads() -> None:
    profiles = load_profiles(CLUSTERS)
    assert {"local", "example-a100", "example-preemptible"} <= set(profiles)
    assert profiles["example-a100"].gpu_type == "a100"
    assert profiles["local"].partition == "debug"


def test_profile_errors_name_file_profile_and_key(tmp_path: Path) -> None:
    path = tmp_path / "clusters.yaml"
    path.write_text("profiles:\n  mine:\n    partiton: gpu\n    nodes: 0\n")
    with pytest.raises(ConfigError) as err:
        load_profiles(path)
    message = str(err.value)
    assert str(path) in message and "'mine'" in message
    assert "did you mean 'partition'" in message
    assert "nodes" in message and "Received: nodes=0" in message


def test_unknown_profile_suggests_the_closest() -> None:
    with pytest.raises(ConfigError) as err:
        get_profile("exmaple-a100", CLUSTERS)
    assert "Did you mean 'example-a100'?" in str(err.value)


# --------------------------------------------------------------------------- sinfo, squeue, scontrol


def test_sinfo_partitions() -> None:
    parsed = {p.name: p for p in scheduler.parse_sinfo(SINFO + "gpu|2|up|2-00:00:00|1-2\nnonsense\n")}
    assert parsed["debug"] == scheduler.Partition("debug", 2, True, "up", None, None)
    assert parsed["gpu"].nodes == 6  # a partition on several lines (node states) adds up
    assert parsed["gpu"].max_time_minutes == 2880 and parsed["gpu"].max_nodes == 2 and not parsed["gpu"].default


def test_partition_checks() -> None:
    known = scheduler.parse_sinfo(SINFO)
    assert scheduler.check_partition(SlurmConfig(), known).name == "debug"  # the default partition
    with pytest.raises(ConfigError, match="has no default partition"):
        scheduler.check_partition(SlurmConfig(), [p for p in known if not p.default])


SCONTROL = (
    "JobId=35 JobName=my job UserId=root(0) GroupId=root(0) JobState=PENDING Reason=BeginTime "
    "Dependency=(null) Requeue=1 Restarts=2 BatchFlag=1 RunTime=00:00:00 TimeLimit=UNLIMITED "
    "AllocNode:Sid=localhost:9692 NodeList=(null) CPUs/Task=1 WorkDir=/tmp/hs "
    "StdErr=/tmp/with space/runs/x/slurm/35_0_log.err StdIn=/dev/null "
    "StdOut=/tmp/with space/runs/x/slurm/35_0_log.out Power= "
)


def test_scontrol_and_squeue_parsing() -> None:
    info = scheduler.parse_scontrol(SCONTROL)
    assert info == JobInfo(
        "35", "PENDING", "BeginTime", "00:00:00", None, 2, "/tmp/with space/runs/x/slurm/35_0_log.out"
    )
    assert scheduler.parse_squeue("35", "RUNNING|None|1:02|n[1-2]\n") == JobInfo(
        "35", "RUNNING", None, "1:02", "n[1-2]"
    )
    assert scheduler.parse_squeue("35", "") is None
    assert scheduler.parse_scontrol("slurm_load_jobs error") is None


@pytest.mark.parametrize(
    ("times", "expected"),
    [
        ("StartTime=2026-11-27T12:00:46 PreemptEligibleTime=2026-11-27T12:00:46 PreemptTime=None", False),  # scancel
        ("StartTime=2026-11-27T12:00:46 PreemptTime=2026-11-27T12:00:56", True),  # chosen in this run
        ("StartTime=2026-11-27T12:05:00 PreemptTime=2026-11-27T12:00:56", False),  # an earlier run's, requeued
    ],
)
def test_preemption_is_told_from_a_cancellation_by_preempt_time(times: str, expected: bool) -> None:
    text = f"JobId=132 JobName=x JobState=RUNNING Reason=None Restarts=0 {times} Partition=debug"
    assert scheduler.chosen_for_preemption("132", runner=lambda command: text) is expected


# --------------------------------------------------------------------------- checks before submitting (CLI)


CHECKS: list[tuple[str, list[str], str]] = [
    ("missing config", ["missing.yaml"], "config file missing.yaml does not exist"),
    (
        "horovod, 1 task, 4 GPUs",
        ["distribute.strategy=horovod", "--gpus-per-node", "4", "--tasks-per-node", "1"],
        "leave 3 idle",
    ),
    ("mirrored on 2 nodes", ["distribute.strategy=mirrored", "--nodes", "2"], "mirrored runs in one process"),
    ("single, 2 tasks", ["distribute.strategy=single", "--tasks-per-node", "2"], "single runs one process"),
    (
        "tasks without GPUs",
        ["distribute.strategy=multiworker", "--gpus-per-node", "2", "--tasks-per-node", "4"],
        "every task needs a GPU",
    ),
    ("unknown partition", ["--partition", "debgu"], "unknown partition 'debgu' (from sinfo). Did you mean 'debug'?"),
    ("malformed time", ["--time", "1:75:00"], "malformed time limit '1:75:00'"),
    ("time not a time", ["--time", "soon"], "malformed time limit 'soon'"),
    ("more nodes than the partition", ["--nodes", "3", "distribute.strategy=multiworker"], "partition 'debug' has 2"),
    (
        "larger than the partition's job size",
        ["--partition", "gpu", "--nodes", "3", "distribute.strategy=multiworker"],
        "allows jobs of at most 2 nodes",
    ),
    ("longer than the partition", ["--partition", "gpu", "--time", "3-00:00:00"], "longer than partition 'gpu'"),
    ("shorter than the signal delay", ["--time", "2"], "slurm.signal_delay_s=120"),
    ("unknown profile", ["--profile", "exmaple-a100", "--profiles", str(CLUSTERS)], "Did you mean 'example-a100'"),
    ("local executor on 2 nodes", ["--executor", "local", "--nodes", "2"], "slurm.nodes must be 1"),
    ("bad env name", ["slurm.env={A-B: x}"], "shell variable names"),
    ("newline in the job name", ['slurm.job_name="a\\nb"'], "must not contain control characters"),
    ("% in the run name", ["run.name=run%j"], "must not contain '%'"),
    ("missing data", ["data.dataset=csv", "data.path=nope.csv", "data.target=y"], "nope.csv does not exist"),
    ("unknown config key", ["slurm.partiton=gpu"], "partiton"),
    ("bad sbatch option", ["slurm.additional={'bad option': x}"], "sbatch option names"),
]


@pytest.mark.parametrize(("args", "message"), [c[1:] for c in CHECKS], ids=[c[0] for c in CHECKS])
def test_checks_before_submitting(
    args: list[str], message: str, fake_slurm: Path, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(["submit", *args], capsys)
    assert code == 2, err
    assert message in err
    assert not (workdir / "runs").exists()
    assert not (fake_slurm / "script.sh").exists()


def test_existing_run_directory_needs_overwrite(
    fake_slurm: Path, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir / "runs" / "digits-cnn").mkdir(parents=True)
    (workdir / "runs" / "digits-cnn" / ".harness-run").write_text("{}")  # made by harness: may be replaced
    code, _, err = run_cli(["submit"], capsys)
    assert code == 2 and "already exists" in err and "--overwrite" in err
    assert not (fake_slurm / "script.sh").exists()
    code, out, _ = run_cli(["submit", "--overwrite"], capsys)
    assert code == 0 and f"submitted Slurm job {FAKE_JOB_ID}" in out


def test_overwrite_keeps_the_old_run_when_the_scheduler_refuses_the_job(
    fake_slurm: Path, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = workdir / "runs" / "digits-cnn"
    old.mkdir(parents=True)
    (old / ".harness-run").write_text("{}")
    (old / "report.json").write_text("precious")
    (fake_slurm / "fail").write_text("")
    code, _, err = run_cli(["submit", "--overwrite"], capsys)
    assert code != 0 and "not submitted" in err
    assert (old / "report.json").read_text() == "precious"
    assert sorted(p.name for p in (workdir / "runs").iterdir()) == ["digits-cnn"], "nothing set aside is left"
    (fake_slurm / "fail").unlink()
    code, out, _ = run_cli(["submit", "--overwrite"], capsys)
    assert code == 0 and not (old / "report.json").exists()
    assert sorted(p.name for p in (workdir / "runs").iterdir()) == ["digits-cnn"]


# --------------------------------------------------------------------------- dry run against golden files


def normalize(text: str, workdir: Path) -> str:
    return text.replace(shlex.quote(sys.executable), "<PYTHON>").replace(str(workdir), "<WORKDIR>")


HOSTILE_NAME = "x'$(touch pwned)`touch pwned2`"
HOSTILE_ENV = {"A": "$(touch pwned3)", "B": "it's; touch pwned4", "C": "two\nlines"}
DRY_RUNS: dict[str, list[str]] = {
    "default": [],
    "two-node-multiworker": [
        "data.dataset=wine",
        "model.name=mlp",
        "distribute.strategy=multiworker",
        "--nodes",
        "2",
        "--time",
        "00:30:00",
        "--partition",
        "debug",
    ],
    "gpu-profile": [
        "distribute.strategy=horovod",
        "--profile",
        "example-a100",
        "--profiles",
        str(CLUSTERS),
        "--nodes",
        "2",
    ],
    "local-executor": ["distribute.strategy=multiworker", "--executor", "local", "--tasks-per-node", "2"],
    "hostile-values": [
        f"run.name={HOSTILE_NAME}",
        f'slurm.job_name={HOSTILE_NAME} "quoted"',
        f"slurm.env={json.dumps(HOSTILE_ENV)}",
        "slurm.setup=['module load cuda  # raw: shown and run as written']",
        "--account",
        "acct; touch pwned5",
    ],
}


@pytest.mark.parametrize("name", sorted(DRY_RUNS))
def test_dry_run_matches_golden_file(
    name: str, fake_slurm: Path, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(["submit", *DRY_RUNS[name], "--dry-run"], capsys)
    assert code == 0, err
    assert not (workdir / "runs").exists(), "a dry run creates nothing"
    assert not (fake_slurm / "script.sh").exists(), "a dry run submits nothing"
    text = normalize(out, workdir)
    golden = GOLDEN / f"dry-run-{name}.txt"
    if os.environ.get("HARNESS_UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text(), f"dry run differs from {golden}; HARNESS_UPDATE_GOLDEN=1 rewrites it"


def test_submission_sends_exactly_the_dry_run_script(
    fake_slurm: Path, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["data.dataset=wine", "model.name=mlp", "run.name=wine", "distribute.strategy=multiworker", "--nodes", "2"]
    code, out, _ = run_cli(["submit", *args, "--dry-run"], capsys)
    assert code == 0
    shown = out.split("----- batch script (submitit) -----\n")[1].split("\n----- per-rank environment -----")[0]
    code, out, err = run_cli(["submit", *args], capsys)
    assert code == 0, err
    run_dir = workdir / "runs" / "wine"
    assert out.splitlines()[:2] == [f"submitted Slurm job {FAKE_JOB_ID}", f"run directory: {run_dir}"]
    sent = (fake_slurm / "script.sh").read_text()
    assert sent.rstrip("\n") == shown
    record = records.read_submission(run_dir)
    assert record["job_id"] == FAKE_JOB_ID and record["executor"] == "slurm" and record["tasks"] == 2
    assert record["resources"]["nodes"] == 2 and record["resources"]["tasks_per_node"] == 1
    assert Path(record["script"]).read_text() == sent
    assert isinstance(record["command"], str) and record["command"]  # how the process was started
    saved = (run_dir / "slurm" / "config.yaml").read_text()
    assert f"output_dir: {workdir / 'runs'}" in saved and "nodes: 2" in saved
    assert records.lookup_job(FAKE_JOB_ID) == run_dir
    assert {p.name for p in run_dir.iterdir()} == {"submission.json", "slurm", ".harness-run"}


def test_refused_submission_leaves_nothing(fake_slurm: Path, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (fake_slurm / "fail").touch()
    code, _, err = run_cli(["submit", "--account", "nope"], capsys)
    assert code == 2
    assert "not submitted" in err and "Invalid account" in err
    assert not (workdir / "runs" / "digits-cnn").exists()


# --------------------------------------------------------------------------- quoting


def test_hostile_values_stay_data_when_the_script_runs(fake_slurm: Path, workdir: Path, tmp_path: Path) -> None:
    """Run the generated script with bash (srun faked): nothing from the config executes."""
    options = SubmitOptions(
        overrides=[
            f"run.name={HOSTILE_NAME}",
            f"slurm.job_name={HOSTILE_NAME}",
            f"slurm.env={json.dumps(HOSTILE_ENV)}",
        ],
        flags={"account": "acct; touch pwned5"},
    )
    job_plan = plan(options)
    script = backends.batch_script(job_plan.folder, job_plan.params)
    calls = tmp_path / "srun-calls"
    bin_dir = tmp_path / "job-bin"
    bin_dir.mkdir()
    write_script(
        bin_dir / "srun",
        f'#!/bin/bash\nprintf "%s\\n" "$@" > "{calls}"\nprintf "%s" "$A|$B|$C" > "{calls}.env"\n',
    )
    (tmp_path / "job.sh").write_text(script)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["bash", str(tmp_path / "job.sh")], cwd=workdir, env=env, check=True)
    assert not list(workdir.glob("pwned*")) and not list(tmp_path.glob("pwned*"))
    argv = calls.read_text().splitlines()
    assert argv[-1] == str(job_plan.folder)  # the run directory reaches the job intact
    assert (tmp_path / "srun-calls.env").read_text() == "|".join(HOSTILE_ENV.values())
    sbatch = dict(
        line[len("#SBATCH --") :].split("=", 1)
        for line in script.splitlines()
        if "=" in line and line.startswith("#SBATCH")
    )
    assert shlex.split(sbatch["job-name"]) == [HOSTILE_NAME]  # sbatch unquotes #SBATCH values like a shell
    assert shlex.split(sbatch["account"]) == ["acct; touch pwned5"]


# --------------------------------------------------------------------------- the job function


class FakeTrain:
    """Stands in for harness.train.run.train: trains until asked to stop, then behaves as promised."""

    def __init__(self, outcome: str) -> None:
        self.outcome = outcome
        self.started = threading.Event()
        self.requests: list[Any] = []
        self.clusters: list[Any] = []

    def __call__(self, request: Any, stop_requested: Callable[[], bool] | None = None, cluster: Any = None) -> Path:
        self.requests.append(request)
        self.clusters.append(cluster)
        self.started.set()
        if self.outcome == "finish":
            return Path(request.run_dir)
        assert stop_requested is not None
        while not stop_requested():
            time.sleep(0.01)
        raise Preempted("stopped at step 7; checkpoint saved")


def saved_run(tmp_path: Path) -> Path:
    run_dir = tmp_path / "runs" / "job"
    (run_dir / "slurm").mkdir(parents=True)
    (run_dir / "slurm" / "config.yaml").write_text(f"run:\n  name: job\n  output_dir: {tmp_path / 'runs'}\n")
    return run_dir


@pytest.mark.parametrize(("restarts", "requeued"), [("0", True), ("2", True), ("3", False)])
def test_checkpoint_stops_training_and_requeues_until_the_limit(
    restarts: str, requeued: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import harness.train.run

    fake = FakeTrain("preempt")
    monkeypatch.setattr(harness.train.run, "train", fake)
    monkeypatch.setenv("SLURM_RESTART_COUNT", restarts)
    job = TrainJob(str(saved_run(tmp_path)), None, "harness submit", max_requeues=3, grace_s=1)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            job()
        except BaseException as err:
            errors.append(err)

    thread = threading.Thread(target=call)
    thread.start()
    assert fake.started.wait(30)
    again = job.checkpoint()
    thread.join(30)
    assert errors and isinstance(errors[0], Preempted)
    assert fake.requests[0].resume == "auto"
    assert fake.clusters[0] is job.context  # the task's context, read once, is what training gets
    if requeued:
        assert again is not None and isinstance(again.function, TrainJob)
        assert again.function.run_dir == job.run_dir and again.function is not job
    else:
        assert again is None


def test_no_requeue_once_training_finished(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import harness.train.run

    monkeypatch.setattr(harness.train.run, "train", FakeTrain("finish"))
    job = TrainJob(str(saved_run(tmp_path)), None, "", max_requeues=3, grace_s=1)
    assert job() == str(tmp_path / "runs" / "job")
    assert job.checkpoint() is None


SIGTERM_CASES = [
    # (rank, preempted, requeue raises, requeue called, printed)
    ("0", True, False, True, "the job was preempted: requeueing it after the checkpoint"),
    ("0", False, False, False, "received SIGTERM"),  # scancel: checkpoint only
    ("1", True, False, False, "received SIGTERM"),  # other ranks only stop; the chief requeues
    ("0", True, True, True, "could not requeue the job (CalledProcessError"),
]


@pytest.mark.parametrize(("rank", "preempted", "fails", "requeued", "printed"), SIGTERM_CASES)
def test_sigterm_stops_with_a_checkpoint_and_the_chief_requeues_a_preempted_job(
    rank: str,
    preempted: bool,
    fails: bool,
    requeued: bool,
    printed: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import signal
    import subprocess

    from harness.slurm import job as job_module

    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.setenv("SLURM_PROCID", rank)
    monkeypatch.setattr(job_module, "preempted", lambda environ: preempted)
    calls: list[int] = []

    def submitit_usr2(signum: int, frame: Any) -> None:
        calls.append(signum)
        if fails:
            raise subprocess.CalledProcessError(1, ["scontrol", "requeue", "7"])

    previous = signal.signal(signal.SIGUSR2, submitit_usr2)
    try:
        job = TrainJob("/nowhere", None, "", 3, 1)
        job._on_terminate(signal.SIGTERM, None)
        job._on_terminate(signal.SIGTERM, None)  # the second SIGTERM at the end of the grace time
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert job._stop.is_set()
    assert calls == ([signal.SIGUSR2] if requeued else [])
    out = capsys.readouterr().out
    assert printed in out and out.count("received SIGTERM") == 1


def test_job_pickles_without_its_threads(tmp_path: Path) -> None:
    import cloudpickle

    job = TrainJob(str(tmp_path), "cfg.yaml", "cmd", 3, 180)
    copy = cloudpickle.loads(cloudpickle.dumps(job))
    assert (copy.run_dir, copy.config_path, copy.max_requeues) == (str(tmp_path), "cfg.yaml", 3)
    assert not copy._stop.is_set()


def test_task_banner_names_the_node() -> None:
    banner = task_banner(
        detect({"SLURM_PROCID": "1", "SLURM_NTASKS": "2", "SLURMD_NODENAME": "n2", "SLURM_JOB_ID": "9"})
    )
    assert banner.startswith("harness: task 1 of 2 on node n2") and banner.endswith("job 9, requeue 0")


# --------------------------------------------------------------------------- status, logs, cancel


NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
SUBMITTED = "2026-01-01T11:00:00+00:00"


def fake_run(tmp_path: Path, **submission: Any) -> follow.Run:
    record = {"job_id": "7", "executor": "slurm", "submitted": SUBMITTED, "tasks": 2, "epochs": 10}
    return follow.Run(tmp_path, {**record, **submission})


STATUS_CASES: list[tuple[str, dict[str, Any], JobInfo | None, str | None, dict[str, Any], str]] = [
    ("queued", {}, JobInfo("7", "PENDING", "Resources"), None, {}, "pending"),
    ("started, no state yet", {}, JobInfo("7", "RUNNING"), None, {}, "starting"),
    ("training", {"state": "running", "epoch": 3, "epochs": 10}, JobInfo("7", "RUNNING"), None, {}, "running"),
    ("done", {"state": "completed"}, None, None, {}, "completed"),
    ("failed", {"state": "failed", "error": "TrainingError: nan"}, JobInfo("7", "FAILED"), None, {}, "failed"),
    ("killed while training", {"state": "running"}, JobInfo("7", "TIMEOUT"), None, {}, "failed"),
    ("gone while training", {"state": "running"}, None, None, {}, "failed"),
    ("scheduler unreachable", {"state": "running"}, None, "unavailable (x)", {}, "running"),
    ("requeued, waiting", {"state": "preempted"}, JobInfo("7", "PENDING", "BeginTime"), None, {}, "requeued"),
    ("requeued, running again", {"state": "preempted"}, JobInfo("7", "RUNNING"), None, {}, "running"),
    ("preempted for good", {"state": "preempted"}, JobInfo("7", "FAILED"), None, {}, "preempted"),
    ("cancelled", {"state": "running"}, JobInfo("7", "CANCELLED"), None, {"cancelled": SUBMITTED}, "cancelled"),
    ("never started", {}, None, None, {}, "failed"),
    ("interrupted by Ctrl-C", {"state": "interrupted"}, None, None, {}, "interrupted"),
    ("no scheduler, no state", {}, None, "unavailable (x)", {}, "unknown"),
]


@pytest.mark.parametrize(
    ("state", "job", "note", "submission", "expected"), [c[1:] for c in STATUS_CASES], ids=[c[0] for c in STATUS_CASES]
)
def test_status_combines_the_run_directory_and_the_scheduler(
    state: dict[str, Any],
    job: JobInfo | None,
    note: str | None,
    submission: dict[str, Any],
    expected: str,
    tmp_path: Path,
) -> None:
    found = follow.derive_status(fake_run(tmp_path, **submission), state, job, note, None, NOW)
    assert found.state == expected
    if expected == "failed":
        assert found.error
    text = follow.format_status(found)
    assert f"state:      {expected}" in text


def test_status_shows_progress_metrics_error_and_requeues(tmp_path: Path) -> None:
    state = {"state": "failed", "epoch": 3, "epochs": 10, "error": "TrainingError: loss became nan", "requeues": 1}
    state["updated"] = "2026-01-01T11:30:00+00:00"
    metrics = {"epoch": 3, "step": 30, "loss": 0.25, "accuracy": 0.9}
    found = follow.derive_status(fake_run(tmp_path), state, JobInfo("7", "FAILED", restarts=2), None, metrics, NOW)
    text = follow.format_status(found)
    assert "progress:   epoch 3/10" in text
    assert "error:      TrainingError: loss became nan" in text
    assert "requeues:   2" in text  # the scheduler's count when it knows more
    assert "last epoch: epoch 3: loss=0.2500 accuracy=0.9000" in text
    assert "elapsed:    30m 00s since submission" in text  # until the final update


def test_status_logs_and_cancel_through_the_cli(
    fake_slurm: Path, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(["submit", "data.dataset=wine", "run.name=w"], capsys)[0] == 0
    run_dir = workdir / "runs" / "w"
    (fake_slurm / "squeue").write_text("PENDING|Priority|0:00|\n")
    code, out, _ = run_cli(["status", FAKE_JOB_ID], capsys)  # found through the job index
    assert code == 0 and "state:      pending: waiting in the queue (Priority)" in out
    code, _, err = run_cli(["logs", str(run_dir)], capsys)
    assert code == 2 and "no log yet for rank 0" in err
    (run_dir / "slurm" / f"{FAKE_JOB_ID}_0_log.out").write_text("".join(f"line {i}\n" for i in range(10)))
    assert run_cli(["logs", str(run_dir), "--tail", "2"], capsys)[1] == "line 8\nline 9\n"
    code, _, err = run_cli(["logs", str(run_dir), "--rank", "1"], capsys)
    assert code == 2 and "--rank must be in [0, 1)" in err
    code, out, _ = run_cli(["cancel", str(run_dir)], capsys)
    assert code == 0 and f"cancelled job {FAKE_JOB_ID}" in out
    assert (fake_slurm / "scancel").read_text().split() == [FAKE_JOB_ID]
    assert "state:      cancelled" in run_cli(["status", str(run_dir)], capsys)[1]
    assert "already cancelled" in run_cli(["cancel", str(run_dir)], capsys)[1]


def test_a_cancelled_state_survives_the_cancelled_jobs_writes_but_not_a_new_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.train import rundir

    monkeypatch.setenv("SLURM_JOB_ID", "7")
    rundir.write_state(tmp_path, "running", starting=True, epoch=3)
    rundir.write_state(tmp_path, "cancelled", cancelled=SUBMITTED, job_id="7")  # `harness cancel 7`
    # a start that was already under way, epoch progress, the SIGTERM checkpoint, an error
    for late, starting in (("running", True), ("running", False), ("preempted", False), ("failed", False)):
        rundir.write_state(tmp_path, late, starting=starting, epoch=4)
        assert rundir.read_state(tmp_path)["state"] == "cancelled"
    monkeypatch.setenv("SLURM_JOB_ID", "8")  # resubmitted (or `harness train --resume`): a new start
    rundir.write_state(tmp_path, "running", starting=True)
    assert rundir.read_state(tmp_path) | {"updated": None} == rundir.read_state(tmp_path) | {
        "state": "running",
        "job_id": "8",
        "updated": None,
    }


def test_cancel_before_the_job_wrote_anything_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.train import rundir

    rundir.write_state(tmp_path, "cancelled", cancelled=SUBMITTED, job_id="7")
    assert rundir.read_state(tmp_path)["job_id"] == "7"
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    rundir.write_state(tmp_path, "running", starting=True)  # the cancelled job still started
    assert rundir.read_state(tmp_path)["state"] == "cancelled"


def test_cancel_still_reports_when_the_run_directory_cannot_be_written(
    fake_slurm: Path, workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run_cli(["submit", "data.dataset=wine", "run.name=ro"], capsys)[0] == 0

    def read_only(*args: Any, **kwargs: Any) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(records, "update_submission", read_only)
    code, out, err = run_cli(["cancel", str(workdir / "runs" / "ro")], capsys)
    assert code == 0, err
    assert f"cancelled job {FAKE_JOB_ID}, but could not record it" in out and "Permission denied" in out
    assert (fake_slurm / "scancel").read_text().split() == [FAKE_JOB_ID]


def test_status_of_unknown_targets_is_bad_input(
    fake_slurm: Path, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(["status", "123456"], capsys)
    assert code == 2 and "job 123456 is not in this user's submission index" in err
    (workdir / "plain").mkdir()
    code, _, err = run_cli(["status", str(workdir / "plain")], capsys)
    assert code == 2 and "has no submission.json" in err
    code, _, err = run_cli(["status", "not-a-run"], capsys)
    assert code == 2 and "neither a run directory nor a job id" in err


# --------------------------------------------------------------------------- the local executor


@pytest.mark.slow
def test_local_executor_runs_the_same_job_with_two_workers(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(workdir / "state"))
    args = [
        "submit",
        "data.dataset=wine",
        "model.name=mlp",
        "training.epochs=2",
        "training.progress=lines",
        "distribute.strategy=multiworker",
        "run.name=local",
        "--executor",
        "local",
        "--tasks-per-node",
        "2",
        "--time",
        "10",
    ]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    run_dir = workdir / "runs" / "local"
    state = wait_for_state(run_dir, ("completed", "failed"), timeout=300)
    assert state == "completed", follow.format_status(follow.status(str(run_dir)))
    job_id = records.read_submission(run_dir)["job_id"]
    digests = {rank: digest_in(run_dir / "slurm" / f"{job_id}_{rank}_log.out") for rank in (0, 1)}
    assert digests[0] and digests[0] == digests[1]
    assert (run_dir / "report.json").is_file()


@pytest.mark.slow
def test_cancel_stops_a_local_job_submitted_from_a_shell_that_ignores_ctrl_c(workdir: Path) -> None:
    """`nohup harness submit ... &` ignores SIGINT, the signal `harness cancel` stops a local job with."""
    args = ["data.dataset=wine", "model.name=mlp", "training.epochs=100000", "run.name=bg", "--executor", "local"]
    log = workdir / "submit.log"
    with log.open("w") as out:  # the local job keeps submit's output open: a pipe would not end
        submitted = subprocess.run(
            [sys.executable, "-m", "harness", "submit", *args],
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )
    assert submitted.returncode == 0, log.read_text()
    run_dir = workdir / "runs" / "bg"
    controller = int(records.read_submission(run_dir)["job_id"])  # the local job id is a process id
    wait_until(lambda: (run_dir / "metrics.jsonl").is_file(), 300, 0.5, "the local job's first epoch")
    cancel = subprocess.run([sys.executable, "-m", "harness", "cancel", str(run_dir)], cwd=workdir, capture_output=True)
    assert cancel.returncode == 0 and b"cancelled job" in cancel.stdout, cancel.stderr

    def controller_gone() -> bool:
        try:
            os.kill(controller, 0)
        except ProcessLookupError:
            return True
        return False

    try:
        wait_until(controller_gone, 60, 0.2, f"the cancelled local job (pid {controller}) to stop")
    finally:
        # a failed test leaves no training behind: the shell of the setup lines, its controller, the task
        children = follow.child_pids(controller)
        for pid in (*(g for c in children for g in follow.child_pids(c)), *children, controller):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert read_state(run_dir)["state"] == "cancelled"


def wait_for_state(run_dir: Path, wanted: tuple[str, ...], timeout: float) -> str:
    def reached() -> str | None:
        state = read_state(run_dir).get("state")
        return str(state) if state in wanted else None

    return wait_until(reached, timeout, 0.5, f"{run_dir} to reach state {' or '.join(wanted)}")


def digest_in(path: Path) -> str:
    def found() -> str | None:
        for line in path.read_text().splitlines() if path.is_file() else []:
            if "weights digest per local replica:" in line:
                return line.rsplit(":", 1)[1].strip()
        return None

    return wait_until(found, 30, 0.2, f"a weights digest in {path}")


def test_readme_documents_the_slurm_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    for needle in ("## Run on Slurm", "## Try it without a cluster", "harness submit", "--dry-run", "harness status"):
        assert needle in readme


# --------------------------------------------------------------------------- auto from measurements


def test_auto_is_resolved_from_the_default_partitions_measurement_into_the_job(
    fake_slurm: Path, workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every task reads the concrete strategy from the job's config: none decides `auto` on its own."""
    from harness.distribute import measured

    monkeypatch.setattr(resources, "horovod_importable", lambda: True)
    store = workdir / "store"
    monkeypatch.setenv("HARNESS_MEASUREMENTS", str(store))
    rates = {"single": 100.0, "multiworker": 50.0, "horovod": 70.0}
    measured.write_record(store, measured.Record("c1", "debug", measured.Machine("other CPU", 64),
                                                 measured.stack_versions(), 2, rates, "2026-12-01T10:00:00+00:00"))
    args = ["data.dataset=wine", "model.name=mlp", "run.name=wine", "--nodes", "2"]
    code, out, err = run_cli(["submit", *args], capsys)
    assert code == 0, err
    reason = "auto: horovod, 1.40x multiworker with 2 processes as harness validate measured on c1 on 2026-12-01"
    assert out.splitlines()[1] == f"strategy: horovod ({reason})"
    run_dir = workdir / "runs" / "wine"
    record = records.read_submission(run_dir)
    assert (record["strategy"], record["strategy_reason"], record["partition"]) == ("horovod", reason, "debug")
    assert "strategy: horovod" in (run_dir / "slurm" / "config.yaml").read_text()
    # another partition has no measurement: multiworker, and the plan says why
    code, out, _ = run_cli(["submit", *args, "--partition", "gpu", "--dry-run"], capsys)
    assert code == 0 and "strategy:      auto -> multiworker" in out
    assert "no measurement for partition gpu: harness validate --partition gpu measures it" in out
