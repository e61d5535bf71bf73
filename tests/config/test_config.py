"""Config loading, overrides and the errors users see for bad config input."""

from __future__ import annotations

import codecs
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from harness.config import Config, clip, echo, load_config, parse_override, to_yaml, validate_config
from harness.errors import ConfigError
from tests.conftest import CONFIGS


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def test_packaged_default_equals_configs_default() -> None:
    assert load_config(None) == Config()
    assert load_config(CONFIGS / "default.yaml") == Config()


# clusters.yaml holds Slurm cluster profiles, not an experiment: tests/slurm/test_submit.py loads it.
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
        ("training.optimizer.name=adamm", "training.optimizer.name", "did you mean 'adam'"),
        ("distribute.gradient_compression=fp8", "distribute.gradient_compression", "'none' or 'fp16'"),
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


# --- numbers: no booleans, no inf/NaN, seeds NumPy accepts -------------------------------------


def _leaves(model: type[BaseModel] = Config, prefix: str = "") -> list[tuple[str, Any]]:
    """Every non-section key of the schema with its annotation (pydantic keeps metadata apart)."""
    leaves: list[tuple[str, Any]] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            leaves.extend(_leaves(annotation, f"{prefix}{name}."))
        else:
            leaves.append((prefix + name, annotation))
    return leaves


def _mentions(annotation: Any, kinds: tuple[type, ...]) -> bool:
    if annotation in kinds:
        return True
    return any(_mentions(arg, kinds) for arg in typing.get_args(annotation))


def _with_bools(annotation: Any) -> Any:
    """A value of the annotation's shape with `True` wherever a number goes."""
    options = [arg for arg in typing.get_args(annotation) if arg is not type(None)] or [annotation]
    if typing.get_origin(annotation) is tuple:
        return [True] * len(typing.get_args(annotation))
    if typing.get_origin(annotation) is list:
        return [True]
    if len(options) == 1 and options[0] is not annotation:
        return _with_bools(options[0])
    return True


NUMBER_KEYS = [key for key, annotation in _leaves() if _mentions(annotation, (int, float))]
FLOAT_KEYS = [key for key, annotation in _leaves() if _mentions(annotation, (float,))]
ANNOTATIONS = dict(_leaves())


def test_the_schema_walk_sees_the_numbers() -> None:
    assert {"training.epochs", "model.filters", "data.image_size", "model.freeze", "slurm.mem_gb"} <= set(
        NUMBER_KEYS
    )
    assert {"training.optimizer.learning_rate", "distribute.timeout_s", "data.test_split"} <= set(FLOAT_KEYS)


@pytest.mark.parametrize("key", NUMBER_KEYS)
def test_every_number_key_refuses_a_boolean(key: str) -> None:
    value = _with_bools(ANNOTATIONS[key])
    with pytest.raises(ConfigError) as err:
        validate_config(_nested(key, value), "exp.yaml")
    text = str(err.value)
    assert key in text and "not a boolean" in text and "True" in text


@pytest.mark.parametrize("key", FLOAT_KEYS)
@pytest.mark.parametrize("spelling", [".inf", "-.inf", ".nan", ".NaN", "inf", "nan", "-Infinity"])
def test_every_float_key_refuses_non_finite(key: str, spelling: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"{key}={spelling}"])
    text = str(err.value)
    assert key in text and "finite number" in text and "(command line)" in text


def test_non_finite_in_a_file_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "training:\n  epochs: 2\n  optimizer:\n    learning_rate: .inf\n")
    with pytest.raises(ConfigError, match=r"training.optimizer.learning_rate \(line 4\): Input should be a finite"):
        load_config(path)


def test_boolean_in_a_list_names_the_item_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "model:\n  filters:\n    - 8\n    - true\n")
    with pytest.raises(ConfigError, match=r"model.filters\[1\] \(line 4\): must be a number, not a boolean"):
        load_config(path)


def test_numbers_still_parse_from_yaml_spellings() -> None:
    config = load_config(None, ["training.optimizer.learning_rate=1e-3", "training.epochs=3", "model.freeze=2"])
    assert config.training.optimizer.learning_rate == 0.001
    assert config.training.epochs == 3 and config.model.freeze == 2
    assert load_config(None, ["model.freeze=[conv1, dense]"]).model.freeze == ["conv1", "dense"]


