"""Sweeps: the spec's checks, samplers on a synthetic objective, and local sweeps end to end."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import keras
import optuna
import pytest
import yaml

from harness import cli
from harness.sweep import ledger, space
from harness.sweep.spec import load_spec
from harness.sweep.status import format_status, read_status
from harness.sweep.sweepdir import SweepDir
from tests.conftest import ROOT

BASE = {
    "run": {"seed": 1},
    "data": {"dataset": "iris"},
    "model": {"name": "mlp", "hidden_units": [16]},
    "training": {"epochs": 2, "batch_size": 16, "progress": "none"},
    "report": {"html": False, "plots": False},
}
POLL_S = 0.05


def write_spec(folder: Path, **fields: Any) -> Path:
    spec: dict[str, Any] = {
        "name": "s",
        "base": BASE,
        "parameters": {"training.optimizer.learning_rate": {"loguniform": [0.01, 0.1]}},
        "objective": {"metric": "val_accuracy", "direction": "max"},
        "budget": {"trials": 2},
        "parallelism": 1,
    }
    spec.update(fields)
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def sweep(*args: str) -> int:
    return cli.main(["sweep", *args])


# ---- the spec ------------------------------------------------------------------------------


def test_spec_loads_with_base_file_and_slurm_section(workdir: Path) -> None:
    (workdir / "base.yaml").write_text(yaml.safe_dump(BASE))
    path = write_spec(workdir, base="base.yaml", slurm={"time_minutes": 5})
    spec = load_spec(path)
    assert spec.base.slurm.time_minutes == 5 and spec.task == "classification"
    assert spec.sampler_name == "tpe" and spec.sweep_dir == Path("sweeps/s")
    config = spec.trial_config({"training.optimizer.learning_rate": 0.05}, workdir / "t", "0007")
    assert config.training.optimizer.learning_rate == 0.05 and config.run.name == "0007"


def test_all_grid_parameters_pick_the_grid_sampler(workdir: Path) -> None:
    params = {"model.hidden_units": {"grid": [[8], [16, 8]]}, "training.batch_size": {"grid": [8, 16]}}
    spec = load_spec(write_spec(workdir, parameters=params, budget={"trials": 4}))
    assert spec.sampler_name == "grid" and spec.grid_size() == 4


def test_choice_of_lists_round_trips_through_optuna(workdir: Path) -> None:
    params = {"model.hidden_units": {"choice": [[8], [16, 8]]}}
    spec = load_spec(write_spec(workdir, parameters=params))
    study = optuna.create_study(sampler=space.make_sampler(spec))
    drawn = space.suggest(study.ask(), spec)
    assert drawn["model.hidden_units"] in ([8], [16, 8])


def test_unknown_sampler_option_is_named(workdir: Path) -> None:
    spec = load_spec(write_spec(workdir, sampler={"name": "tpe", "options": {"n_startup": 3}}))
    with pytest.raises(Exception, match="n_startup.*Accepted: .*n_startup_trials"):
        space.make_sampler(spec)


def test_numbers_written_like_1e_4_are_numbers(workdir: Path) -> None:
    path = workdir / "spec.yaml"
    write_spec(workdir)
    path.write_text(path.read_text().replace("- 0.01\n    - 0.1\n", "- 1e-4\n    - 1e-1\n"))
    assert "1e-4" in path.read_text(), "YAML 1.1 reads 1e-4 (no dot) as a string"
    assert load_spec(path).parameters[0].values == (1e-4, 1e-1)


def new_sweep(workdir: Path, **fields: Any) -> tuple[SweepDir, Any]:
    """A created sweep (spec and journal) whose trials are claimed by hand, as workers claim them."""
    from harness.sweep.launch import normalized
    from harness.sweep.study import create_study
    from harness.sweep.sweepdir import new_sweep_dir

    spec = load_spec(write_spec(workdir, **fields))
    path = spec.sweep_dir.absolute()
    with new_sweep_dir(path, overwrite=False) as staging:
        staging.spec.write_text(yaml.safe_dump(normalized(spec, path), sort_keys=False))
        create_study(staging, load_spec(staging.spec))
    sweep_dir = SweepDir(path)
    return sweep_dir, load_spec(sweep_dir.spec)


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_seeded_workers_and_resumes_draw_new_values(workdir: Path, sampler: str) -> None:
    from harness.sweep.study import claim, load_study, tell

    params = {"training.optimizer.learning_rate": {"loguniform": [1e-4, 1e-1]}, "model.dropout": {"uniform": [0, 0.5]}}
    sweep_dir, spec = new_sweep(workdir, parameters=params, budget={"trials": 4}, sampler={"name": sampler, "seed": 1})
    first, second = load_study(sweep_dir, spec), load_study(sweep_dir, spec)  # two workers, the same seed
    drawn = []
    for worker, study in (("a", first), ("b", second)):
        claimed = claim(sweep_dir, spec, study, worker, None)
        assert claimed is not None
        drawn.append(claimed.record.params)
        tell(study, claimed.trial.number, 0.5)
    later = claim(sweep_dir, spec, load_study(sweep_dir, spec), "c", None)  # a worker after `sweep resume`
    assert later is not None
    drawn.append(later.record.params)
    assert len({json.dumps(p, sort_keys=True) for p in drawn}) == 3, drawn
    # the same seed still repeats the same sweep: trial N draws what trial N drew before
    again, spec_again = new_sweep(workdir, name="again", parameters=params, sampler={"name": sampler, "seed": 1})
    replay = claim(again, spec_again, load_study(again, spec_again), "d", None)
    assert replay is not None and replay.record.params == drawn[0]


def test_a_trial_drawn_in_part_is_failed_not_run_with_the_base_values(workdir: Path) -> None:
    from harness.sweep.study import load_study, reconcile

    sweep_dir, spec = new_sweep(workdir)
    study = load_study(sweep_dir, spec)
    orphan = study.ask()  # a worker killed between asking Optuna and drawing the values
    assert reconcile(sweep_dir, spec, study) == []
    assert ledger.read(sweep_dir, orphan.number) is None, "no trial with no parameters to run"
    assert load_study(sweep_dir, spec).trials[orphan.number].state == optuna.trial.TrialState.FAIL


def test_status_names_a_damaged_ledger_file(workdir: Path) -> None:
    from harness.sweep.study import claim, load_study

    sweep_dir, spec = new_sweep(workdir)
    assert claim(sweep_dir, spec, load_study(sweep_dir, spec), "a", None) is not None
    (sweep_dir.ledger / "0001.json").write_text('{"trial": 1, "par')
    status = format_status(read_status(sweep_dir.path))
    assert "1 of 2 trials" in status
    assert f"warning: {sweep_dir.ledger / '0001.json'} (JSONDecodeError) cannot be read" in status, status


# ---- samplers on a synthetic objective (no training) ---------------------------------------


def synthetic(params: dict[str, float]) -> float:
    """Smallest at learning_rate 10^-2.5 and dropout 0.3."""
    import math

    return (math.log10(params["training.optimizer.learning_rate"]) + 2.5) ** 2 + (params["model.dropout"] - 0.3) ** 2


def best_after(workdir: Path, sampler: str, seed: int, trials: int) -> float:
    params = {
        "training.optimizer.learning_rate": {"loguniform": [1e-5, 1e-1]},
        "model.dropout": {"uniform": [0.0, 0.9]},
    }
    spec = load_spec(write_spec(workdir, parameters=params, sampler={"name": sampler, "seed": seed}))
    study = optuna.create_study(sampler=space.make_sampler(spec), direction="minimize")
    for _ in range(trials):
        trial = study.ask()
        study.tell(trial, synthetic(space.suggest(trial, spec)))
    return float(study.best_value)


def test_tpe_beats_random_on_a_synthetic_objective(workdir: Path) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seeds = range(5)
    tpe = [best_after(workdir, "tpe", seed, 40) for seed in seeds]
    random = [best_after(workdir, "random", seed, 40) for seed in seeds]
    assert statistics.median(tpe) < statistics.median(random), (tpe, random)


# ---- local sweeps end to end ---------------------------------------------------------------


def records(path: Path) -> list[ledger.TrialRecord]:
    return ledger.read_all(SweepDir(path))


def test_local_sweep_runs_the_budget_with_parallel_workers(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params = {
        "training.optimizer.learning_rate": {"loguniform": [0.01, 0.1]},
        "model.hidden_units": {"choice": [[8], [16, 8]]},
    }
    path = write_spec(workdir, parameters=params, budget={"trials": 4}, parallelism=2)
    assert sweep(str(path), "--executor", "local") == 0
    out = capsys.readouterr().out
    found = records(workdir / "sweeps/s")
    assert [r.trial for r in found] == [0, 1, 2, 3] and {r.state for r in found} == {"completed"}
    assert len({json.dumps(r.params, sort_keys=True) for r in found}) == 4
    assert len({r.worker for r in found}) == 2, "two workers shared the trials"
    for record in found:
        run_dir = workdir / "sweeps/s/trials" / f"{record.trial:04d}"
        assert json.loads((run_dir / "state.json").read_text())["state"] == "completed"
        assert (run_dir / "report.json").is_file() and record.epochs == 2
    assert "4 of 4 trials (4 completed)" in out
    assert sweep("status", str(workdir / "sweeps/s")) == 0
    assert "best: trial" in capsys.readouterr().out
    assert cli.main(["report", str(workdir / "sweeps/s")]) == 0
    board = json.loads((workdir / "sweeps/s/report/leaderboard.json").read_text())
    assert [row["rank"] for row in board["trials"]] == [1, 2, 3, 4] and board["best_trial"] is not None
    assert (workdir / "sweeps/s/report/best_config.yaml").is_file()
    html = (workdir / "sweeps/s/report/report.html").read_text()
    assert html.count("<img") >= 4, "objective vs parameters, history, parallel coordinates, learning curves"
    assert "Parameter importances" in (workdir / "sweeps/s/report/report.md").read_text()
    # each trial is a run directory that the run commands follow
    assert cli.main(["status", str(workdir / "sweeps/s/trials/0002")]) == 0
    assert "state:      completed" in capsys.readouterr().out
    assert cli.main(["logs", str(workdir / "sweeps/s/trials/0002")]) == 0
    assert "sweep: trial 2 completed" in capsys.readouterr().out
    assert cli.main(["train", str(workdir / "sweeps/s/report/best_config.yaml"), "training.epochs=1"]) == 0
    # a finished sweep has nothing left to resume
    assert sweep("resume", str(workdir / "sweeps/s")) == 0
    assert "nothing left to run" in capsys.readouterr().out


def test_resume_after_killing_the_sweep(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = {**BASE, "training": {**BASE["training"], "epochs": 40}}
    path = write_spec(workdir, base=base, budget={"trials": 3}, parallelism=2)
    command = [sys.executable, "-m", "harness", "sweep", str(path), "--executor", "local"]
    proc = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not any(r.epochs >= 2 and r.state == "running" for r in records(workdir / "sweeps/s")):
            assert proc.poll() is None and time.monotonic() < deadline, "the sweep ended before it could be killed"
            time.sleep(POLL_S)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    killed = [r for r in records(workdir / "sweeps/s") if r.state == "running"]
    assert killed
    assert sweep("status", str(workdir / "sweeps/s")) == 0
    assert "running*" in capsys.readouterr().out
    assert sweep("resume", str(workdir / "sweeps/s")) == 0
    assert "resuming" in capsys.readouterr().out
    found = records(workdir / "sweeps/s")
    assert [r.trial for r in found] == [0, 1, 2] and {r.state for r in found} == {"completed"}
    assert len({json.dumps(r.params, sort_keys=True) for r in found}) == 3
    for record in killed:
        run_dir = workdir / "sweeps/s/trials" / f"{record.trial:04d}"
        epochs = [line["epoch"] for line in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())]
        assert epochs == list(range(1, 41)), "the interrupted trial continued from its checkpoint"
    logs = "".join(p.read_text() for p in (workdir / "sweeps/s/workers").glob("*.out"))
    assert any(f"trial {r.trial} resumed" in logs for r in killed)


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_stops_a_local_sweep_with_checkpoints(
    workdir: Path, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    """Ctrl-C reaches every process of the terminal; SIGTERM only the command: both stop the trials
    with a checkpoint, record them interrupted, and leave no process behind."""
    base = {**BASE, "training": {**BASE["training"], "epochs": 40}}
    path = write_spec(workdir, base=base, budget={"trials": 2}, parallelism=1)
    command = [sys.executable, "-m", "harness", "sweep", str(path), "--executor", "local"]
    proc = subprocess.Popen(
        command, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while not any(r.epochs >= 2 and r.state == "running" for r in records(workdir / "sweeps/s")):
            assert proc.poll() is None and time.monotonic() < deadline, "the sweep ended before it could be stopped"
            time.sleep(POLL_S)
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out
    assert "Traceback" not in out and "harness sweep resume" in out
    (record,) = records(workdir / "sweeps/s")
    assert record.state == "interrupted", record
    run_dir = workdir / "sweeps/s/trials/0000"
    assert any((run_dir / "checkpoints").iterdir()), "the trial stopped with a checkpoint"
    workers = "".join(p.read_text() for p in (workdir / "sweeps/s/workers").glob("*.out"))
    assert "Traceback" not in workers and "KeyboardInterrupt" not in workers
    alive = subprocess.run(["pgrep", "-f", str(workdir / "sweeps/s")], capture_output=True, text=True).stdout
    assert not alive.strip(), f"processes left behind: {alive}"
    assert sweep("resume", str(workdir / "sweeps/s")) == 0
    assert {r.state for r in records(workdir / "sweeps/s")} == {"completed"}


def test_failing_trial_is_retried_then_failed(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = {**BASE, "training": {**BASE["training"], "optimizer": {"name": "sgd"}}}
    params = {"training.optimizer.learning_rate": {"grid": [0.05, 1.0e10]}}
    path = write_spec(workdir, base=base, parameters=params, budget={"trials": 2}, retries=1)
    assert sweep(str(path), "--executor", "local") == 0
    by_lr = {r.params["training.optimizer.learning_rate"]: r for r in records(workdir / "sweeps/s")}
    assert by_lr[0.05].state == "completed" and by_lr[0.05].attempts == 1
    assert by_lr[1.0e10].state == "failed" and by_lr[1.0e10].attempts == 2
    assert "loss became nan" in (by_lr[1.0e10].error or "")
    status = format_status(read_status(workdir / "sweeps/s"))
    assert "1 completed, 1 failed" in status and "loss became nan" in status
    study = optuna.load_study(
        study_name="sweep",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(workdir / "sweeps/s/study.journal"))
        ),
    )
    assert sorted(t.state.name for t in study.trials) == ["COMPLETE", "FAIL"]


class ExitsMidway(keras.callbacks.Callback):
    """User code that ends the process with status 0 before training is over."""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if epoch == 0:
            os._exit(0)


def exits_midway() -> keras.callbacks.Callback:
    return ExitsMidway()


def test_a_trial_that_exits_0_before_the_end_is_not_recorded_completed(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An exit status alone is not a finished trial: its half-trained objective must not count."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the trial's process imports the callback from here
    callback = "tests.sweep.test_sweep:exits_midway"
    base = {**BASE, "training": {**BASE["training"], "epochs": 3, "callbacks": [callback]}}
    path = write_spec(workdir, base=base, budget={"trials": 1}, retries=0)
    assert sweep(str(path), "--executor", "local") == 1, "its only trial failed"
    (record,) = records(workdir / "sweeps/s")
    assert record.state == "failed" and record.epochs < 3, record
    assert record.error == "the trial's processes exited 0 before its run completed (state: running)"
    log = "".join(p.read_text() for p in (workdir / "sweeps/s/workers").glob("*.out"))
    assert "exited 0 but its run is running, not completed" in log


def test_bad_trial_is_pruned_and_good_one_is_not(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = {**BASE, "training": {**BASE["training"], "epochs": 8}}
    params = {"training.optimizer.learning_rate": {"grid": [0.05, 1.0e-7]}}
    pruner = {"name": "threshold", "options": {"lower": 0.6, "n_warmup_steps": 2}}
    path = write_spec(workdir, base=base, parameters=params, pruner=pruner, budget={"trials": 2})
    assert sweep(str(path), "--executor", "local") == 0
    by_lr = {r.params["training.optimizer.learning_rate"]: r for r in records(workdir / "sweeps/s")}
    good, bad = by_lr[0.05], by_lr[1.0e-7]
    assert good.state == "completed" and good.epochs == 8
    assert bad.state == "pruned" and bad.epochs < 8
    bad_dir = workdir / "sweeps/s/trials" / f"{bad.trial:04d}"
    assert json.loads((bad_dir / "state.json").read_text())["state"] == "pruned"
    assert (bad_dir / "checkpoints").is_dir() and not (bad_dir / "report.json").exists()
    assert cli.main(["status", str(bad_dir)]) == 0
    assert "state:      pruned" in capsys.readouterr().out


def test_gpu_hours_budget_stops_asking_for_trials(workdir: Path) -> None:
    from harness.sweep.study import budget_left

    path = write_spec(workdir, budget={"trials": 10, "gpu_hours": 1.0}, slurm={"gpus_per_node": 2})
    spec = load_spec(path)
    study = optuna.create_study()
    spent = [ledger.TrialRecord(0, {}, "completed", wall_time_s=1700.0)]  # 2 GPUs x 1700 s < 1 GPU-hour
    assert budget_left(spec, study, spent)
    spent.append(ledger.TrialRecord(1, {}, "completed", wall_time_s=200.0))  # 2 x 1900 s > 1 GPU-hour
    assert not budget_left(spec, study, spent)


MODELS_PY = """
import keras


