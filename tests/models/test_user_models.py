"""A model as Keras users write it: builder signatures, compiled models, logits, imports, and
batch normalisation that makes 2 replicas x 16 compute what 1 x 32 does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import keras
import numpy as np
import pytest

from harness import cli
from harness.config.schema import ModelConfig
from harness.errors import ModelError
from harness.imports import import_object, import_roots, importable
from harness.models import build_model, describe_model
from harness.models.build import compiled_setup, describe_object, has_logits_head
from tests.conftest import THREADS, needs_horovod

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def user_module(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """Write modules with unique names into tmp_path/code (not on sys.path); forget them afterwards."""
    folder = tmp_path / "code"
    folder.mkdir()
    names: list[str] = []

    def write(source: str) -> str:
        name = f"user_builders_{uuid.uuid4().hex[:8]}"
        (folder / f"{name}.py").write_text(textwrap.dedent(source))
        names.append(name)
        return name

    with importable([folder]):
        yield write
    for name in names:
        sys.modules.pop(name, None)


def build(name: str, shape: tuple[int, ...] = (28, 28), outputs: int = 10, **kwargs: Any) -> keras.Model:
    cfg = ModelConfig(name=name, kwargs=kwargs)
    return build_model(cfg, input_shape=shape, num_outputs=outputs, task="classification")


# --- builders are called with what they accept ------------------------------------------------

BUILDERS = """
import keras

def build_and_compile_cnn_model():
    # TensorFlow's "Multi-worker training with Keras" tutorial, unchanged
    model = keras.Sequential([
        keras.layers.InputLayer(input_shape=(28, 28)),
        keras.layers.Reshape(target_shape=(28, 28, 1)),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dense(10),
    ])
    model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        optimizer=keras.optimizers.SGD(learning_rate=0.001),
        metrics=["accuracy"],
    )
    return model

def _mlp(input_shape, num_outputs, units=4):
    inputs = keras.Input(input_shape)
    x = keras.layers.Dense(units, name="hidden")(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, keras.layers.Dense(num_outputs, activation="softmax")(x))

def outputs_only(num_outputs):
    return _mlp((28, 28), num_outputs)

def positional_only(input_shape, num_outputs, /):
    return _mlp(input_shape, num_outputs)

def shape_and_task(input_shape, task):
    assert task == "classification"
    return _mlp(input_shape, 10)

def everything(**kwargs):
    model = _mlp(kwargs["input_shape"], kwargs["num_outputs"], kwargs.get("units", 4))
    model.received = sorted(kwargs)
    return model

def with_units(input_shape, num_outputs, *, units):
    return _mlp(input_shape, num_outputs, units)

def fixed_outputs():
    return _mlp((28, 28), 2)

def fails(input_shape):
    raise ValueError("bad layer size")
