"""The one rule for `distribute.strategy`: `auto` resolved, and a requested strategy checked.

The same function decides for `harness train --workers N`, the Slurm planner and the strategy
factory in every rank; these tables pin it down, and the wiring tests check that each caller
goes through it (and that a training process reads its job context once).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness import cli
from harness.config import DistributeConfig
from harness.distribute import choice
from harness.distribute.choice import resolve_strategy
from harness.errors import ConfigError
from harness.slurm import resources

# (requested, processes, GPUs per process, launcher, resolved)
RESOLVED = [
    ("auto", 1, 0, "single", "single"),
    ("auto", 1, 1, "single", "single"),
    ("auto", 1, 4, "single", "mirrored"),
    ("auto", 1, 4, "slurm", "mirrored"),  # one Slurm task on a node with 4 GPUs
    ("auto", 4, 1, "slurm", "multiworker"),
    ("auto", 2, 0, "launcher", "multiworker"),
    ("auto", 2, 0, "tf_config", "multiworker"),
    ("auto", 8, 1, "horovod", "horovod"),  # horovodrun/mpirun: tf.distribute would not know the hosts
    ("single", 1, 4, "single", "single"),
    ("mirrored", 1, 4, "single", "mirrored"),
    ("mirrored", 1, 0, "slurm", "mirrored"),
    ("multiworker", 1, 0, "single", "multiworker"),
    ("multiworker", 4, 1, "horovod", "multiworker"),
    ("horovod", 1, 0, "single", "horovod"),
    ("horovod", 4, 1, "slurm", "horovod"),
    ("horovod", 2, 0, "launcher", "horovod"),
    ("horovod", 2, 0, "horovod", "horovod"),
]


@pytest.mark.parametrize(("requested", "processes", "gpus", "launcher", "resolved"), RESOLVED)
def test_resolve_strategy(requested: str, processes: int, gpus: int, launcher: str, resolved: str) -> None:
    found = resolve_strategy(requested, processes=processes, gpus=gpus, launcher=launcher, horovod_installed=True)
    assert found == resolved


# (requested, processes, launcher, Horovod installed, words in the message, allowed instead)
REFUSED = [
    ("single", 2, "launcher", True, "single runs one process", "auto, multiworker, horovod"),
    ("single", 4, "slurm", True, "this job has 4 processes (Slurm tasks)", "auto, multiworker, horovod"),
    ("mirrored", 2, "slurm", True, "mirrored runs one process per node", "auto, multiworker, horovod"),
    ("mirrored", 3, "tf_config", True, "3 processes (TF_CONFIG)", "auto, multiworker"),
    ("horovod", 2, "tf_config", True, "horovod needs ranks from horovodrun", "auto, multiworker"),
    ("horovod", 1, "single", False, "Horovod, which is not installed", "auto, single, mirrored, multiworker"),
    ("horovod", 2, "launcher", False, "scripts/install_horovod.sh", "auto, multiworker"),
    ("mirored", 1, "single", True, "Did you mean 'mirrored'?", "auto, single, mirrored, multiworker, horovod"),
]


@pytest.mark.parametrize(("requested", "processes", "launcher", "horovod", "words", "allowed"), REFUSED)
def test_a_strategy_that_cannot_run_is_a_config_error(
    requested: str, processes: int, launcher: str, horovod: bool, words: str, allowed: str
) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_strategy(requested, processes=processes, gpus=0, launcher=launcher, horovod_installed=horovod)
    message = str(err.value)
    assert f"distribute.strategy={requested!r}" in message  # the key and the value
    assert words in message
    assert message.endswith(allowed)  # what would run instead


def test_the_planner_does_not_ask_whether_horovod_is_installed_here() -> None:
    """The job runs on the cluster's nodes, not where `harness submit` runs."""
    assert resolve_strategy("horovod", processes=8, gpus=4, launcher="slurm") == "horovod"


@pytest.mark.parametrize(("tasks", "gpus"), [(8, 4), (1, 4), (1, 0), (2, 0), (1, 1)])
@pytest.mark.parametrize("executor", ["slurm", "local"])
def test_the_slurm_planner_resolves_auto_by_the_same_rule(tasks: int, gpus: int, executor: str) -> None:
    launcher = "launcher" if executor == "local" else "slurm"
    same = resolve_strategy("auto", processes=tasks, gpus=gpus, launcher=launcher)
    assert resources.effective_strategy("auto", tasks, gpus, executor) == same


