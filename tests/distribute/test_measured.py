"""`auto` between multiworker and Horovod from what `harness validate` measured.

The decision table pins the pure rule; the store tests its files (atomic, one per node, a damaged
one warned about and ignored); the callers' tests check that the launcher and the Slurm planner
hand the concrete strategy to the job, and two real two-process runs check it end to end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness import cli
from harness.config import DistributeConfig, SlurmConfig
from harness.distribute import choice, measured
from harness.distribute.measured import MARGIN, Choice, Machine, Record, auto_choice
from harness.errors import UserInputError
from harness.slurm import resources
from tests.conftest import THREADS, needs_horovod

HERE = Machine("AMD EPYC 7B13", 2)
OTHER = Machine("Intel(R) Xeon(R) CPU @ 2.20GHz", 2)
STACK = {"tensorflow": "2.21.0", "horovod": "0.28.1"}


def record(
    ratio: float | None,
    node: str = "n1",
    machine: Machine = HERE,
    versions: dict[str, str | None] | None = None,
    partition: str | None = None,
    processes: int = 2,
    day: str = "2026-12-01",
) -> Record:
    """A node's measurement with horovod at `ratio` x multiworker (None: Horovod did not run)."""
    rates = {"single": 100.0, "multiworker": 60.0}
    if ratio is not None:
        rates["horovod"] = 60.0 * ratio
    return Record(node, partition, machine, versions or STACK, processes, rates, f"{day}T10:00:00+00:00")


def decide(records: list[Record], installed: bool = True, **kw: Any) -> Choice:
    where = kw.pop("where", {"machine": HERE})
    return auto_choice(records, processes=kw.pop("processes", 2), versions=kw.pop("versions", STACK),
                       horovod_installed=installed, **where)


# --- the decision table ------------------------------------------------------------------------


def test_without_a_measurement_auto_is_multiworker_and_says_how_to_measure() -> None:
    found = decide([])
    assert found == Choice(
        "multiworker", "auto: multiworker (no measurement for this machine: harness validate measures it)"
    )


def test_horovod_clearly_faster_is_picked_and_the_reason_names_the_measurement() -> None:
    found = decide([record(1.31)])
    assert found.strategy == "horovod"
    assert found.reason == (
        "auto: horovod, 1.31x multiworker with 2 processes as harness validate measured on n1 on 2026-12-01"
    )


@pytest.mark.parametrize(("ratio", "words"), [(1.05, "horovod only 1.05x its rate (under the 1.10x margin)"),
                                              (0.5, "auto: multiworker, 2.00x horovod")])
def test_a_lead_within_the_noise_margin_keeps_multiworker(ratio: float, words: str) -> None:
    found = decide([record(ratio)])
    assert found.strategy == "multiworker" and words in found.reason and "on n1 on 2026-12-01" in found.reason


def test_the_margin_is_inclusive() -> None:
    assert decide([record(MARGIN)]).strategy == "horovod"
    assert decide([record(MARGIN - 0.001)]).strategy == "multiworker"


def test_a_measurement_with_another_tensorflow_is_ignored_and_the_reason_says_so() -> None:
    stale = record(1.5, versions={"tensorflow": "2.20.0", "horovod": "0.28.1"})
    found = decide([stale])
    assert found.strategy == "multiworker"
    assert "1 measurement(s) for this machine ignored" in found.reason
    assert "TensorFlow 2.20.0" in found.reason and "TensorFlow 2.21.0" in found.reason
    # a current record next to the stale one decides
    assert decide([stale, record(0.8, node="n2")]).reason.endswith("on n2 on 2026-12-01")


def test_another_horovod_version_is_stale_too() -> None:
    assert decide([record(1.5, versions={"tensorflow": "2.21.0", "horovod": "0.28.0"})]).strategy == "multiworker"


def test_a_measurement_of_another_machine_is_ignored() -> None:
    found = decide([record(1.5, machine=OTHER), record(1.5, machine=Machine("AMD EPYC 7B13", 64))])
    assert found.strategy == "multiworker" and "no measurement for this machine" in found.reason


def test_horovod_not_installed_keeps_multiworker_with_a_note() -> None:
    found = decide([record(1.5)], installed=False)
    assert found.strategy == "multiworker"
    assert "horovod was 1.50x multiworker" in found.reason and "Horovod is not installed here" in found.reason


def test_a_record_without_a_horovod_rate_cannot_pick_it() -> None:
    found = decide([record(None)])
    assert found.strategy == "multiworker" and "Horovod did not run" in found.reason