"""


def test_zero_argument_tutorial_builder_keeps_its_compile_state(user_module: Callable[[str], str]) -> None:
    model = build(f"{user_module(BUILDERS)}:build_and_compile_cnn_model")
    setup = compiled_setup(model)
    assert setup is not None
    assert setup.loss_text == "SparseCategoricalCrossentropy(from_logits=True)"
    assert setup.optimizer_text == "SGD(learning_rate=0.001)"
    assert setup.metrics_text == ("accuracy",)
    assert setup.optimizer is model.optimizer
    assert has_logits_head(model, "classification")
    described = describe_model(model, ModelConfig(name="tutorial:build"))
    assert described["compiled_with"] == {
        "loss": "SparseCategoricalCrossentropy(from_logits=True)",
        "optimizer": "SGD(learning_rate=0.001)",
        "metrics": ["accuracy"],
    }
    assert json.loads(json.dumps(described)) == described


@pytest.mark.parametrize(
    ("function", "check"),
    [
        ("outputs_only", lambda m: m.output_shape == (None, 10)),
        ("shape_and_task", lambda m: m.input_shape == (None, 28, 28)),
        ("everything", lambda m: m.received == ["input_shape", "num_outputs", "task", "units"]),
        ("with_units", lambda m: m.get_layer("hidden").units == 7),
    ],
)
def test_builder_receives_the_subset_it_names(
    user_module: Callable[[str], str], function: str, check: Callable[[keras.Model], bool]
) -> None:
    kwargs = {"units": 7} if function in ("everything", "with_units") else {}
    assert check(build(f"{user_module(BUILDERS)}:{function}", **kwargs))


@pytest.mark.parametrize(
    ("function", "kwargs", "words"),
    [
        ("with_units", {}, ["requires units", "model.kwargs.units", "with_units(input_shape, num_outputs, *, units)"]),
        ("outputs_only", {"units": 3}, ["does not accept model.kwargs units", "outputs_only(num_outputs)"]),
        ("everything", {"input_shape": [1]}, ["must not set input_shape"]),
        ("positional_only", {}, ["input_shape, num_outputs are positional-only", "remove the `/`"]),
    ],
)
def test_signature_mismatch_names_signature_and_offer(
    user_module: Callable[[str], str], function: str, kwargs: dict[str, Any], words: list[str]
) -> None:
    with pytest.raises(ModelError) as info:
        build(f"{user_module(BUILDERS)}:{function}", **kwargs)
    message = str(info.value)
    for word in [*words, "input_shape=(28, 28)", "num_outputs=10", "task='classification'"]:
        assert word in message, message


def test_zero_argument_model_that_does_not_fit_the_data(user_module: Callable[[str], str]) -> None:
    name = user_module(BUILDERS)
    with pytest.raises(ModelError) as info:
        build(f"{name}:build_and_compile_cnn_model", shape=(28, 28, 3))
    message = str(info.value)
    assert "(28, 28)" in message and "(28, 28, 3)" in message and "take `input_shape`" in message
    with pytest.raises(ModelError) as info:
        build(f"{name}:fixed_outputs")
    message = str(info.value)
    assert "must end in 10 outputs" in message and "(None, 2)" in message and "take `num_outputs`" in message


def test_error_inside_builder_names_the_user_line(user_module: Callable[[str], str]) -> None:
    name = user_module(BUILDERS)
    with pytest.raises(ModelError, match=rf"ValueError: bad layer size \(at .*{name}\.py line \d+\)"):
        build(f"{name}:fails")


# --- compiled models and logits ---------------------------------------------------------------


def dense_model(*head: keras.layers.Layer, functional: bool = False) -> keras.Model:
    if not functional:
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), *head])
    inputs = keras.Input((4,))
    x = keras.layers.Dense(8, activation="relu")(inputs)
    for layer in head:
        x = layer(x)
    return keras.Model(inputs, x)


@pytest.mark.parametrize("functional", [False, True])
@pytest.mark.parametrize(
    ("head", "logits"),
    [
        (lambda: [keras.layers.Dense(10)], True),
        (lambda: [keras.layers.Dense(10, activation="softmax")], False),
        (lambda: [keras.layers.Dense(10), keras.layers.Softmax()], False),
        (lambda: [keras.layers.Dense(10), keras.layers.Activation("softmax")], False),
        (lambda: [keras.layers.Dense(10, activation="sigmoid"), keras.layers.Dropout(0.1)], False),
        (lambda: [keras.layers.Dense(10), keras.layers.Dropout(0.1)], True),
        (lambda: [keras.layers.Dense(10, activation="softmax"), keras.layers.Activation("linear")], False),
    ],
)
def test_logits_head(functional: bool, head: Callable[[], list[keras.layers.Layer]], logits: bool) -> None:
    model = dense_model(*head(), functional=functional)
    assert has_logits_head(model, "classification") is logits
    assert has_logits_head(model, "regression") is False


def test_logits_head_inside_a_nested_model() -> None:
    inner = dense_model(keras.layers.Dense(3, activation="softmax"))
    inputs = keras.Input((4,))
    assert has_logits_head(keras.Model(inputs, inner(inputs)), "classification") is False


def test_registered_models_end_in_probabilities() -> None:
    model = build_model(ModelConfig(name="mlp"), input_shape=(4,), num_outputs=3, task="classification")
    assert has_logits_head(model, "classification") is False


def test_uncompiled_model_has_no_setup() -> None:
    assert compiled_setup(dense_model(keras.layers.Dense(3))) is None


@pytest.mark.parametrize("functional", [False, True])
def test_compiled_setup_reads_names_and_objects(functional: bool) -> None:
    model = dense_model(keras.layers.Dense(3), functional=functional)
    model.compile(
        loss="sparse_categorical_crossentropy",
        optimizer=keras.optimizers.Adam(3e-4, beta_1=0.8),
        metrics=[keras.metrics.SparseCategoricalAccuracy()],
    )
    setup = compiled_setup(model)
    assert setup is not None
    assert setup.loss_text == "sparse_categorical_crossentropy" and callable(setup.loss)
    assert setup.optimizer_text == "Adam(learning_rate=0.0003, beta_1=0.8)"
    assert setup.metrics_text == ("SparseCategoricalAccuracy()",)
    y = np.array([0, 2])
    pred = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], np.float32)
    per_example = setup.per_example_loss()
    assert per_example is not None
    np.testing.assert_allclose(np.asarray(per_example(y, pred)), -np.log([0.7, 0.8]), rtol=1e-5)


def test_compiled_setup_keeps_loss_objects_per_example() -> None:
    model = dense_model(keras.layers.Dense(3))
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), optimizer="sgd")
    setup = compiled_setup(model)
    assert setup is not None and setup.optimizer_text == "SGD(learning_rate=0.01)"
    per_example = setup.per_example_loss()
    assert per_example is not None
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 3.0]], np.float32)
    got = np.asarray(per_example(np.array([0, 2]), logits))
    assert got.shape == (2,)
    probabilities = keras.ops.convert_to_numpy(keras.ops.softmax(logits))
    np.testing.assert_allclose(got, -np.log(probabilities[[0, 1], [0, 2]]), rtol=1e-5)


def test_model_compiled_without_loss() -> None:
    model = dense_model(keras.layers.Dense(3))
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    setup = compiled_setup(model)
    assert setup is not None and setup.loss is None and setup.loss_text is None
    assert setup.optimizer_text == "SGD(learning_rate=0.05, momentum=0.9)"


def test_describe_object_of_schedule_and_function() -> None:
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.9)
    assert describe_object(keras.optimizers.SGD(schedule)) == "SGD(learning_rate=ExponentialDecay)"
    assert describe_object(keras.losses.mean_squared_error) == "mean_squared_error"


# --- one import rule ---------------------------------------------------------------------------


def test_import_roots_put_the_config_folder_first(tmp_path: Path) -> None:
    assert import_roots(tmp_path / "cfg", tmp_path) == ((tmp_path / "cfg").resolve(), tmp_path.resolve())
    assert import_roots(None, tmp_path) == (tmp_path.resolve(),)
    assert import_roots(tmp_path, tmp_path) == (tmp_path.resolve(),)


def test_import_object_searches_the_given_folders_and_leaves_sys_path(tmp_path: Path) -> None:
    name = f"mod_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("VALUE = 42\n")
    before = list(sys.path)
    try:
        assert import_object(f"{name}:VALUE", search=[tmp_path]) == 42
    finally:
        sys.modules.pop(name, None)
    assert sys.path == before


def test_import_object_defaults_to_the_working_directory(workdir: Path) -> None:
    name = f"mod_{uuid.uuid4().hex[:8]}"
    (workdir / f"{name}.py").write_text("def f():\n    return 'here'\n")
    try:
        assert import_object(f"{name}:f")() == "here"
    finally:
        sys.modules.pop(name, None)


def test_missing_module_lists_the_folders_searched(tmp_path: Path) -> None:
    with pytest.raises(ImportError) as info:
        import_object("no_such_module_xyz:build", search=[tmp_path / "a", tmp_path / "b"])
    message = str(info.value)
    assert "ModuleNotFoundError" in message and "not found" in message
    assert str((tmp_path / "a").resolve()) in message and str((tmp_path / "b").resolve()) in message


def test_missing_dependency_and_error_inside_module_are_told_apart(tmp_path: Path) -> None:
    needs = f"needs_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{needs}.py").write_text("import os\nimport not_installed_pkg_xyz\n")
    raises = f"raises_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{raises}.py").write_text("x = 1\ny = 2\nraise RuntimeError('config missing')\n")
    with pytest.raises(ImportError) as info:
        import_object(f"{needs}:f", search=[tmp_path])
    assert "not_installed_pkg_xyz" in str(info.value) and "install the missing package" in str(info.value)
    assert f"{needs}.py line 2" in str(info.value)
    with pytest.raises(ImportError, match=rf"RuntimeError: config missing \(at .*{raises}\.py line 3\)"):
        import_object(f"{raises}:f", search=[tmp_path])


CONFIG_MODULE = """
import keras

