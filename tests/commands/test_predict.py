"""`harness predict` on new rows: identifiers, unseen categories, missing values, and the output file.

One tiny penguins-like run is trained once per module (1 epoch); every test predicts other files
with it through `harness.cli.main`, as a user would.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from harness import cli
from harness.data import Preprocessor
from harness.data.newrows import fills_from_table
from harness.data.table import Kind, TableEncoder, read_csv

FAST = ["training.epochs=1", "training.progress=none", "training.batch_size=16", "model.name=mlp"]
ISLANDS = ("Biscoe", "Dream", "Torgersen")
SPECIES = {"Biscoe": "Gentoo", "Dream": "Chinstrap", "Torgersen": "Adelie"}
HEADER = "island,bill_length_mm,flipper_length_mm,sex,species"


def penguin_rows(count: int, start: int = 0) -> list[str]:
    """Penguins-like rows: the species follows the island, the numbers are deterministic."""
    rows = []
    for i in range(start, start + count):
        island = ISLANDS[i % 3]
        sex = "male" if i % 2 else "female"
        rows.append(f"{island},{35 + (i * 7) % 20}.{i % 10},{180 + (i * 11) % 40},{sex},{SPECIES[island]}")
    return rows


def penguins_csv(path: Path, rows: int = 90) -> Path:
    path.write_text("\n".join([HEADER, *penguin_rows(rows)]) + "\n", encoding="utf-8")
    return path


def penguins_config(folder: Path, **data: str) -> Path:
    """A CSV experiment on penguins.csv beside the config; `data` adds data.* keys."""
    penguins_csv(folder / "penguins.csv")
    extra = "".join(f"  {key}: {value}\n" for key, value in data.items())
    config = folder / "penguins.yaml"
    config.write_text(
        f"run:\n  name: penguins\n  output_dir: {folder / 'runs'}\n"
        f"data:\n  dataset: csv\n  path: penguins.csv\n  target: species\n{extra}"
        "model:\n  hidden_units: [8]\n  dropout: 0.0\n  batch_norm: false\n",
        encoding="utf-8",
    )
    return config


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run trained with the default data.missing=drop."""
    folder = tmp_path_factory.mktemp("penguins")
    assert cli.main(["train", str(penguins_config(folder)), *FAST]) == 0
    return folder / "runs" / "penguins"


