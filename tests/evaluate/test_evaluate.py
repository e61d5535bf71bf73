"""Tests of harness.evaluate on hand-built run directories: no TensorFlow, no training."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness import atomic
from harness.errors import RunDirError
from harness.evaluate import (
    REPORT_SCHEMA_VERSION,
    evaluate_predictions,
    gather_reports,
    load_report,
    render_report,
    write_model_card,
    write_report,
)
from harness.evaluate.inputs import read_history

CLASSES = ["cat", "dog", "bird"]
REPO = Path(__file__).resolve().parents[2]


# --- metrics -----------------------------------------------------------------------------------


def _one_hot_probabilities(predicted: list[int], classes: int) -> np.ndarray:
    """Probabilities whose argmax is `predicted`, with some mass on the other classes."""
    return np.eye(classes)[predicted] * 0.7 + 0.3 / classes


def test_classification_accuracy_and_confusion_matrix_match_hand_counts() -> None:
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = _one_hot_probabilities([0, 1, 1, 1, 2, 0], 3)

    result = evaluate_predictions("classification", y_true, y_pred, CLASSES)

    assert result["accuracy"] == pytest.approx(4 / 6)
    assert result["confusion_matrix"]["counts"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert result["confusion_matrix"]["normalized"][0] == pytest.approx([0.5, 0.5, 0.0])
    dog = result["per_class"]["dog"]
    assert (dog["precision"], dog["recall"], dog["support"]) == (pytest.approx(2 / 3), 1.0, 2)
    assert result["macro_avg"]["recall"] == pytest.approx((0.5 + 1.0 + 0.5) / 3)
    assert result["headline"] == {
        "metric": "accuracy",
        "value": pytest.approx(4 / 6),
        "higher_is_better": True,
    }


def test_perfect_classifier_has_auc_one_and_tiny_log_loss() -> None:
    y_true = np.array([0, 1, 2, 2, 1, 0, 2])
    y_pred = np.eye(3)[y_true] * 0.97 + 0.01  # rows sum to one: 0.98 on the true class

    result = evaluate_predictions("classification", y_true, y_pred, None)

    assert result["roc_auc"] == 1.0
    assert result["log_loss"] == pytest.approx(-math.log(0.98), rel=1e-6)
    assert result["class_names"] == ["0", "1", "2"]


def test_binary_auc_is_the_auc_of_the_positive_class() -> None:
    y_true = np.array([0, 0, 1, 1])
    positive = np.array([0.1, 0.4, 0.35, 0.8])
    # Positive/negative pairs ranked correctly: (0.35>0.1), (0.8>0.1), (0.8>0.4); wrong: (0.35<0.4).
    expected = 3 / 4
    two_columns = np.column_stack([1 - positive, positive])

    from_two_columns = evaluate_predictions("classification", y_true, two_columns, None)
    from_sigmoid = evaluate_predictions("classification", y_true, positive, ["neg", "pos"])

    assert from_two_columns["roc_auc"] == pytest.approx(expected)
    assert from_sigmoid["roc_auc"] == pytest.approx(expected)
    assert from_sigmoid["accuracy"] == pytest.approx(3 / 4)


def test_auc_is_none_with_a_reason_when_a_class_is_absent() -> None:
    y_true = np.array([0, 1, 0, 1])
    y_pred = _one_hot_probabilities([0, 1, 0, 1], 3)

    result = evaluate_predictions("classification", y_true, y_pred, CLASSES)

    assert result["roc_auc"] is None
    assert "bird" in result["roc_auc_reason"]
    assert result["per_class"]["bird"]["support"] == 0


def test_regression_metrics_match_hand_computation() -> None:
    # errors 0, 0, 0, 2: MAE 0.5, MSE 1, RMSE 1; mean 2.5, SS_tot 5, SS_res 4, R² 0.2
    y_true, y_pred = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 2.0, 3.0, 6.0])

    result = evaluate_predictions("regression", y_true, y_pred, None)

    assert (result["mae"], result["rmse"], result["r2"], result["n"]) == (0.5, 1.0, pytest.approx(0.2), 4)
    assert "per_target" not in result


def test_regression_reports_each_target() -> None:
    y_true = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]])
    y_pred = np.array([[1.0, 13.0], [2.0, 20.0], [3.0, 30.0]])

    result = evaluate_predictions("regression", y_true, y_pred, ["a", "b"])

    assert result["per_target"]["a"] == {"mae": 0.0, "rmse": 0.0, "r2": 1.0}
    assert result["per_target"]["b"]["mae"] == pytest.approx(1.0)
    assert result["per_target"]["b"]["rmse"] == pytest.approx(math.sqrt(3.0))
    assert result["mae"] == pytest.approx(0.5)  # 3 / 6 values
    assert result["rmse"] == pytest.approx(math.sqrt(9 / 6))


@pytest.mark.parametrize(
    ("task", "y_true", "y_pred", "names", "shown"),
    [
        ("classification", np.array([0, 5]), np.eye(3)[[0, 1]], None, "[5]"),
        ("classification", np.array([0, 1]), np.eye(3)[[0, 1]], ["a", "b"], "['a', 'b']"),
        ("classification", np.array([0, 1]), np.array([[2.0, -1.0], [0.0, 1.0]]), None, "min=-1"),
        ("regression", np.zeros(3), np.zeros(4), None, "(3, 1)"),
        ("forecast", np.zeros(3), np.zeros(3), None, "'forecast'"),
    ],
)
def test_bad_inputs_are_rejected_showing_the_bad_value(
    task: str, y_true: np.ndarray, y_pred: np.ndarray, names: list[str] | None, shown: str
) -> None:
    with pytest.raises(ValueError) as info:
        evaluate_predictions(task, y_true, y_pred, names)
    assert shown in str(info.value)


# --- fake run directories ----------------------------------------------------------------------


def _config(name: str, learning_rate: float, plots: bool) -> dict[str, Any]:
    return {
        "run": {"name": name, "output_dir": "runs", "seed": 42},
        "data": {"dataset": "digits", "test_split": 0.15},
        "model": {"name": "mlp", "hidden_units": [64]},
        "training": {"epochs": 3, "optimizer": {"name": "adam", "learning_rate": learning_rate}},
        "report": {"html": True, "plots": plots},
    }


def _epoch_lines(task: str, epochs: int = 3) -> list[str]:
    metric = "accuracy" if task == "classification" else "mae"
    return [
        json.dumps(
            {
                "epoch": e,
                "step": 10 * e,
                "loss": 1.0 / e,
                metric: 1 - 1 / (e + 1),
                "val_loss": 1.2 / e,
                f"val_{metric}": 0.9 - 1 / (e + 2),
                "lr": 0.001,
                "epoch_time_s": 1.5,
                "samples_per_s": 2000.0,
            }
        )
        for e in range(1, epochs + 1)
    ]


def make_run(
    root: Path,
    name: str,
    task: str = "classification",
    learning_rate: float = 0.001,
    classes: list[str] | None = None,
    metrics_tail: str = "",
    plots: bool = False,
) -> Path:
    """A run directory as the training code leaves it, then `write_report` as it calls it.

    Plots are off unless a test looks at them: drawing is most of a report's cost.
    """
    run_dir = root / name.replace("<", "_").replace(">", "_").replace("/", "_")
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(f"run:\n  name: {name!r}\n")
    (run_dir / "metrics.jsonl").write_text("\n".join(_epoch_lines(task)) + "\n" + metrics_tail)
    rng = np.random.default_rng(0)
    y_true: np.ndarray
    y_pred: np.ndarray
    if task == "classification":
        names = classes or CLASSES
        y_true = np.arange(60) % len(names)
        scores = rng.dirichlet(np.ones(len(names)), size=60)
        scores[np.arange(60), y_true] += 1.0
        y_pred = (scores / scores.sum(axis=1, keepdims=True)).astype(np.float32)
    else:
        names = ["price"]
        y_true = rng.normal(size=(60, 1))
        y_pred = y_true + rng.normal(scale=0.1, size=(60, 1))
    np.savez(run_dir / "test_predictions.npz", y_true=y_true, y_pred=y_pred)
    write_report(
        run_dir,
        task=task,
        evaluation=evaluate_predictions(task, y_true, y_pred, names),
        training={
            "epochs_run": 3,
            "best_epoch": 3,
            "stopped_early": False,
            "stop_reason": "epochs done",
            "wall_time_s": 12.5,
            "train_samples_per_s": 2000.0,
            "global_batch_size": 64,
            "replicas": 2,
            "strategy": "mirrored",
            "final_lr": 0.0005,
        },
        data={
            "dataset": "digits" if task == "classification" else "housing",
            "task": task,
            "n_train": 400,
            "n_val": 60,
            "n_test": 60,
            "class_names": names if task == "classification" else None,
            "target_names": names if task == "regression" else None,
            "feature_names": ["pixel_0", "pixel_1"],
            "notes": {"rows_dropped_missing": 12},
        },
        model={
            "name": "mlp",
            "parameters": 12345,
            "trainable_parameters": 12000,
            "input_shape": [None, 2],
            "output_shape": [None, len(names)],
        },
        environment={
            "versions": {"python": "3.11.2", "numpy": np.__version__, "harness": "0.1.0"},
            "host": "node1",
            "git_commit": "abc1234",
            "devices": ["/CPU:0"],
        },
        config=_config(name, learning_rate, plots),
        command=f"harness train {run_dir}/config.yaml run.name=repro",
    )
    return run_dir


# --- write_report / render_report --------------------------------------------------------------


def test_write_report_writes_every_file_atomically_with_the_schema_version(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, "digits-mlp")

    report = json.loads((run_dir / "report.json").read_text())

    assert report["schema_version"] == REPORT_SCHEMA_VERSION
    assert report["run"]["name"] == "digits-mlp"
    assert report["run"]["seed"] == 42 and report["run"]["git_commit"] == "abc1234"
    assert report["run"]["created"].endswith("+00:00")
    assert report["test"]["accuracy"] == 1.0
    assert {"report.md", "report.html", "model_card.md"} <= {p.name for p in run_dir.iterdir()}
    assert not [p.name for p in run_dir.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_write_report_writes_only_through_the_atomic_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    targets: list[str] = []
    original = atomic.atomic_write

    def recording(target: Path, writer: Any, binary: bool = False) -> None:
        targets.append(Path(target).name)
        original(target, writer, binary)

    monkeypatch.setattr(atomic, "atomic_write", recording)
    make_run(tmp_path, "digits-mlp", plots=True)

    assert sorted(targets) == ["model_card.md", "report.html", "report.json", "report.md"]


def test_report_md_has_headline_tables_notes_and_reproduce_command(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, "digits-mlp")

    md = (run_dir / "report.md").read_text()

    assert "| accuracy | 1.0000 |" in md
    assert "| class | precision | recall | F1 | support |" in md
    assert "| cat | 20 | 0 | 0 |" in md  # confusion matrix counts row
    assert "rows dropped missing: 12" in md
    assert "| wall time | 12.5 s |" in md
    assert "| global batch size | 64 |" in md
    assert f"harness train {run_dir}/config.yaml run.name=repro" in md
    assert "| numpy | " + np.__version__ + " |" in md


def test_report_html_embeds_plots_and_escapes_user_strings(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, "<script>alert(1)</script>", plots=True)

    html = (run_dir / "report.html").read_text()

    assert html.count("data:image/png;base64,") == 3  # learning curves, confusion matrix, ROC
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<link" not in html and 'src="http' not in html  # self-contained


def test_regression_report_has_residual_and_predicted_vs_true_plots(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, "housing", task="regression", plots=True)

    html = (run_dir / "report.html").read_text()
    md = (run_dir / "report.md").read_text()

    assert html.count("data:image/png;base64,") == 3  # learning curves, predicted vs true, residuals
    assert "Residuals on the test split" in html
    assert "| MAE |" in md and "| R² |" in md
    assert "Confusion matrix" not in md


def test_render_report_rebuilds_md_and_html_after_deletion(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, "digits-mlp")
    render_report(run_dir)
    md_before = (run_dir / "report.md").read_text()
    (run_dir / "report.md").unlink()
    (run_dir / "report.html").unlink()

    render_report(run_dir)

    assert (run_dir / "report.md").read_text() == md_before
    assert "data:image/png;base64," in (run_dir / "report.html").read_text()


def test_render_report_without_html_writes_only_markdown(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, "digits-mlp")
    (run_dir / "report.html").unlink()

    render_report(run_dir, config_html=False)

    assert (run_dir / "report.md").is_file()
    assert not (run_dir / "report.html").exists()


def test_render_report_survives_missing_metrics_and_predictions(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, "digits-mlp")
    (run_dir / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "loss": 0.5}) + "\n")
    (run_dir / "test_predictions.npz").unlink()

    render_report(run_dir)
    html = (run_dir / "report.html").read_text()
    (run_dir / "metrics.jsonl").unlink()
    render_report(run_dir)

    assert html.count("data:image/png;base64,") == 2  # loss-only curves and the confusion matrix
    assert (run_dir / "report.html").read_text().count("data:image/png;base64,") == 1
    assert "Report problems" not in html


def test_many_classes_give_a_heatmap_and_no_markdown_matrix(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, "cifar100", classes=[f"class_{i}" for i in range(100)], plots=True)

    md = (run_dir / "report.md").read_text()
    html = (run_dir / "report.html").read_text()

    assert "100 classes are too many for a readable table" in md
    assert "Confusion matrix, each row normalised" in html
    assert "Report problems" not in html


def test_truncated_last_metrics_line_is_tolerated(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_dir = make_run(tmp_path, "killed", metrics_tail='{"epoch": 4, "step": 40, "lo')

    history = read_history(run_dir)

    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert "| 3 | 0.3333 |" in (run_dir / "report.md").read_text()


def test_corrupt_metrics_line_in_the_middle_warns_and_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1, "loss": 1.0}\nnot json\n{"epoch": 2, "loss": 0.5}\n')

    with pytest.warns(UserWarning, match="metrics.jsonl:2"):
        history = read_history(tmp_path)

    assert history == [{"epoch": 1, "loss": 1.0}, {"epoch": 2, "loss": 0.5}]


def test_model_card_describes_io_loading_and_reproduction(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, "digits-mlp")
    (run_dir / "model_card.md").unlink()

    write_model_card(run_dir)
    card = (run_dir / "model_card.md").read_text()

    assert "# Model card: mlp" in card
    assert "| parameters | 12,345 |" in card
    assert "| classes | 3: cat, dog, bird |" in card
    assert "| input features | 2: pixel_0, pixel_1 |" in card
    assert f"keras.saving.load_model({str(run_dir.resolve() / 'model.keras')!r})" in card
    assert "preprocessing.json" in card
    assert f"harness train {run_dir}/config.yaml run.name=repro" in card
    assert "## Limitations" in card


# --- load_report -------------------------------------------------------------------------------


def test_load_report_rejects_a_missing_report(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="has no report.json") as info:
        load_report(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_load_report_rejects_a_missing_run_directory(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="does not exist"):
        load_report(tmp_path / "nope")


def test_load_report_rejects_corrupt_json(tmp_path: Path) -> None:
    (tmp_path / "report.json").write_text('{"schema_version": 1, "run": ')

    with pytest.raises(RunDirError, match="is not valid JSON") as info:
        load_report(tmp_path)
    assert str(tmp_path / "report.json") in str(info.value)


def test_load_report_names_both_schema_versions_on_mismatch(tmp_path: Path) -> None:
    other = REPORT_SCHEMA_VERSION + 98
    (tmp_path / "report.json").write_text(json.dumps({"schema_version": other}))

    with pytest.raises(RunDirError) as info:
        load_report(tmp_path)

    assert f"schema_version {other}" in str(info.value)
    assert f"schema_version {REPORT_SCHEMA_VERSION}" in str(info.value)


def test_write_report_rejects_a_missing_run_directory(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="does not exist"):
        write_report(
            tmp_path / "nope",
            task="regression",
            evaluation={},
            training={},
            data={},
            model={},
            environment={},
            config={},
            command="",
        )


# --- gather_reports ----------------------------------------------------------------------------


def test_gather_reports_compares_runs_and_names_the_differing_config_key(tmp_path: Path) -> None:
    first = make_run(tmp_path / "runs", "lr-small", learning_rate=0.001)
    second = make_run(tmp_path / "runs", "lr-large", learning_rate=0.01)

    md_path = gather_reports([first, second], tmp_path / "compare")

    md = md_path.read_text()
    comparison = json.loads((tmp_path / "compare" / "comparison.json").read_text())
    assert md_path == tmp_path / "compare" / "comparison.md"
    assert comparison["differing_config_keys"] == ["training.optimizer.learning_rate"]
    assert [row["run"] for row in comparison["runs"]] == ["lr-small", "lr-large"]
    assert comparison["runs"][1]["best_val"]["val_loss"] == pytest.approx(0.4)
    assert "| lr-small | classification | digits | mlp |" in md
    assert "training.optimizer.learning_rate=0.01" in md
    assert "MAE" not in md  # no run has it, so no empty column
    assert (tmp_path / "compare" / "comparison.html").read_text().count("data:image/png;base64,") == 2


def test_comparison_shows_the_distributed_setup_when_only_it_differs(tmp_path: Path) -> None:
    """A 1-worker and a 2-worker run of one config differ in strategy, replicas and global batch."""
    runs = [make_run(tmp_path / "runs", name) for name in ("one", "two")]
    for run_dir, (strategy, replicas) in zip(runs, [("single", 1), ("multiworker", 2)], strict=True):
        report = json.loads((run_dir / "report.json").read_text())
        report["environment"]["distribute"] = {"strategy": strategy, "replicas": replicas}
        report["environment"].setdefault("versions", {})["harness"] = "0.1.0"
        report["training"]["global_batch_size"] = 32 * replicas
        (run_dir / "report.json").write_text(json.dumps(report))

    md = gather_reports(runs, tmp_path / "compare").read_text()

    comparison = json.loads((tmp_path / "compare" / "comparison.json").read_text())
    assert comparison["differing_config_keys"] == ["setup.global_batch", "setup.replicas", "setup.strategy"]
    assert "setup.global_batch=64; setup.replicas=2; setup.strategy=multiworker" in md


def test_gather_reports_allows_mixed_tasks(tmp_path: Path) -> None:
    runs = [make_run(tmp_path, "digits-mlp"), make_run(tmp_path, "housing", task="regression")]

    md = gather_reports(runs, tmp_path / "compare").read_text()

    header = next(line for line in md.splitlines() if line.startswith("| run |"))
    assert "| accuracy |" in header and "| MAE |" in header
    regression_row = next(line for line in md.splitlines() if line.startswith("| housing |"))
    assert "| regression | housing | mlp |  |" in regression_row  # accuracy blank for regression


def test_gather_reports_names_the_run_without_a_report(tmp_path: Path) -> None:
    good = make_run(tmp_path, "digits-mlp")
    bad = tmp_path / "crashed-run"
    bad.mkdir()

    with pytest.raises(RunDirError, match="crashed-run"):
        gather_reports([good, bad], tmp_path / "compare")
    assert not (tmp_path / "compare").exists()


# --- imports -----------------------------------------------------------------------------------


def test_evaluate_does_not_import_tensorflow_or_keras() -> None:
    code = (
        "import sys, harness.evaluate\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))\n"
        "print(heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert result.stdout.strip() == "[]"


def test_a_failed_comparison_write_names_the_file_and_leaves_no_half_made_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = [make_run(tmp_path, "a"), make_run(tmp_path, "b")]
    real_write = atomic.write_text

    def full_disk(path: Path, text: str) -> None:
        if path.name == "comparison.md":
            raise OSError(28, "No space left on device")
        real_write(path, text)

    monkeypatch.setattr(atomic, "write_text", full_disk)
    with pytest.raises(RunDirError, match=r"cannot write .*new/comparison\.md: No space left on device"):
        gather_reports(runs, tmp_path / "out" / "new")
    assert not (tmp_path / "out").exists()

    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "comparison.json").write_text("{}")  # an older comparison, no marker
    with pytest.raises(RunDirError):
        gather_reports(runs, tmp_path / "kept")
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["comparison.json"]  # only what it added went