def build(input_shape, num_outputs):
    inputs = keras.Input(input_shape)
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(num_outputs, activation="softmax")(hidden), name="beside_config")

def callbacks():
    return [keras.callbacks.Callback()]
"""


def project_beside_config(root: Path) -> tuple[Path, Path, str]:
    """A config and its module in root/project, and an unrelated working directory root/elsewhere."""
    project, elsewhere = root / "project", root / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    module = f"beside_{uuid.uuid4().hex[:8]}"
    (project / f"{module}.py").write_text(CONFIG_MODULE)
    (project / "experiment.yaml").write_text(
        textwrap.dedent(
            f"""\
            run:
              name: imported
            data:
              dataset: wine
            model:
              name: {module}:build
            training:
              epochs: 1
              progress: none
              callbacks: ["{module}:callbacks"]
            """
        )
    )
    return project / "experiment.yaml", elsewhere, module


@pytest.mark.slow
def test_module_beside_config_imports_in_one_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config, elsewhere, module = project_beside_config(tmp_path)
    monkeypatch.chdir(elsewhere)
    before = list(sys.path)
    try:
        assert cli.main(["train", str(config)]) == 0
    finally:
        sys.modules.pop(module, None)
    assert sys.path == before
    report = json.loads((elsewhere / "runs" / "imported" / "report.json").read_text())
    assert report["model"]["keras_name"] == "beside_config"


def run_harness_from(cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """The console script's entry point (no cwd on sys.path, unlike `python -m`)."""
    code = "import sys; from harness.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, **THREADS, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