@pytest.mark.parametrize("strategy", choice.STRATEGY_NAMES)
@pytest.mark.parametrize("gpus", [0, 1, 4])
def test_auto_plans_the_tasks_it_then_resolves_to_multiworker_with(strategy: str, gpus: int) -> None:
    """`auto` asks for as many tasks per node as multiworker does, so inside the job it is multiworker."""
    tasks = resources.default_tasks_per_node(strategy, gpus)
    if strategy == "auto":
        assert tasks == resources.default_tasks_per_node("multiworker", gpus)
        assert resources.effective_strategy("auto", tasks * 2, gpus) == "multiworker"


@pytest.mark.parametrize(
    ("strategy", "controller", "launched"),
    [("auto", "gloo", "multiworker"), ("multiworker", "gloo", "multiworker"), ("horovod", "mpi", "horovod")],
)
def test_workers_flag_resolves_through_the_rule(
    strategy: str, controller: str, launched: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.distribute import launcher

    seen: list[Any] = []
    monkeypatch.setattr(launcher, "launch", lambda *args: seen.append(args) or 0)
    monkeypatch.setattr(choice, "horovod_importable", lambda: True)
    cfg = DistributeConfig(strategy=strategy, horovod_controller=controller, huge_pages=False)
    assert cli.launch_workers(["train"], 3, cfg) == 0
    # `auto` is decided once here: every worker receives the concrete strategy
    args = ["train", f"distribute.strategy={launched}"] if strategy == "auto" else ["train"]
    assert seen == [(args, 3, launched, controller, True, False)]  # pin_workers, huge_pages


@pytest.mark.parametrize("strategy", ["single", "mirrored"])
def test_workers_flag_refuses_one_process_strategies(strategy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.distribute import launcher

    monkeypatch.setattr(launcher, "launch", lambda *args: pytest.fail("no worker may start"))
    with pytest.raises(ConfigError, match=f"distribute.strategy='{strategy}' cannot run in this job"):
        cli.launch_workers(["train"], 2, DistributeConfig(strategy=strategy))


def test_workers_flag_refuses_horovod_when_it_is_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.distribute import launcher

    monkeypatch.setattr(launcher, "launch", lambda *args: pytest.fail("no worker may start"))
    monkeypatch.setattr(choice, "horovod_importable", lambda: False)
    with pytest.raises(ConfigError, match="install_horovod.sh"):
        cli.launch_workers(["train"], 2, DistributeConfig(strategy="horovod"))


def test_the_strategy_factory_resolves_through_the_rule() -> None:
    from harness.distribute.cluster import detect, launcher_env
    from harness.distribute.strategy import make_strategy

    strategy = make_strategy(DistributeConfig(strategy="auto"), {})
    assert (strategy.name, strategy.picked_by_auto) == ("single", True)
    two_workers = detect(launcher_env(1, 2, 29500))
    with pytest.raises(ConfigError, match="single runs one process, but this job has 2 processes"):
        make_strategy(DistributeConfig(strategy="single"), cluster=two_workers)
    with pytest.raises(ConfigError, match="mirrored runs one process per node"):
        make_strategy(DistributeConfig(strategy="mirrored"), cluster=two_workers)


def test_a_training_process_reads_its_job_context_once(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every reading of the job's environment (`detect`, `job_of`) ends in `_with_job`: a whole
    training run, state.json writes included, must do it once."""
    from harness.config import load_config
    from harness.distribute.cluster import environments
    from harness.train.run import RunRequest, train

    calls: list[int] = []
    read = environments._with_job

    def counted(ranks: Any, env: Any) -> Any:
        calls.append(1)
        return read(ranks, env)

    monkeypatch.setattr(environments, "_with_job", counted)
    config = load_config(None, ["data.dataset=iris", "model.name=mlp", "training.epochs=2", "training.progress=none"])
    run_dir = train(RunRequest(config))
    assert (run_dir / "state.json").is_file()
    assert len(calls) == 1
