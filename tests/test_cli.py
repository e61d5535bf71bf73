"""The command line: help texts, doctor, and a CSV experiment from config to predictions."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import keras
import numpy as np
import pytest

from harness import cli
from harness.data import Preprocessor
from harness.evaluate import load_report
from tests.conftest import CONFIGS, ROOT

SUBCOMMANDS = ["train", "evaluate", "predict", "report", "doctor", "smoke", "submit", "status", "logs", "cancel"]


def test_top_level_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in out
    assert "examples:" in out


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_each_subcommand_has_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([name, "--help"])
    assert exit_info.value.code == 0
    assert f"usage: harness {name}" in capsys.readouterr().out


def test_no_subcommand_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([])
    assert exit_info.value.code == 2


def test_overrides_may_follow_flags() -> None:
    parser = cli.build_parser()
    args = cli.parse_command_line(parser, ["train", "exp.yaml", "--workers", "2", "a.b=1", "c=2"])
    assert (args.items, args.workers) == (["exp.yaml", "a.b=1", "c=2"], 2)
    args = cli.parse_command_line(parser, ["submit", "exp.yaml", "--dry-run", "a.b=1"])
    assert (args.items, args.dry_run) == (["exp.yaml", "a.b=1"], True)


def test_an_unknown_flag_after_overrides_is_still_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "exp.yaml", "a.b=1", "--wrokers", "2"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --wrokers 2" in capsys.readouterr().err


def test_split_config_and_overrides(workdir: Path) -> None:
    (workdir / "exp.yaml").write_text("")
    assert cli.split_config_and_overrides(["exp.yaml", "a.b=1"]) == (Path("exp.yaml"), ["a.b=1"])
    assert cli.split_config_and_overrides(["a.b=1"]) == (None, ["a.b=1"])


def test_doctor_prints_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "TensorFlow" in out and "Keras" in out
    assert cli.main(["doctor", "--json"]) == 0
    assert '"status"' in capsys.readouterr().out


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_csv_experiment_trains_reports_and_predicts(workdir: Path) -> None:
    assert cli.main(["train", str(CONFIGS / "csv.yaml"), "training.epochs=25", "training.progress=none"]) == 0
    run_dir = workdir / "runs" / "wine-csv"
    report = load_report(run_dir)
    assert report["test"]["accuracy"] >= 0.85
    assert sorted(report["data"]["class_names"]) == ["barbera", "barolo", "grignolino"]
    assert "values_imputed" in str(report["data"]["notes"]) or "imputed" in str(report["data"]["notes"])
    source = CONFIGS / "data" / "wine.csv"
    out = workdir / "pred.csv"
    assert cli.main(["predict", str(run_dir), str(source), "-o", str(out)]) == 0
    rows = read_rows(out)
    truth = read_rows(source)
    assert len(rows) == len(truth)
    hits = np.mean([r["prediction"] == t["cultivar"] for r, t in zip(rows, truth, strict=True)])
    assert hits >= 0.85
    # the CLI's probabilities are exactly the saved model's outputs on the saved preprocessing
    model = keras.saving.load_model(run_dir / "model.keras")
    x = Preprocessor.load(run_dir / "preprocessing.json").transform_file(source)
    expected = model.predict(x, verbose=0)
    names = report["data"]["class_names"]
    got = np.array([[float(r[f"prob_{n}"]) for n in names] for r in rows])
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_starting_workers_and_submitting_do_not_import_tensorflow() -> None:
    """The `--workers N` parent and `harness submit` only check and start; TensorFlow is for the ranks."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "import harness.cli, harness.distribute, harness.distribute.launcher, harness.slurm.submit\n"
        "from harness.train.request import RunRequest, absolute_data_path, check_request\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras', 'horovod') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_output_closed_by_its_reader_ends_quietly() -> None:
    """`harness doctor | head -1`: no traceback about a broken pipe, and the shell's code for it."""
    import os
    import signal
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line
    try:
        done = subprocess.run([sys.executable, "-m", "harness", "doctor"], stdout=write_end, stderr=subprocess.PIPE)
    finally:
        os.close(write_end)
    assert done.returncode == 128 + signal.SIGPIPE, done.stderr
    assert done.stderr == b""


def test_smoke_subset_holds_two_global_batches_of_training() -> None:
    """Training refuses a global batch larger than its split, so smoke must not cut below that."""
    from harness.commands.smoke import smoke_overrides
    from harness.config import load_config

    config = load_config(None, ["training.batch_size=256"])
    extra = dict(item.split("=", 1) for item in smoke_overrides(config, Path("/tmp/x"), 512, workers=2))
    subset = int(extra["data.max_samples"])
    train_fraction = 1 - config.data.validation_split - config.data.test_split
    assert int(subset * train_fraction) >= 2 * 256 * 2
    small = load_config(None, ["training.batch_size=8"])
    assert dict(item.split("=", 1) for item in smoke_overrides(small, Path("/tmp/x"), 512))["data.max_samples"] == "512"
def every_exit_code() -> set[str]:
    """Every code the command can return, found where the code defines them."""
    from harness import errors
    from harness.distribute import launcher, watchdog

    classes = [errors.HarnessError]
    for cls in classes:
        classes.extend(cls.__subclasses__())
    codes = {cls.exit_code for cls in classes}
    codes |= {0, 2, watchdog.EXIT_STALLED, launcher.EXIT_INTERRUPTED}  # 2: argparse usage errors
    return {str(code) for code in codes} | {"128+N"}


def test_readme_and_docstring_list_every_exit_code() -> None:
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `([0-9+N]+)` \|", readme, flags=re.MULTILINE))
    assert documented == every_exit_code()
    assert {"1", "2", "3", "75", "130"} <= every_exit_code()
    docstring = cli.__doc__ or ""
    assert {code for code in every_exit_code() if re.search(rf"^  {re.escape(code)}\s", docstring, re.MULTILINE)} == (
        every_exit_code()
    )


@pytest.mark.parametrize(
    "args",
    [
        ["report", "x" * 5000],
        ["report", ".", "--out", "y" * 5000],
        ["evaluate", "x" * 5000],
        ["predict", "x" * 5000, "in.csv"],
    ],
    ids=["report", "report-out", "evaluate", "predict"],
)
def test_a_path_the_filesystem_refuses_is_a_usage_error(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(args)
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert "not a usable path (File name too long)" in err and "Traceback" not in err and len(err) < 2000


def test_warnings_print_as_one_line(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.test_bad_input import finished_run

    runs = [finished_run(workdir, "a"), finished_run(workdir, "b")]
    (runs[1] / "metrics.jsonl").write_text('{"epoch": 1}\n[2]\n{"epoch": 2}\n')
    assert cli.main(["report", *map(str, runs), "--out", "c"]) == 0
    err = capsys.readouterr().err
    assert f"warning: {runs[1] / 'metrics.jsonl'}:2: skipping a line that is not a JSON object\n" == err