def test_module_beside_config_imports_from_the_console_script(tmp_path: Path) -> None:
    config, elsewhere, _ = project_beside_config(tmp_path)
    done = run_harness_from(elsewhere, "train", str(config))
    assert done.returncode == 0, done.stderr[-3000:]
    assert (elsewhere / "runs" / "imported" / "report.json").is_file()


@pytest.mark.slow
def test_module_beside_config_imports_in_workers(tmp_path: Path) -> None:
    config, elsewhere, _ = project_beside_config(tmp_path)
    done = run_harness_from(elsewhere, "train", str(config), "distribute.strategy=multiworker", "--workers", "2")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((elsewhere / "runs" / "imported" / "report.json").read_text())
    assert report["training"]["replicas"] == 2


# --- batch normalisation across replicas ------------------------------------------------------

BN_STEP = '''
"""One SGD step of a batch-normalised MLP built by the harness: 1 replica x 32 against 2 x 16."""
import json
import sys

import numpy as np
import tensorflow as tf

mode = sys.argv[1]
if mode == "mirrored":
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras

from harness.config.schema import ModelConfig
from harness.models import build_model, describe_model

CFG = ModelConfig(name="mlp", hidden_units=[8, 8], batch_norm=True, dropout=0.0)
rng = np.random.default_rng(0)
X = rng.normal(2.0, 3.0, size=(32, 6)).astype("float32")
Y = rng.integers(0, 3, size=(32,)).astype("int32")
LOSS = keras.losses.SparseCategoricalCrossentropy(reduction=None)


def build():
    keras.utils.set_random_seed(1)
    return build_model(CFG, input_shape=(6,), num_outputs=3, task="classification")


def bn_layers(model):
    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def step(model, optimizer, x, y, combine=lambda grads: grads):
    with tf.GradientTape() as tape:
        pred = model(x, training=True)
        loss = tf.reduce_sum(LOSS(y, pred)) / 32.0
    grads = combine(tape.gradient(loss, model.trainable_variables))
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return pred


ref = build()
reference = np.asarray(step(ref, keras.optimizers.SGD(0.1), X, Y)), ref.get_weights()
result = {"single_synchronized": [bool(layer.synchronized) for layer in bn_layers(ref)]}


def differences(pred, weights):
    return {
        "pred": float(np.max(np.abs(pred - reference[0]))),
        "weights": max(float(np.max(np.abs(a - b))) for a, b in zip(weights, reference[1])),
    }


if mode == "mirrored":
    strategy = tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice()
    )
    for synchronized in (True, False):
        with strategy.scope():
            model = build()
            optimizer = keras.optimizers.SGD(0.1)
        result.setdefault("synchronized", [bool(layer.synchronized) for layer in bn_layers(model)])
        if "application" not in result:
            with strategy.scope():
                app = build_model(
                    ModelConfig(name="applications.MobileNet", kwargs={"alpha": 0.25}),
                    input_shape=(32, 32, 3), num_outputs=3, task="classification",
                )
            result["application"] = sorted({bool(layer.synchronized) for layer in bn_layers(app)})
        for layer in bn_layers(model):
            layer.synchronized = synchronized

        @tf.function
        def run(xs, ys):
            return strategy.run(lambda x, y: step(model, optimizer, x, y), args=(xs, ys))

        xs = strategy.experimental_distribute_values_from_function(lambda c: X[c.replica_id_in_sync_group * 16:][:16])
        ys = strategy.experimental_distribute_values_from_function(lambda c: Y[c.replica_id_in_sync_group * 16:][:16])
        pred = np.concatenate([np.asarray(p) for p in strategy.experimental_local_results(run(xs, ys))])
        result["synced" if synchronized else "unsynced"] = differences(pred, model.get_weights())
else:
    import horovod.tensorflow as hvd

    hvd.init()
    for synchronized in (True, False):
        model = build()
        optimizer = keras.optimizers.SGD(0.1)
        overridden = [layer for layer in bn_layers(model) if "_moments" in vars(layer)]
        result.setdefault("horovod_layers", len(overridden))
        if not synchronized:
            for layer in overridden:
                del vars(layer)["_moments"]
        combine = lambda grads: hvd.grouped_allreduce(grads, op=hvd.Sum)

        @tf.function
        def run(x, y):
            return step(model, optimizer, x, y, combine)

        rank = hvd.rank()
        pred = np.asarray(hvd.allgather(run(X[rank * 16:][:16], Y[rank * 16:][:16])))
        result["synced" if synchronized else "unsynced"] = differences(pred, model.get_weights())
        result.setdefault("saved_class", type(bn_layers(keras.Model.from_config(model.get_config()))[0]).__name__)
    if hvd.rank() != 0:
        sys.exit(0)
print("RESULT " + json.dumps(result))
'''