@pytest.mark.parametrize(("seed", "ok"), [(0, True), (2**32 - 1, True), (2**32, False), (-1, False), (10**30, False)])
def test_seed_fits_numpy_and_scikit_learn(seed: int, ok: bool) -> None:
    if ok:
        assert load_config(None, [f"run.seed={seed}"]).run.seed == seed
        return
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"run.seed={seed}"])
    assert "run.seed" in str(err.value) and str(seed) in str(err.value)


def _nested(key: str, value: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return raw


# --- run.name and run.output_dir ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "why"),
    [
        (".", "names an existing folder"),
        ("..", "names an existing folder"),
        ("", "empty"),
        ("   ", "empty"),
        ("/tmp/victim", "path separator"),
        ("a/b", "path separator"),
        ("../x", "path separator"),
        ("a\\b", "path separator"),
        ("a\nb", "control character"),
        ("x" * 256, "longer than 255 bytes"),
        ("é" * 128, "longer than 255 bytes"),
    ],
)
def test_run_name_is_one_plain_path_component(name: str, why: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate_config({"run": {"name": name}}, "exp.yaml")
    text = str(err.value)
    assert "run.name" in text and why in text and "one plain folder name" in text
    assert f"Received: run.name={echo(name)}" in text


@pytest.mark.parametrize("name", ["digits-cnn", "a.b", "..a", "résumé", "run 2", "x" * 255])
def test_plain_run_names_are_accepted(name: str) -> None:
    assert validate_config({"run": {"name": name}}, "exp.yaml").run.name == name


@pytest.mark.parametrize("output_dir", ["", "  "])
def test_output_dir_is_not_empty(output_dir: str) -> None:
    with pytest.raises(ConfigError, match=r"run.output_dir: must name a folder"):
        validate_config({"run": {"output_dir": output_dir}}, "exp.yaml")


def test_nul_in_any_string_is_refused() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, ['data.path="a\\0b"', 'slurm.setup=["ok", "x\\0"]'])
    text = str(err.value)
    assert "data.path (command line): contains a NUL" in text and "slurm.setup[1]" in text


# --- cross-field rules and other ranges -----------------------------------------------------------


def test_xla_with_deterministic_ops_is_refused_naming_both_keys() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, ["training.jit_compile=true"])
    text = str(err.value)
    assert "training.jit_compile=true" in text and "run.deterministic=true" in text
    assert "Set run.deterministic=false to use XLA" in text
    config = load_config(None, ["training.jit_compile=true", "run.deterministic=false"])
    assert config.training.jit_compile and not config.run.deterministic


def test_empty_feature_list_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"data.features \(command line\): List should have at least 1 item"):
        load_config(None, ["data.features=[]"])


# --- reading the file ------------------------------------------------------------------------------


def test_duplicate_key_names_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "training:\n  epochs: 3\n  batch_size: 4\n  epochs: 5\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert str(path) in text and "training.epochs twice" in text and "lines 2 and 4" in text


def test_duplicate_section_names_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "run:\n  name: a\ndata:\n  dataset: iris\nrun:\n  seed: 1\n")
    with pytest.raises(ConfigError, match=r"has the key run twice, at lines 1 and 5"):
        load_config(path)


def test_duplicate_key_inside_a_list_item(tmp_path: Path) -> None:
    path = write(tmp_path, "model:\n  kwargs:\n    layers:\n      - {units: 3, units: 4}\n")
    with pytest.raises(ConfigError, match=r"model.kwargs.layers\[0\].units twice, at line 4, columns 10 and 20"):
        load_config(path)


def test_duplicate_key_in_an_override_value() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, ["model.kwargs={a: 1, a: 2}"])
    text = str(err.value)
    assert "override model.kwargs=" in text and "model.kwargs.a twice" in text


def test_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "model:\n  kwargs:\n    base: &base {units: 3, act: relu}\n    top: {<<: *base, units: 4}\n",
    )
    assert load_config(path).model.kwargs["top"] == {"units": 4, "act": "relu"}


def test_non_utf8_file_names_the_byte_offset(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"run:\n  name: caf\xe9\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert str(path) in text and "not UTF-8" in text and "byte offset 16 (line 2)" in text and "0xe9" in text


def test_utf8_with_byte_order_mark_loads(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(codecs.BOM_UTF8 + "run:\n  name: café\n".encode())
    assert load_config(path).run.name == "café"


def test_control_character_is_reported_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "run:\n  name: a\x07b\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line 2: character .* \(U\+0007\) is not allowed"):
        load_config(path)


def test_directory_is_not_reported_as_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory, not a file"):
        load_config(tmp_path)


def test_unreadable_file_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "run: {}\n")

    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(ConfigError, match=r"exp.yaml cannot be read: permission denied"):
        load_config(path)


