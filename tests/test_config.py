"""Config loading, overrides and the errors users see for bad config input."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.config import Config, load_config, parse_override, to_yaml
from harness.errors import ConfigError

from .conftest import CONFIGS


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def test_packaged_default_equals_configs_default() -> None:
    assert load_config(None) == Config()
    assert load_config(CONFIGS / "default.yaml") == Config()


# clusters.yaml holds Slurm cluster profiles, not an experiment: tests/test_submit.py loads it.
EXPERIMENTS = sorted(p for p in CONFIGS.glob("*.yaml") if p.name != "clusters.yaml")


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path: Path) -> None:
    config = load_config(path)
    assert config.run.name


def test_overrides_are_typed_and_nested() -> None:
    config = load_config(
        None,
        [
            "training.epochs=5",
            "model.name=mlp",
            "model.hidden_units=[8, 4]",
            "training.optimizer.clipnorm=null",
            "run.name=x",
        ],
    )
    assert config.training.epochs == 5
    assert config.model.name == "mlp"
    assert config.model.hidden_units == [8, 4]
    assert config.run.name == "x"


def test_resolved_yaml_round_trips(tmp_path: Path) -> None:
    config = load_config(None, ["training.epochs=3", "data.dataset=iris"])
    path = tmp_path / "resolved.yaml"
    path.write_text(to_yaml(config))
    assert load_config(path) == config


def test_unknown_key_names_file_line_and_closest_key(tmp_path: Path) -> None:
    path = write(tmp_path, "run:\n  name: a\ntraining:\n  epoch: 5\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert str(path) in text
    assert "training.epoch" in text and "line 4" in text
    assert "Did you mean training.epochs?" in text


def test_unknown_section_suggests_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Did you mean training"):
        load_config(write(tmp_path, "trainin:\n  epochs: 5\n"))


@pytest.mark.parametrize(
    ("override", "key", "allowed"),
    [
        ("training.epochs=0", "training.epochs", "greater than 0"),
        ("training.batch_size=-4", "training.batch_size", "greater than 0"),
        ("training.epochs=many", "training.epochs", "valid integer"),
        ("model.dropout=1.5", "model.dropout", "less than 1"),
        ("training.optimizer.name=adamax", "training.optimizer.name", "'adam'"),
    ],
)
def test_bad_values_name_key_value_and_allowed(override: str, key: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    text = str(err.value)
    assert key in text and allowed in text
    assert "Received" in text and "(command line)" in text


def test_wrong_type_from_file_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "training:\n  batch_size: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"training.batch_size \(line 2\)"):
        load_config(path)


def test_malformed_yaml_reports_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "run:\n  name: [unclosed\ntraining:\n  epochs: 3\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line \d+, column \d+"):
        load_config(path)


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Path("/nonexistent/exp.yaml"))


def test_non_mapping_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_empty_file_is_the_default(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")) == Config()


def test_cross_section_rules() -> None:
    with pytest.raises(ConfigError, match="data.path is required"):
        load_config(None, ["data.dataset=csv"])
    with pytest.raises(ConfigError, match="data.target"):
        load_config(None, ["data.dataset=csv", "data.path=x.csv"])
    with pytest.raises(ConfigError, match="training data"):
        load_config(None, ["data.validation_split=0.5", "data.test_split=0.45"])


@pytest.mark.parametrize("item", ["epochs", "=5", "training..epochs=3"])
def test_malformed_override(item: str) -> None:
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override(item)


def test_override_into_scalar_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="training.epochs is not a section"):
        load_config(write(tmp_path, "training:\n  epochs: 3\n"), ["training.epochs.max=3"])
    with pytest.raises(ConfigError, match="training.epochs: Input should be a valid integer"):
        load_config(None, ["training.epochs.max=3"])


def test_config_is_frozen() -> None:
    config = Config()
    with pytest.raises(Exception, match="frozen"):
        config.training.epochs = 3  # type: ignore[misc]


def test_override_value_parsed_as_yaml() -> None:
    assert parse_override("a.b=[1, 2]") == ("a.b", [1, 2])
    assert parse_override("a.b=null") == ("a.b", None)
    assert parse_override("a.b=x: y: z") == ("a.b", "x: y: z")
    assert yaml.safe_load("1e-3") == "1e-3"  # YAML 1.1 quirk the loader must not trip over
    assert (
        load_config(None, ["training.optimizer.learning_rate=1e-3"]).training.optimizer.learning_rate == 0.001
    )