def run_bn_step(tmp_path: Path, command: list[str]) -> dict[str, Any]:
    script = tmp_path / "bn_step.py"
    script.write_text(BN_STEP)
    env = {**os.environ, **THREADS, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [part.replace("SCRIPT", str(script)) for part in command],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if "RESULT " in line)
    return json.loads(line.split("RESULT ", 1)[1])  # type: ignore[no-any-return]


def test_batch_norm_is_synchronised_under_mirrored(tmp_path: Path) -> None:
    result = run_bn_step(tmp_path, [sys.executable, "SCRIPT", "mirrored"])
    assert result["single_synchronized"] == [False, False], "one replica: nothing to synchronise"
    assert result["synchronized"] == [True, True]
    assert result["application"] == [True], "a keras.applications backbone's batch norm too"
    assert result["synced"]["pred"] < 1e-5 and result["synced"]["weights"] < 1e-5, result
    # the check can fail: per-replica moments give another forward pass and another step
    assert result["unsynced"]["pred"] > 1e-2 and result["unsynced"]["weights"] > 1e-3, result


@needs_horovod
def test_batch_norm_is_averaged_with_horovod(tmp_path: Path) -> None:
    horovodrun = shutil.which("horovodrun") or str(Path(sys.executable).parent / "horovodrun")
    command = [horovodrun, "-np", "2", "-H", "localhost:2", "--gloo", sys.executable, "SCRIPT", "horovod"]
    result = run_bn_step(tmp_path, command)
    assert result["horovod_layers"] == 2
    assert result["synced"]["pred"] < 1e-5 and result["synced"]["weights"] < 1e-5, result
    assert result["unsynced"]["pred"] > 1e-2 and result["unsynced"]["weights"] > 1e-3, result
    assert result["saved_class"] == "BatchNormalization"