def build(input_shape, num_outputs, units=8):
    inputs = keras.Input(input_shape)
    hidden = keras.layers.Dense(units, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(num_outputs)(hidden))
"""


def test_trials_import_the_model_beside_the_base_config(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = workdir / "project"
    project.mkdir()
    (project / "models.py").write_text(MODELS_PY)
    base = {**BASE, "model": {"name": "models:build"}, "training": {**BASE["training"], "epochs": 1}}
    (project / "base.yaml").write_text(yaml.safe_dump(base))
    params = {"model.kwargs.units": {"choice": [4, 8]}}
    spec = write_spec(project, base="base.yaml", parameters=params, budget={"trials": 1}, output_dir=str(workdir))
    assert sweep(str(spec), "--executor", "local") == 0  # started from workdir, not from project/
    found = records(workdir / "s")
    assert [r.state for r in found] == ["completed"], found
    assert cli.main(["report", str(workdir / "s")]) == 0
    best = (workdir / "s/report/best_config.yaml").read_text()
    assert f"models:build: imported from {project}" in best


def test_every_trial_failed_exits_1_and_resume_takes_over_only_the_budget(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = {"training.batch_size": {"choice": [400, 500]}}  # iris has 150 rows: each trial is refused
    path = write_spec(workdir, parameters=params, budget={"trials": 1}, retries=0)
    assert sweep(str(path), "--executor", "local") == 1
    err = capsys.readouterr().err
    assert "every trial failed" in err and "1 failed" in err
    # a sweep made by an older version: its stored base lacks a run-config key added since
    stored_path = workdir / "sweeps/s/sweep.yaml"
    old = yaml.safe_load(stored_path.read_text())
    del old["base"]["data"]["target_scaling"], old["code_dir"]
    stored_path.write_text(yaml.safe_dump(old, sort_keys=False))
    # --resume with an edited spec: the budget is taken over ...
    write_spec(workdir, parameters=params, budget={"trials": 2}, retries=0)
    assert sweep(str(path), "--executor", "local", "--resume") == 1
    out, err = capsys.readouterr()
    assert "taken over" in out + err and "budget.trials" in out + err and "target_scaling" not in out + err
    assert [r.trial for r in records(workdir / "sweeps/s")] == [0, 1]
    assert yaml.safe_load((workdir / "sweeps/s/sweep.yaml").read_text())["budget"]["trials"] == 2
    # ... but another search space is refused, naming the key, and changes nothing
    stored = (workdir / "sweeps/s/sweep.yaml").read_text()
    write_spec(workdir, parameters={"training.batch_size": {"choice": [400, 600]}}, budget={"trials": 3}, retries=0)
    assert sweep(str(path), "--executor", "local", "--resume") == 2
    err = capsys.readouterr().err
    assert "parameters.training.batch_size" in err and "budget, parallelism and retries" in err
    assert "harness sweep resume" in err
    assert (workdir / "sweeps/s/sweep.yaml").read_text() == stored and len(records(workdir / "sweeps/s")) == 2