def write_csv(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def predict(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["predict", *args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def probabilities(row: dict[str, str]) -> list[float]:
    return [float(row[f"prob_{name}"]) for name in sorted(SPECIES.values())]


# --- identifiers ---------------------------------------------------------------------------------


def test_table_rows_are_identified_by_their_row_number(
    run_dir: Path, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    features = [row.rsplit(",", 1)[0] for row in penguin_rows(4)]
    source = write_csv(workdir / "new.csv", [HEADER.replace(",species", ""), *features])
    code, out, err = predict(capsys, str(run_dir), str(source))
    assert code == 0, err
    rows = read_rows(workdir / "new.predictions.csv")
    assert list(rows[0]) == ["row", "prediction", *[f"prob_{n}" for n in sorted(SPECIES.values())]]
    assert [r["row"] for r in rows] == ["1", "2", "3", "4"]
    assert all(abs(sum(probabilities(r)) - 1) < 1e-4 for r in rows)
    assert {r["prediction"] for r in rows} <= set(SPECIES.values())
    assert "4 of 4 rows predicted" in out and err == ""


def test_a_chosen_id_column_is_copied_and_not_used_as_a_feature(
    run_dir: Path, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [f"penguin_id,{HEADER}", *[f"P-{i:03d},{row}" for i, row in enumerate(penguin_rows(3), start=7)]]
    source = write_csv(workdir / "tagged.csv", lines)
    plain = write_csv(workdir / "plain.csv", [HEADER, *penguin_rows(3)])
    code, _, err = predict(capsys, str(run_dir), str(source), "--id-column", "penguin_id", "-o", "tagged.csv.out")
    assert code == 0, err
    assert predict(capsys, str(run_dir), str(plain), "-o", "plain.out")[0] == 0
    tagged, untagged = read_rows(workdir / "tagged.csv.out"), read_rows(workdir / "plain.out")
    assert list(tagged[0])[0] == "penguin_id" and [r["penguin_id"] for r in tagged] == ["P-007", "P-008", "P-009"]
    # the id column changes nothing in the predictions: it is not a feature
    assert [probabilities(r) for r in tagged] == [probabilities(r) for r in untagged]
    # the label column present in the input is fine, reported as not used
    assert "'species' (the training target)" in err and "penguin_id" not in err
    code, _, err = predict(capsys, str(run_dir), str(plain), "--id-column", "island", "-o", "by-island.out")
    assert code == 0 and "--id-column 'island' is also a feature the model was trained on" in err
    assert [r["island"] for r in read_rows(workdir / "by-island.out")] == list(ISLANDS)


def test_extra_columns_are_ignored_with_a_note(
    run_dir: Path, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [f"{HEADER},comment,Unnamed: 0", *[f"{row},ok,{i}" for i, row in enumerate(penguin_rows(2))]]
    code, _, err = predict(capsys, str(run_dir), str(write_csv(workdir / "extra.csv", lines)))
    assert code == 0, err
    assert "note:" in err and "3 columns the model does not use are ignored" in err
    assert "'comment'" in err and "'Unnamed: 0'" in err and "extra.csv" in err


def test_image_folder_predictions_name_each_file(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    for name, level in {"dark": 20, "light": 220}.items():
        (workdir / "pics" / name).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(np.full((6, 6, 3), level + i, np.uint8)).save(workdir / "pics" / name / f"{i}.png")
    config = workdir / "images.yaml"
    config.write_text(
        "run:\n  name: pics\ndata:\n  dataset: image_folder\n  path: pics\n  image_size: [6, 6]\n"
        "model:\n  name: mlp\n  hidden_units: [4]\n  batch_norm: false\n",
        encoding="utf-8",
    )
    assert cli.main(["train", str(config), *FAST[:2], "training.batch_size=4"]) == 0
    new = workdir / "new pics"
    (new / "sub").mkdir(parents=True)
    Image.fromarray(np.full((9, 7, 3), 30, np.uint8)).save(new / "a.png")
    Image.fromarray(np.full((6, 6, 3), 210, np.uint8)).save(new / "sub" / "b.jpg")
    (new / "notes.txt").write_text("not an image")
    code, out, err = predict(capsys, str(workdir / "runs" / "pics"), str(new))
    assert code == 0, err
    rows = read_rows(workdir / "new pics.predictions.csv")
    assert [r["file"] for r in rows] == ["a.png", "sub/b.jpg"]
    assert {r["prediction"] for r in rows} <= {"dark", "light"}


def test_npz_rows_are_identified_by_their_index(
    run_dir: Path, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    width = Preprocessor.load(run_dir / "preprocessing.json").input_shape[0]
    np.savez(workdir / "encoded.npz", x=np.zeros((3, width)))
    code, _, err = predict(capsys, str(run_dir), str(workdir / "encoded.npz"))
    assert code == 0, err
    assert [r["index"] for r in read_rows(workdir / "encoded.predictions.csv")] == ["0", "1", "2"]


# --- unseen categories ---------------------------------------------------------------------------


def unseen_file(workdir: Path) -> Path:
    rows = penguin_rows(9)
    rows[1] = rows[1].replace("Dream", "Anvers")
    rows[4] = rows[4].replace("Dream", "Anvers")
    rows[2] = rows[2].replace(",female,", ",FEMALE,")
    return write_csv(workdir / "unseen.csv", [HEADER, *rows])


def test_unseen_categories_are_reported_and_encoded_as_unknown(
    run_dir: Path, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = unseen_file(workdir)
    code, out, err = predict(capsys, str(run_dir), str(source))
    assert code == 0, err
    assert "warning:" in err and "unseen.csv" in err
    assert "column 'island' has 2 rows with 1 value not seen in training: 'Anvers' (2 rows)" in err
    assert "column 'sex' has 1 row with 1 value not seen in training: 'FEMALE' (1 row, did you mean 'female'?)" in err
    assert "known values: 'Biscoe', 'Dream', 'Torgersen'" in err and "--strict" in err
    assert len(read_rows(workdir / "unseen.predictions.csv")) == 9
    # unknown = an all-zero one-hot block: the model's input width is unchanged, so old runs still predict
    preprocessor = Preprocessor.load(run_dir / "preprocessing.json")
    x = preprocessor.read_new(source).x * preprocessor.scaler.scale + preprocessor.scaler.shift
    names = preprocessor.feature_names or []
    island = [i for i, name in enumerate(names) if name.startswith("island=")]
    sex = [i for i, name in enumerate(names) if name.startswith("sex=")]
    np.testing.assert_allclose(x[[1, 4]][:, island], 0, atol=1e-5)
    np.testing.assert_allclose(x[2, sex], 0, atol=1e-5)
    np.testing.assert_allclose(x[0, island].sum(), 1, atol=1e-5)


def test_many_unseen_values_are_listed_briefly(
    run_dir: Path, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [row.replace(ISLANDS[i % 3], f"Island{i:02d}") for i, row in enumerate(penguin_rows(12))]
    code, _, err = predict(capsys, str(run_dir), str(write_csv(workdir / "many.csv", [HEADER, *rows])))
    assert code == 0, err
    assert "12 rows with 12 values not seen in training" in err and "and 7 more" in err


def test_strict_refuses_unseen_categories(run_dir: Path, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = unseen_file(workdir)
    before = sorted(p.name for p in workdir.iterdir())
    code, _, err = predict(capsys, str(run_dir), str(source), "--strict")
    assert code == 2
    assert err.startswith("error: ") and "unseen.csv" in err and "--strict" in err
    assert "'island'" in err and "'Anvers'" in err and "'sex'" in err and "'FEMALE'" in err
    assert "drop --strict" in err
    assert sorted(p.name for p in workdir.iterdir()) == before


# --- missing values ------------------------------------------------------------------------------


def holes_file(workdir: Path) -> Path:
    rows = [row.split(",") for row in penguin_rows(6)]
    rows[1][3] = "NA"
    rows[3][1] = ""
    return write_csv(workdir / "holes.csv", [HEADER, *[",".join(row) for row in rows]])


def test_missing_values_are_refused_by_default_after_training_with_drop(
    run_dir: Path, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = predict(capsys, str(run_dir), str(holes_file(workdir)))
    assert code == 2 and not (workdir / "holes.predictions.csv").exists()
    assert "holes.csv" in err and "2 of 6 rows have missing feature values, rows 2, 4" in err
    assert "column 'bill_length_mm': line 5: an empty cell" in err
    assert "column 'sex': line 3: 'NA' (a missing-value marker)" in err
    assert "data.missing=drop" in err and "--missing impute" in err and "--missing skip" in err


def test_missing_error_refuses_even_a_run_that_imputes(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = workdir / "median"
    folder.mkdir()
    assert cli.main(["train", str(penguins_config(folder, missing="median")), *FAST]) == 0
    run = folder / "runs" / "penguins"
    code, _, err = predict(capsys, str(run), str(holes_file(workdir)), "--missing", "error")
    assert code == 2 and "--missing error refuses them" in err and "rows 2, 4" in err
    # by default a run trained with imputation imputes, as in training
    code, _, err = predict(capsys, str(run), str(holes_file(workdir)))
    assert code == 0 and "--missing impute" in err
    assert all(r["prediction"] for r in read_rows(workdir / "holes.predictions.csv"))


def test_missing_skip_keeps_the_rows_with_empty_predictions(
    run_dir: Path, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = predict(capsys, str(run_dir), str(holes_file(workdir)), "--missing", "skip")
    assert code == 0, err
    assert "2 of 6 rows have missing feature values and were not predicted" in err and "rows 2, 4" in err
    assert "4 of 6 rows predicted" in out
    rows = read_rows(workdir / "holes.predictions.csv")
    assert [r["row"] for r in rows] == ["1", "2", "3", "4", "5", "6"]
    assert [bool(r["prediction"]) for r in rows] == [True, False, True, False, True, True]
    assert rows[1]["prob_Adelie"] == "" and rows[3]["prob_Gentoo"] == ""
    # the other rows get exactly the predictions they get without the incomplete rows
    full = write_csv(workdir / "full.csv", [HEADER, *penguin_rows(6)])
    assert predict(capsys, str(run_dir), str(full))[0] == 0
    complete = read_rows(workdir / "full.predictions.csv")
    assert [probabilities(rows[i]) for i in (0, 2, 4, 5)] == [probabilities(complete[i]) for i in (0, 2, 4, 5)]


def test_missing_impute_fills_with_the_training_split_statistics(
    run_dir: Path, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fills = json.loads((run_dir / "preprocessing.json").read_text())["predict_fills"]
    assert set(fills) == {"island", "bill_length_mm", "flipper_length_mm", "sex"}
    code, _, err = predict(capsys, str(run_dir), str(holes_file(workdir)), "--missing", "impute")
    assert code == 0, err
    assert "'bill_length_mm': 1 with" in err and f"'sex': 1 with {fills['sex']!r}" in err
    imputed = read_rows(workdir / "holes.predictions.csv")
    # the same rows with the recorded values written in predict identically
    rows = [row.split(",") for row in penguin_rows(6)]
    rows[1][3] = fills["sex"]
    rows[3][1] = repr(fills["bill_length_mm"])
    filled = write_csv(workdir / "filled.csv", [HEADER, *[",".join(row) for row in rows]])
    assert predict(capsys, str(run_dir), str(filled))[0] == 0
    written_in = read_rows(workdir / "filled.predictions.csv")
    assert [probabilities(r) for r in imputed] == [probabilities(r) for r in written_in]


def test_fill_values_are_the_median_and_the_most_frequent_value(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", ["v,c", "1,b", "2,a", "10,b", "NA,NA", "4,a", "5,b"])
    table = read_csv(path)
    kinds: dict[str, Kind] = {"v": "numeric", "c": "categorical"}
    encoder = TableEncoder.fit(table, kinds, "mean")
    assert fills_from_table(table, encoder) == {"v": 4.0, "c": "b"}


def test_an_older_preprocessing_file_without_fill_values_still_predicts(
    run_dir: Path, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = workdir / "old-run"
    shutil.copytree(run_dir, old)
    saved = json.loads((old / "preprocessing.json").read_text())
    del saved["predict_fills"]
    (old / "preprocessing.json").write_text(json.dumps(saved))
    full = write_csv(workdir / "full.csv", [HEADER, *penguin_rows(5)])
    assert predict(capsys, str(old), str(full))[0] == 0
    assert predict(capsys, str(old), str(holes_file(workdir)), "--missing", "skip")[0] == 0
    code, _, err = predict(capsys, str(old), str(holes_file(workdir)), "--missing", "impute", "-o", "x.csv")
    assert code == 2 and "older harness version" in err and "--missing skip" in err
    assert not (workdir / "x.csv").exists()


# --- the output file -----------------------------------------------------------------------------


def test_output_in_a_new_folder_is_created_and_an_existing_one_replaced(
    run_dir: Path, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_csv(workdir / "new.csv", [HEADER, *penguin_rows(3)])
    target = workdir / "out" / "deeper" / "p.csv"
    code, out, _ = predict(capsys, str(run_dir), str(source), "-o", str(target))
    assert code == 0 and str(target) in out and len(read_rows(target)) == 3
    target.write_text("stale\n")
    code, _, err = predict(capsys, str(run_dir), str(source), "-o", str(target))
    assert code == 0 and f"replaced the existing file {target}" in err
    assert len(read_rows(target)) == 3
    assert sorted(p.name for p in target.parent.iterdir()) == ["p.csv"]  # no temporary file left behind


def test_regression_and_single_sigmoid_outputs_are_written_per_row() -> None:
    from harness.commands.share import predictions_csv
    from harness.config.schema import DataConfig
    from harness.data import prepare_data
    from harness.data.newrows import NewRows

    regression = prepare_data(DataConfig(dataset="diabetes"), seed=0).preprocessor
    rows = NewRows(np.zeros((2, 10)), "row", ["1", "2", "3"], np.array([True, False, True]))
    text = predictions_csv(regression, rows, np.array([[0.0], [1.0]], np.float32))
    lines = text.splitlines()
    assert lines[0] == f"row,{(regression.target_names or [''])[0]}" and lines[2] == "2," and len(lines) == 4
    mean, std = regression.targets.mean[0], regression.targets.std[0]  # type: ignore[union-attr]
    assert float(lines[3].split(",")[1]) == pytest.approx(mean + std, rel=1e-5)
    binary = prepare_data(DataConfig(dataset="breast_cancer"), seed=0).preprocessor
    names = binary.class_names or []
    text = predictions_csv(binary, NewRows.every_row(np.zeros((1, 30)), "index", ["0"]), np.array([[0.8]]))
    assert text.splitlines()[1] == f"0,{names[1]},0.200000,0.800000"