class FakeHorovod(SimpleNamespace):
    """Two ranks that hold the same batch: the all-reduced sum is twice the local one."""

    Sum = "sum"

    def __init__(self) -> None:
        super().__init__(calls=0)

    def is_initialized(self) -> bool:
        return True

    def size(self) -> int:
        return 2

    def allreduce(self, tensor: Any, op: str) -> Any:
        assert op == self.Sum
        self.calls += 1
        return tensor * 2.0


def test_horovod_moments_are_used_and_saved_model_is_plain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeHorovod()
    monkeypatch.setitem(sys.modules, "horovod.tensorflow", fake)
    cfg = ModelConfig(name="mlp", hidden_units=[8], batch_norm=True, dropout=0.0)
    model = build_model(cfg, input_shape=(6,), num_outputs=3, task="classification")
    monkeypatch.delitem(sys.modules, "horovod.tensorflow")
    x = np.random.default_rng(0).normal(size=(16, 6)).astype("float32")
    plain = build_model(cfg, input_shape=(6,), num_outputs=3, task="classification")
    plain.set_weights(model.get_weights())
    np.testing.assert_allclose(model(x, training=True), plain(x, training=True), rtol=1e-5, atol=1e-6)
    assert fake.calls == 1
    model.save(tmp_path / "m.keras")
    config = json.dumps(model.get_config())
    assert '"class_name": "BatchNormalization"' in config and "harness" not in config
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert all("_moments" not in vars(layer) for layer in loaded.layers)


def test_horovod_applications_backbone_averages_moments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "horovod.tensorflow", FakeHorovod())
    cfg = ModelConfig(name="applications.MobileNet", kwargs={"alpha": 0.25})
    model = build_model(cfg, input_shape=(32, 32, 3), num_outputs=3, task="classification")
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and all("_moments" in vars(layer) for layer in norms)


def test_one_replica_builds_plain_batch_norm() -> None:
    cfg = ModelConfig(name="cnn", filters=[4], hidden_units=[], batch_norm=True)
    model = build_model(cfg, input_shape=(8, 8, 1), num_outputs=3, task="classification")
    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert layers and not any(layer.synchronized or "_moments" in vars(layer) for layer in layers)


# --- whole trainings with batch normalisation: every strategy trains what one process trains ---

BN_SETUPS = [
    pytest.param("mirrored", 1, ["distribute.cpu_replicas=2"], id="mirrored-2cpu"),
    pytest.param("multiworker", 2, [], id="multiworker-2proc"),
    pytest.param("horovod", 2, ["distribute.horovod_controller=gloo"], id="horovod-gloo-2proc", marks=needs_horovod),
]


BATCH_NORM = ["model.batch_norm=true"]  # after test_distributed's COMMON (dropout 0), so it wins


@pytest.fixture(scope="module")
def batch_norm_reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.distribute import test_multiprocess as dist

    tmp = tmp_path_factory.mktemp("bn-reference")
    dist.train(tmp, "ref", "single", 1, [], dist.GLOBAL_BATCH, BATCH_NORM)
    return tmp / "runs" / "ref"


@pytest.mark.slow
@pytest.mark.parametrize(("strategy", "workers", "extra"), BN_SETUPS)
def test_batch_norm_training_matches_single_process(
    tmp_path: Path, batch_norm_reference: Path, strategy: str, workers: int, extra: list[str]
) -> None:
    from tests.distribute import test_multiprocess as dist

    done = dist.train(tmp_path, "run", strategy, workers, extra, dist.GLOBAL_BATCH // 2, BATCH_NORM)
    run_dir = tmp_path / "runs" / "run"
    found = " ".join(dist.digests(done.stdout + done.stderr)).split()
    assert len(found) == 2 and len(set(found)) == 1, found
    model = keras.saving.load_model(run_dir / "model.keras")
    assert any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    # trainable weights and the moving mean and variance alike
    for got, want in zip(model.get_weights(), dist.final_weights(batch_norm_reference), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)
    ref_lines = (batch_norm_reference / "metrics.jsonl").read_text().splitlines()
    for line, ref in zip((run_dir / "metrics.jsonl").read_text().splitlines(), ref_lines, strict=True):
        assert json.loads(line)["val_loss"] == pytest.approx(json.loads(ref)["val_loss"], rel=1e-3)