def test_the_planner_matches_records_by_partition() -> None:
    records = [record(1.4, node="c1", partition="cpu", machine=OTHER), record(0.7, node="g1", partition="gpu")]
    cpu = decide(records, where={"partition": "cpu"})
    assert cpu.strategy == "horovod" and "on c1" in cpu.reason  # the machine does not matter then
    assert decide(records, where={"partition": "gpu"}).strategy == "multiworker"
    other = decide(records, where={"partition": "big"})
    assert other.reason == (
        "auto: multiworker (no measurement for partition big: harness validate --partition big measures it)"
    )


def test_several_nodes_decide_by_the_median_ratio() -> None:
    nodes = [record(r, node=f"n{i}") for i, r in enumerate([1.0, 1.3, 1.25, 1.2, 0.9])]
    found = decide(nodes)
    assert found.strategy == "horovod"
    assert found.reason.startswith("auto: horovod, 1.20x multiworker with 2 processes (median of 5 nodes: n0, n1")
    assert decide(nodes[:2] + [record(1.0, node="n9")]).strategy == "multiworker"  # median 1.0


def test_records_with_the_same_process_count_win() -> None:
    records = [record(1.5, node="a", processes=2), record(0.8, node="b", processes=4)]
    assert decide(records, processes=4).strategy == "multiworker"
    assert decide(records, processes=2).strategy == "horovod"
    other = decide(records, processes=8)  # none with 8: every record counts, the median of 1.5 and 0.8
    assert other.reason.startswith("auto: horovod, 1.15x multiworker with 2/4 processes (median of 2 nodes: a, b)")


# --- the store ---------------------------------------------------------------------------------


def test_a_record_survives_the_store_and_replaces_the_nodes_earlier_one(tmp_path: Path) -> None:
    first = record(1.2, node="gpu-a/07", partition="gpu")
    path = measured.write_record(tmp_path, first)
    assert path == tmp_path / "gpu-a_07.json"
    saved = json.loads(path.read_text())
    assert saved["schema_version"] == measured.SCHEMA_VERSION
    assert set(saved) >= {"node", "partition", "machine", "versions", "processes", "rates", "measured_at",
                          "measured_by"}
    newer = record(0.9, node="gpu-a/07", partition="gpu", day="2026-12-02")
    measured.write_record(tmp_path, newer)
    records, warnings = measured.read_records(tmp_path)
    assert warnings == [] and records == [newer]
    assert [p.name for p in tmp_path.iterdir()] == ["gpu-a_07.json"]  # one file per node, no temporary left


@pytest.mark.parametrize("text", ["{not json", '["a list"]', '{"schema_version": 99}',
                                  '{"schema_version": 1, "node": "n1"}', "\xff\xfe"])
def test_a_damaged_record_is_warned_about_once_and_ignored(tmp_path: Path, text: str) -> None:
    measured.write_record(tmp_path, record(1.5, node="good"))
    (tmp_path / "bad.json").write_bytes(text.encode("utf-8", errors="surrogateescape"))
    records, warnings = measured.read_records(tmp_path)
    assert [r.node for r in records] == ["good"]
    assert len(warnings) == 1 and str(tmp_path / "bad.json") in warnings[0] and "\n" not in warnings[0]


def test_the_store_folder_comes_from_the_environment(tmp_path: Path) -> None:
    assert measured.store_folder({"HARNESS_MEASUREMENTS": str(tmp_path / "m")}) == tmp_path / "m"
    cache = {"XDG_CACHE_HOME": str(tmp_path / "c"), "HOME": "/nowhere"}
    assert measured.store_folder(cache) == tmp_path / "c" / "harness" / "measurements"
    assert measured.store_folder({"HOME": str(tmp_path)}) == tmp_path / ".cache" / "harness" / "measurements"
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserInputError, match="HARNESS_MEASUREMENTS=.*file: .* is not a folder"):
        measured.store_folder({"HARNESS_MEASUREMENTS": str(tmp_path / "file")})


