"""`harness evaluate` prepares the data again from data.path: a file changed since training is refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness import cli
from harness.data.fingerprint import data_fingerprint
from tests.conftest import CONFIGS

TRAIN = ["training.epochs=1", "training.progress=none", "model.name=mlp", "report.html=false"]


def test_evaluate_refuses_a_data_file_changed_since_training(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = workdir / "wine.csv"
    shutil.copy(CONFIGS / "data" / "wine.csv", data)
    args = ["data.dataset=csv", f"data.path={data}", "data.target=cultivar", "run.name=w", *TRAIN]
    assert cli.main(["train", *args]) == 0
    assert cli.main(["evaluate", "runs/w"]) == 0, "the same file evaluates"
    report = (workdir / "runs/w/report.json").read_bytes()
    capsys.readouterr()
    data.write_text(data.read_text().replace(",grignolino", ",Grignolino"))  # a label tidied by hand
    assert cli.main(["evaluate", "runs/w"]) == 2
    err = capsys.readouterr().err
    assert f"data.path {data} changed since runs/w was trained on it" in err and "Restore the file" in err
    assert (workdir / "runs/w/report.json").read_bytes() == report, "the report is left as it was"


def test_an_image_folder_is_fingerprinted_by_its_files(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    (folder / "cat").mkdir(parents=True)
    (folder / "dog").mkdir()
    (folder / "cat" / "a.png").write_bytes(b"x" * 10)
    before = data_fingerprint(folder)
    assert before is not None and before["files"] == 1
    (folder / ".DS_Store").write_bytes(b"finder")
    (folder / "cat" / "notes.txt").write_text("the loader reads no text")
    assert data_fingerprint(folder) == before, "files the loader skips are not the data"
    (folder / "cat" / "a.png").rename(folder / "dog" / "a.png")  # relabelled by moving it
    moved = data_fingerprint(folder)
    assert moved is not None and moved["sha256"] != before["sha256"]
    assert data_fingerprint(None) is None and data_fingerprint(tmp_path / "missing.csv") is None