# --- alias bombs, deep nesting, and messages that stay short ----------------------------------------

def laughs(levels: int, leaf: str = "lol") -> list[str]:
    """`&l0 [lol x9]`, `&l1 [*l0 x9]`, ...: a few hundred bytes that expand to 9**levels values."""
    items = [", ".join([leaf] * 9)] + [", ".join([f"*l{i - 1}"] * 9) for i in range(1, levels)]
    return [f"&l{i} [{body}]" for i, body in enumerate(items)]


def test_alias_bomb_in_a_file_is_refused_quickly_and_briefly(tmp_path: Path) -> None:
    body = "".join(f"    l{i}: {value}\n" for i, value in enumerate(laughs(9)))
    path = write(tmp_path, "model:\n  kwargs:\n" + body)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert str(path) in text and "more than 100000 values once its aliases (*name) are expanded" in text
    assert len(text) < 500


def test_alias_bomb_in_an_override_is_refused() -> None:
    value = "[" + ", ".join(laughs(7, leaf="1")) + "]"
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"model.kwargs={{x: {value}}}"])
    assert "once its aliases (*name) are expanded" in str(err.value) and len(str(err.value)) < 700


def test_modest_aliases_are_fine(tmp_path: Path) -> None:
    path = write(tmp_path, "model:\n  filters: &f [8, 16]\n  kwargs: {copy: *f}\n")
    assert load_config(path).model.kwargs == {"copy": [8, 16]}


def test_recursive_alias_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="refers to a node containing it"):
        load_config(write(tmp_path, "model:\n  kwargs: &k {self: *k}\n"))


@pytest.mark.parametrize("text", ["a: " + "[" * 2000 + "]" * 2000, "a: " + "{b: " * 60 + "1" + "}" * 60])
def test_deep_nesting_is_refused_without_recursion_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="nests deeper than 50 levels"):
        load_config(write(tmp_path, text + "\n"))


def test_chained_aliases_cannot_nest_deeply(tmp_path: Path) -> None:
    chain = "".join(f"  a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 80))
    with pytest.raises(ConfigError, match="nests deeper than 50 levels once its aliases"):
        load_config(write(tmp_path, "model:\n  kwargs:\n  a0: &a0 [1]\n" + chain))


def test_too_many_values_without_aliases() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"model.kwargs={{x: [{', '.join(['1'] * 100_001)}]}}"])
    text = str(err.value)
    assert "holds more than 100000 values (the value" in text and "aliases" not in text and len(text) < 700


def test_huge_values_are_echoed_briefly() -> None:
    big = "x" * 1_000_000
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"run.name={big}", f"training.epochs=[{', '.join(['1'] * 50_000)}]", f"run.{big}=1"])
    text = str(err.value)
    assert len(text) < 2000
    assert "(1000000 characters)" in text and "training.epochs" in text and "unknown key run.xxx" in text


def test_many_problems_are_listed_up_to_a_limit(tmp_path: Path) -> None:
    path = write(tmp_path, "model:\n  filters: [" + ", ".join(["true"] * 500) + "]\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert text.count("must be a number, not a boolean") == 20 and "... and 480 more problems" in text


def test_echo_and_clip() -> None:
    assert echo("abc") == "'abc'"
    assert echo(True) == "True"
    long = echo("y" * 10_000)
    assert len(long) < 260 and long.endswith("(10000 characters)")
    nested: list[Any] = [1]
    for _ in range(30):
        nested = [nested, nested]
    assert len(echo(nested)) <= 203
    assert clip("short") == "short" and clip("z" * 300) == "z" * 200 + "..."


def test_override_lines_replace_the_file_lines_below_them(tmp_path: Path) -> None:
    path = write(tmp_path, "model:\n  filters: [8, 16]\n")
    with pytest.raises(ConfigError, match=r"model.filters\[0\] \(command line\)"):
        load_config(path, ["model.filters=[0]"])


def test_path_too_long_to_be_a_file_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot be read: File name too long"):
        load_config(tmp_path / ("x" * 300 + ".yaml"))