def test_versions_are_read_without_importing_horovod() -> None:
    code = ("import sys; from harness.distribute import measured; v = measured.stack_versions(); "
            "print(v['tensorflow'] is not None, 'horovod' in sys.modules, 'tensorflow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "False", "False"]


# --- the rule and its callers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("launcher", "installed", "prefer", "resolved"),
    [
        ("launcher", True, "horovod", "horovod"),
        ("slurm", None, "horovod", "horovod"),  # the planner: Horovod is checked where the job runs
        ("launcher", False, "horovod", "multiworker"),
        ("tf_config", True, "horovod", "multiworker"),  # TF_CONFIG gives Horovod no ranks
        ("launcher", True, "multiworker", "multiworker"),
        ("horovod", True, "multiworker", "horovod"),  # horovodrun: only Horovod knows the ranks
    ],
)
def test_the_rule_takes_the_measured_preference_where_it_can_run(
    launcher: str, installed: bool | None, prefer: str, resolved: str
) -> None:
    found = choice.resolve_strategy("auto", processes=2, gpus=0, launcher=launcher, horovod_installed=installed,
                                    prefer=prefer)
    assert found == resolved
    one = choice.resolve_strategy("auto", processes=1, gpus=0, launcher="single", prefer="horovod")
    assert one == "single"  # one process: nothing to prefer
    named = choice.resolve_strategy("multiworker", processes=2, gpus=0, launcher="launcher", prefer="horovod")
    assert named == "multiworker"  # an explicit strategy always wins


def test_a_rank_left_with_a_bare_auto_says_it_has_no_measurement() -> None:
    assert "harness train --workers and harness submit pick" in choice.auto_note("auto", 2, "slurm")
    assert choice.auto_note("auto", 1, "single") == choice.auto_note("horovod", 2, "slurm") == ""
    assert choice.auto_note("auto", 4, "horovod") == ""  # under horovodrun Horovod is the one that works


def store_here(folder: Path, ratio: float, partition: str | None = None) -> None:
    versions = measured.stack_versions()
    measured.write_record(folder, record(ratio, machine=measured.this_machine(), versions=versions,
                                         partition=partition))


def test_the_launcher_hands_every_worker_the_measured_strategy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from harness.distribute import launcher

    monkeypatch.setenv("HARNESS_MEASUREMENTS", str(tmp_path))
    monkeypatch.setattr(choice, "horovod_importable", lambda: True)
    store_here(tmp_path, 1.4)
    seen: list[Any] = []
    monkeypatch.setattr(launcher, "launch", lambda *args: seen.append(args) or 0)
    assert cli.launch_workers(["train", "a=1"], 2, DistributeConfig(strategy="auto")) == 0
    assert seen == [(["train", "a=1", "distribute.strategy=horovod"], 2, "horovod", "gloo", True, True)]
    out = capsys.readouterr().out
    assert out.startswith("harness: auto: horovod, 1.40x multiworker with 2 processes as harness validate measured")
    # an explicit strategy is left as it is, and no store is read for it
    (tmp_path / "broken.json").write_text("{")
    seen.clear()
    assert cli.launch_workers(["train"], 2, DistributeConfig(strategy="multiworker")) == 0
    assert seen == [(["train"], 2, "multiworker", "gloo", True, True)]
    assert capsys.readouterr().err == ""


def test_auto_measured_horovod_over_mpi_starts_horovodrun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.distribute import launcher

    monkeypatch.setenv("HARNESS_MEASUREMENTS", str(tmp_path))
    monkeypatch.setattr(choice, "horovod_importable", lambda: True)
    store_here(tmp_path, 1.4)
    seen: list[Any] = []
    monkeypatch.setattr(launcher, "run_workers", lambda commands, **_: seen.append(commands) or 0)
    monkeypatch.setattr(launcher, "horovodrun_command", lambda child, n, c: ["horovodrun", *child])
    assert cli.launch_workers(["train"], 2, DistributeConfig(strategy="auto", horovod_controller="mpi")) == 0
    [[(command, _)]] = seen
    assert command[0] == "horovodrun" and command[-1] == "distribute.strategy=horovod"


def test_the_slurm_planner_resolves_auto_from_the_partitions_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(choice, "horovod_importable", lambda: True)
    monkeypatch.setattr(resources, "horovod_importable", lambda: True)
    environ = {"HARNESS_MEASUREMENTS": str(tmp_path)}
    store_here(tmp_path, 1.5, partition="cpu")
    slurm = SlurmConfig(nodes=2, tasks_per_node=1)
    found, warnings = resources.measured_choice("auto", slurm, "cpu", environ)
    assert found is not None and found.strategy == "horovod" and warnings == []
    assert resources.effective_strategy("auto", 2, 0, "slurm", found.strategy) == "horovod"
    other, _ = resources.measured_choice("auto", slurm, "gpu", environ)
    assert other is not None and other.strategy == "multiworker" and "partition gpu" in other.reason
    unknown, _ = resources.measured_choice("auto", slurm, None, environ)
    assert unknown is not None and "partition is not known" in unknown.reason
    assert resources.measured_choice("multiworker", slurm, "cpu", environ) == (None, [])
    assert resources.measured_choice("auto", SlurmConfig(), "cpu", environ) == (None, [])  # one task


