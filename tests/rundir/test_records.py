"""harness.rundir: the layout, the lifecycle states, the typed records and the one metrics reader."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.errors import RunDirError
from harness.train import rundir


def test_every_file_of_the_layout_has_its_own_name_inside_the_run_directory(tmp_path: Path) -> None:
    from harness.rundir import RunDir

    run = RunDir(tmp_path / "r")
    paths = [getattr(run, name) for name, value in vars(RunDir).items() if isinstance(value, property)]
    assert len(paths) == len(set(paths)) >= 15
    assert all(run.path in path.parents for path in paths)
    assert run.job_config.parent == run.job_folder


@pytest.mark.parametrize("state", list(__import__("harness.rundir", fromlist=["RunState"]).RunState))
def test_a_state_written_to_state_json_reads_back_as_the_same_member(tmp_path: Path, state: object) -> None:
    from harness.rundir import RunState, read_state, recorded_state, write_state

    assert isinstance(state, RunState)
    write_state(tmp_path, state, current_job="7", host="node1", starting=True)
    raw = json.loads((tmp_path / "state.json").read_text())
    assert raw["state"] == state.value and type(raw["state"]) is str  # plain JSON, no enum repr
    assert recorded_state(read_state(tmp_path)) is state
    assert RunState.parse(state.value) is state and f"{state}" == state.value


def test_a_state_this_harness_does_not_know_is_none_not_an_error(tmp_path: Path) -> None:
    from harness.rundir import RunState, read_state, recorded_state

    (tmp_path / "state.json").write_text(json.dumps({"state": "hibernating"}))
    assert recorded_state(read_state(tmp_path)) is None and RunState.parse("") is None


def _metrics_as_each_reader_sees_them(run_dir: Path) -> dict[str, tuple[list[int], list[str]]]:
    """(epochs, warnings) from training's resume, the report and `harness status`."""
    from harness.evaluate.inputs import read_history
    from harness.slurm import follow

    def seen(read: Callable[[], list[int]]) -> tuple[list[int], list[str]]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            found = read()
        return found, [str(w.message) for w in caught]

    path = run_dir / "metrics.jsonl"
    train, train_warnings = seen(lambda: [line["epoch"] for line in rundir.read_metrics(path)])
    report, report_warnings = seen(lambda: [row["epoch"] for row in read_history(run_dir)])
    last, status_warnings = seen(lambda: [line["epoch"] for line in [follow.last_metrics(path)] if line])
    return {"train": (train, train_warnings), "report": (report, report_warnings), "status": (last, status_warnings)}


@pytest.mark.parametrize(
    ("text", "epochs", "warned"),
    [
        ('{"epoch": 1, "loss": 1.0}\n{"epoch": 2, "loss": 0.5}\n{"epoch": 3, "lo', [1, 2], []),
        ('{"epoch": 1}\n{"epoch": 2}', [1, 2], []),  # whole, only its newline missing
        ('{"epoch": 1}\n[2]\n{"epoch": 3}\n{"ep', [1, 3], [":2: skipping a line that is not a JSON object"]),
        ('{"epoch": 1}\n{"epoch": -1}\n\nnope\n', [1], [":2: skipping 2 lines", "2 (a JSON object", "4 (not JSON)"]),
        ("", [], []),
    ],
    ids=["cut-short", "no-newline", "bad-middle", "two-bad", "empty"],
)
def test_a_damaged_metrics_log_reads_the_same_for_training_report_and_status(
    tmp_path: Path, text: str, epochs: list[int], warned: list[str]
) -> None:
    (tmp_path / "metrics.jsonl").write_text(text)
    seen = _metrics_as_each_reader_sees_them(tmp_path)
    assert seen["train"][0] == seen["report"][0] == epochs
    assert seen["status"][0] == epochs[-1:]
    for name, (_, messages) in seen.items():
        assert len(messages) == (1 if warned else 0), (name, messages)
        assert all(str(tmp_path / "metrics.jsonl") in m and all(w in m for w in warned) for m in messages), name
    assert (tmp_path / "metrics.jsonl").read_text() == text, "reading never changes the file"


def test_an_unreadable_metrics_log_is_named(tmp_path: Path) -> None:
    from harness.evaluate.inputs import read_history
    from harness.slurm import follow

    (tmp_path / "metrics.jsonl").mkdir()
    with pytest.raises(RunDirError, match=r"cannot read .*metrics\.jsonl"):
        follow.last_metrics(tmp_path / "metrics.jsonl")
    with pytest.warns(UserWarning, match=r"cannot read .*metrics\.jsonl.*skipping the metrics tables"):
        assert read_history(tmp_path) == []


def _read(kind: str, run_dir: Path) -> object:
    from harness import rundir as layout

    readers = {"state": layout.read_state, "submission": layout.read_submission, "report": layout.read_report}
    return readers[kind](run_dir)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b'{"schema_version": 1, "state": "runn', ["is not valid JSON"]),
        (b"[1, 2]", ["must hold a JSON object", "list"]),
        ("{}".encode("utf-16"), ["not UTF-8"]),
        (b'{"schema_version": 99}', ["schema_version 99", "schema_version 1"]),
    ],
    ids=["cut", "list", "utf16", "version"],
)
@pytest.mark.parametrize("kind", ["state", "submission", "report"])
def test_a_garbled_record_is_a_run_dir_error_naming_the_file(
    tmp_path: Path, kind: str, content: bytes, words: list[str]
) -> None:
    path = tmp_path / f"{kind}.json"
    path.write_bytes(content)
    with pytest.raises(RunDirError) as err:
        _read(kind, tmp_path)
    assert str(path) in str(err.value) and all(word in str(err.value) for word in words), str(err.value)
    assert path.read_bytes() == content


def test_a_missing_record_is_empty_for_state_and_an_error_naming_the_file_otherwise(tmp_path: Path) -> None:
    assert _read("state", tmp_path) == {}
    with pytest.raises(RunDirError, match="is not a submitted run: it has no submission.json"):
        _read("submission", tmp_path)
    with pytest.raises(RunDirError, match="has no report.json"):
        _read("report", tmp_path)
    (tmp_path / "state.json").mkdir()
    with pytest.raises(RunDirError, match=r"cannot read .*state\.json"):
        _read("state", tmp_path)


def test_a_field_of_the_wrong_type_is_named_with_its_value(tmp_path: Path) -> None:
    from harness.rundir import read_state, read_submission

    (tmp_path / "state.json").write_text(json.dumps({"state": "running", "epoch": "three"}))
    with pytest.raises(RunDirError, match=r"state\.json is damaged: epoch must be a whole number >= 0\. Received: 'th"):
        read_state(tmp_path)
    (tmp_path / "submission.json").write_text(json.dumps({"schema_version": 1, "resources": {"max_requeues": -2}}))
    with pytest.raises(RunDirError, match=r"resources\.max_requeues must be a whole number >= 0\. Received: -2"):
        read_submission(tmp_path)


def test_a_damaged_state_json_is_replaced_by_the_next_write_not_a_reason_to_stop(tmp_path: Path) -> None:
    from harness.rundir import RunState, read_state, write_state

    (tmp_path / "state.json").write_text('{"state": "runn')
    write_state(tmp_path, RunState.RUNNING, current_job=None, host="n1", epoch=2)
    record = read_state(tmp_path)
    assert record["state"] == "running" and record["epoch"] == 2 and record["host"] == "n1"