def test_submit_writes_the_concrete_strategy_into_the_job_config(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.slurm import submit
    from harness.slurm.scheduler import Partition

    monkeypatch.setattr(resources, "horovod_importable", lambda: True)
    monkeypatch.setenv("HARNESS_MEASUREMENTS", str(workdir / "store"))
    store_here(workdir / "store", 1.5, partition="cpu")
    options = submit.SubmitOptions(overrides=["data.dataset=iris", "model.name=mlp"], flags={"nodes": 2})
    partitions = [Partition("cpu", 2, True, "up", None, None)]  # the cluster's default partition
    plan = submit.plan(options, lambda: partitions, dry_run=True)
    assert plan.strategy == "horovod" and plan.config.distribute.strategy == "horovod"
    assert plan.strategy_reason.startswith("auto: horovod, 1.50x multiworker")
    text = submit.render_dry_run(plan)
    assert "strategy:      auto -> horovod" in text and "note:          auto: horovod, 1.50x" in text
    assert submit.submission_record(plan, "1", None, "harness submit")["strategy_reason"] == plan.strategy_reason


def test_doctor_says_what_auto_picks_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.commands import doctor

    monkeypatch.setenv("HARNESS_MEASUREMENTS", str(tmp_path))
    monkeypatch.setattr(choice, "horovod_importable", lambda: True)
    row = doctor.check_auto_strategy()
    assert row.status == "ok" and "for 2 processes, auto: multiworker (no measurement for this machine" in row.detail
    store_here(tmp_path, 1.3)
    (tmp_path / "x.json").write_text("[]")
    row = doctor.check_auto_strategy()
    assert row.status == "warning" and "auto: horovod, 1.30x multiworker" in row.detail
    assert f"{tmp_path / 'x.json'} ignored" in row.detail


# --- real two-process runs ---------------------------------------------------------------------

RUN = ["data.dataset=wine", "model.name=mlp", "model.hidden_units=[8]", "training.epochs=1",
       "training.progress=none", "report.html=false", "report.plots=false", "distribute.timeout_s=60"]


@needs_horovod
@pytest.mark.parametrize(("ratio", "strategy"), [(1.5, "horovod"), (0.7, "multiworker")])
def test_two_workers_run_what_was_measured_faster_here(tmp_path: Path, ratio: float, strategy: str) -> None:
    store = tmp_path / "store"
    store_here(store, ratio)
    env = {**os.environ, **THREADS, "HARNESS_MEASUREMENTS": str(store)}
    done = subprocess.run([sys.executable, "-m", "harness", "train", *RUN, "run.name=m", "--workers", "2"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.startswith(f"harness: auto: {strategy}, ")
    assert "as harness validate measured on n1 on 2026-12-01" in done.stdout.splitlines()[0]
    report = json.loads((tmp_path / "runs" / "m" / "report.json").read_text())
    assert report["training"]["strategy"] == strategy and report["training"]["replicas"] == 2


def test_the_strategy_factory_keeps_the_constant_rule_for_a_bare_auto_and_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A rank resolving `auto` itself (the user's own srun) never reads the store: ranks could disagree."""
    from harness.distribute import strategy as strategies
    from harness.distribute.cluster import detect, launcher_env

    class Fake(strategies.Strategy):  # type: ignore[misc]
        def __init__(self, cfg: DistributeConfig, cluster: Any) -> None:
            self.name, self.cluster = "multiworker", cluster

    monkeypatch.setattr(strategies.STRATEGIES, "get", lambda name: Fake if name == "multiworker" else None)
    monkeypatch.setattr(Fake, "__abstractmethods__", frozenset())
    monkeypatch.setattr(measured, "read_records", lambda folder: pytest.fail("a rank read the store"))
    two = detect(launcher_env(1, 2, 29500))
    made = strategies.make_strategy(DistributeConfig(strategy="auto"), cluster=two)
    assert made.picked_by_auto and made.auto_note == choice.UNMEASURED
    named = strategies.make_strategy(DistributeConfig(strategy="multiworker"), cluster=two)
    assert not named.picked_by_auto and named.auto_note == ""
