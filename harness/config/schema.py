"""The typed, frozen experiment config.

Every default here is the packaged default job (digits, a small CNN), so `harness train` with no
file and `configs/default.yaml` describe the same run. Unknown keys are errors everywhere.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from annotated_types import Gt
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_serializer,
    field_validator,
    model_validator,
)

from harness.config import keras_names
from harness.config.messages import echo
from harness.registry import closest

SCHEMA_VERSION = 1
SEED_MAX = 2**32 - 1  # NumPy's and scikit-learn's seeds are unsigned 32-bit integers
NAME_MAX_BYTES = 255  # the longest file name most file systems accept


def _not_bool(value: Any) -> Any:
    """Refuse `true`/`false` for a number: pydantic would silently read them as 1 and 0."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean (true/false)")
    return value


# Every number in the config uses these: no booleans, and (with allow_inf_nan=False) no inf or NaN.
Int = Annotated[int, BeforeValidator(_not_bool)]
PosInt = Annotated[int, BeforeValidator(_not_bool), Gt(0)]
Float = Annotated[float, BeforeValidator(_not_bool)]


class Section(BaseModel):
    """Base of every config section: frozen, unknown keys rejected, floats finite."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def run_name_problem(name: str) -> str | None:
    """Why `name` cannot be a run directory's name, or None.

    The run directory is `run.output_dir/run.name`, and `--overwrite` deletes it: a name that is
    not exactly one new path component could point at a parent, a sibling or an absolute path.
    """
    if not name.strip():
        return "it is empty"
    if name in (".", ".."):
        return f"{name!r} names an existing folder, not a new one"
    if "/" in name or "\\" in name:
        return "it contains a path separator"
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
        return "it contains a control character"
    if len(name.encode("utf-8", "surrogatepass")) > NAME_MAX_BYTES:
        return f"it is longer than {NAME_MAX_BYTES} bytes"
    return None


class RunConfig(Section):
    name: str = Field("digits-cnn", description="name of the run directory: one folder name, no '/'")
    output_dir: str = Field("runs", description="folder holding run directories")
    seed: Int = Field(42, ge=0, le=SEED_MAX, description="seeds data splits, shuffling and initialisation")
    deterministic: bool = Field(True, description="enable TensorFlow op determinism")

    @field_validator("name")
    @classmethod
    def _one_path_component(cls, name: str) -> str:
        problem = run_name_problem(name)
        if problem:
            raise ValueError(
                "must be one plain folder name inside run.output_dir (not empty, '.' or '..'; no '/', "
                f"'\\' or control characters; at most {NAME_MAX_BYTES} bytes), but {problem}"
            )
        return name

    @field_validator("output_dir")
    @classmethod
    def _usable_folder(cls, output_dir: str) -> str:
        if not output_dir.strip():
            raise ValueError("must name a folder (use '.' for the current folder), but it is empty")
        if "\x00" in output_dir:
            raise ValueError("must be a path, but it contains a NUL character")
        return output_dir


class SyntheticConfig(Section):
    samples: PosInt = 2048
    image_shape: tuple[PosInt, PosInt, PosInt] = (32, 32, 3)
    features: PosInt = 20
    classes: PosInt = Field(10, ge=2)
    noise: Float = Field(0.5, ge=0.0)


class DataConfig(Section):
    dataset: str = Field("digits", description="registered dataset name")
    path: str | None = Field(None, description="file or folder for csv, npz and image_folder")
    target: str | None = Field(None, description="csv: name of the target column")
    features: list[str] | None = Field(
        None, min_length=1, description="csv: feature columns (default: all others)"
    )
    categorical: list[str] | None = Field(
        None, description="csv: categorical feature columns (default: non-numeric columns)"
    )
    missing: Literal["drop", "mean", "median", "most_frequent"] = "drop"
    coerce_numeric: bool = Field(
        False,
        description="csv: read the few non-numeric cells of a mostly numeric column as missing values "
        "(with a warning) instead of refusing the file",
    )
    task: Literal["auto", "classification", "regression"] = "auto"
    validation_split: Float = Field(0.15, gt=0.0, lt=1.0)
    test_split: Float = Field(0.15, gt=0.0, lt=1.0)
    stratify: bool = True
    scaling: Literal["standard", "minmax", "none"] = "standard"
    target_scaling: Literal["standard", "none"] = Field(
        "standard",
        description="regression targets: standardised per column for training (predictions and reports are in "
        "the original units), or none: as they are, for a model whose output cannot be negative (relu, softplus) "
        "or a loss that needs positive targets (poisson, msle, mape)",
    )
    image_size: tuple[PosInt, PosInt] | None = Field(
        None,
        description="[height, width] every image is resized to: image_folder (default 64x64), NPZ and "
        "built-in images (default: as stored)",
    )
    color_mode: Literal["rgb", "grayscale"] = "rgb"
    x_key: str = Field("x", description="npz: array name of the inputs")
    y_key: str = Field("y", description="npz: array name of the targets")
    synthetic: SyntheticConfig = SyntheticConfig()
    max_samples: PosInt | None = Field(
        None, description="use a seeded subset of about this many samples (smoke tests, quick trials)"
    )

    @model_validator(mode="after")
    def _splits_leave_training_data(self) -> DataConfig:
        if self.validation_split + self.test_split >= 0.9:
            raise ValueError(
                "data.validation_split + data.test_split must be below 0.9 so training data "
                f"remains. Received: {echo(self.validation_split)} + {echo(self.test_split)}"
            )
        return self


class ModelConfig(Section):
    name: str = Field(
        "cnn",
        description="mlp, cnn, resnet, applications.<Name>, 'pkg.module:function' or a .keras file",
    )
    hidden_units: list[PosInt] = Field([128], description="dense layers before the output")
    filters: list[PosInt] = Field([32, 64], description="cnn: filters per conv block")
    kernel_size: PosInt = 3
    blocks_per_stage: list[PosInt] = Field([2, 2], description="resnet: residual blocks per stage")
    width: PosInt = Field(16, description="resnet: filters of the first stage")
    dropout: Float = Field(0.25, ge=0.0, lt=1.0)
    activation: str = "relu"
    batch_norm: bool = True
    weights: str | None = Field(None, description="applications: local weights file")
    freeze: Annotated[int | list[str], BeforeValidator(_not_bool)] = Field(
        0, description="fine-tuning: freeze the first N layers, or the named layers"
    )
    kwargs: dict[str, Any] = Field(default_factory=dict, description="extra builder arguments")

    @model_validator(mode="after")
    def _freeze_non_negative(self) -> ModelConfig:
        if isinstance(self.freeze, int) and self.freeze < 0:
            raise ValueError(f"model.freeze must be >= 0 or a list of layer names. Received: {echo(self.freeze)}")
        return self


class OptimizerConfig(Section):
    """The harness's optimizer. Setting any of its keys replaces the optimizer a compiled model brings."""

    name: str = Field("adam", description="a Keras optimizer name: adam, adamw, sgd, rmsprop, nadam, lion, ...")
    learning_rate: Float = Field(2e-3, gt=0.0)
    weight_decay: Float = Field(0.0, ge=0.0)
    momentum: Float = Field(0.9, ge=0.0, lt=1.0, description="sgd and rmsprop")
    clipnorm: Float | None = Field(None, gt=0.0)
    kwargs: dict[str, Any] = Field(
        default_factory=dict, description="other arguments of the Keras optimizer, e.g. {beta_1: 0.8}"
    )

    @field_validator("name", mode="before")
    @classmethod
    def _keras_optimizer(cls, name: Any) -> Any:
        if not isinstance(name, str):
            return name
        key = name.lower()
        if key in keras_names.OPTIMIZERS:
            return key
        hint = closest(key, list(keras_names.OPTIMIZERS))
        raise ValueError(
            (f"did you mean {hint!r}? It " if hint else "")
            + f"must be a Keras optimizer name: {', '.join(keras_names.OPTIMIZERS)}"
        )


def _loss_problem(name: str) -> str | None:
    """Why `name` is not a loss the config accepts, or None."""
    if name == keras_names.AUTO or keras_names.canonical_loss(name):
        return None
    hint = closest(name, keras_names.loss_names()) or closest(name.lower(), keras_names.loss_names())
    usable = [loss for loss in keras_names.LOSSES if loss not in keras_names.UNSUPPORTED_WHY]
    return (
        (f"did you mean {hint!r}? It " if hint else "")
        + "must be 'auto' (the model's compile() loss, else one chosen from the task) or a Keras loss name: "
        f"{', '.join(usable)} (or an alias such as mse, mae, bce)"
    )


class LossConfig(Section):
    """`training.loss` written as a mapping: a Keras loss name and its arguments."""

    name: str = Field("auto", description="'auto' or a Keras loss name")
    from_logits: bool | None = Field(
        None,
        description="the model outputs logits (unnormalised scores) rather than probabilities; "
        "default: read from the model's last layer",
    )
    kwargs: dict[str, Any] = Field(
        default_factory=dict, description="other arguments of the Keras loss, e.g. {label_smoothing: 0.1}"
    )

    @field_validator("name")
    @classmethod
    def _keras_loss(cls, name: str) -> str:
        problem = _loss_problem(name)
        if problem:
            raise ValueError(problem)
        return name

    @model_validator(mode="after")
    def _from_logits_applies(self) -> LossConfig:
        canonical = keras_names.canonical_loss(self.name)
        if self.from_logits is not None and canonical and canonical not in keras_names.FROM_LOGITS_LOSSES:
            raise ValueError(
                f"training.loss.from_logits applies to {', '.join(sorted(keras_names.FROM_LOGITS_LOSSES))}, "
                f"not to {self.name!r}. Received: from_logits={self.from_logits}"
            )
        if canonical in keras_names.UNSUPPORTED_WHY:
            raise ValueError(
                f"training.loss={self.name!r} cannot be used: {keras_names.UNSUPPORTED_WHY[canonical]}"
            )
        return self

    @property
    def is_auto(self) -> bool:
        """Plain `auto`: take the model's compile() loss if it has one."""
        return self.name == keras_names.AUTO and self.from_logits is None and not self.kwargs


def _loss_from_name(value: Any) -> Any:
    """`training.loss: huber` is short for `training.loss: {name: huber}`."""
    if isinstance(value, str):
        problem = _loss_problem(value)
        if problem:
            raise ValueError(problem)
        return {"name": value}
    if isinstance(value, dict | LossConfig):
        return value
    raise ValueError(
        "must be a Keras loss name, or a mapping such as {name: sparse_categorical_crossentropy, from_logits: true}"
    )


class ScheduleConfig(Section):
    name: Literal["constant", "cosine", "step"] = "cosine"
    warmup_epochs: Float = Field(0.0, ge=0.0)
    step_epochs: PosInt = Field(10, description="step: epochs between decays")
    gamma: Float = Field(0.1, gt=0.0, le=1.0, description="step: decay factor")
    min_lr_ratio: Float = Field(0.0, ge=0.0, le=1.0, description="cosine: final LR / base LR")


MONITORS = ("loss", "val_loss", "accuracy", "val_accuracy", "mae", "val_mae")


class EarlyStoppingConfig(Section):
    enabled: bool = False
    monitor: Literal["loss", "val_loss", "accuracy", "val_accuracy", "mae", "val_mae"] = "val_loss"
    patience: PosInt = 5
    min_delta: Float = Field(0.0, ge=0.0)
    restore_best: bool = True


class CheckpointConfig(Section):
    every_epochs: Int = Field(1, ge=0, description="0 disables epoch checkpoints")
    every_steps: PosInt | None = Field(None, description="also save every N steps")
    monitor: Literal["loss", "val_loss", "accuracy", "val_accuracy", "mae", "val_mae"] = "val_loss"


class TrainingConfig(Section):
    epochs: PosInt = 12
    batch_size: PosInt = Field(32, description="per replica")
    loss: Annotated[LossConfig, BeforeValidator(_loss_from_name)] = Field(
        LossConfig(),
        description="auto (the model's compile() loss, else from the task), a Keras loss name, "
        "or {name: ..., from_logits: ..., kwargs: {...}}",
    )
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    steps_per_execution: PosInt = Field(16, description="training steps per compiled call")
    jit_compile: bool = False
    precision: Literal["float32", "mixed_float16", "mixed_bfloat16"] = "float32"
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    callbacks: list[str] = Field(
        default_factory=list, description="'pkg.module:factory' returning Keras callbacks"
    )
    tensorboard: bool = False
    progress: Literal["auto", "bar", "lines", "none"] = "auto"

    @field_serializer("loss")
    def _loss_as_written(self, loss: LossConfig) -> str | dict[str, Any]:
        """A plain name stays a plain name in the saved config and reports."""
        if loss.from_logits is None and not loss.kwargs:
            return loss.name
        return loss.model_dump(mode="json")

    @property
    def optimizer_is_set(self) -> bool:
        """The config sets a `training.optimizer` key: it replaces a compiled model's optimizer."""
        return bool(self.optimizer.model_fields_set)

    @property
    def schedule_is_set(self) -> bool:
        """The config sets a `training.schedule` key: it applies also to a compiled model's optimizer."""
        return bool(self.schedule.model_fields_set)


class DistributeConfig(Section):
    strategy: Literal["auto", "single", "mirrored", "multiworker", "horovod"] = Field(
        "auto", description="auto picks from the environment and says what it picked"
    )
    lr_scaling: Literal["none", "linear", "sqrt"] = "none"
    cpu_replicas: PosInt = Field(
        2, description="mirrored on a machine without GPUs: logical CPU devices to mirror over"
    )
    horovod_controller: Literal["gloo", "mpi"] = Field(
        "gloo",
        description=(
            "Horovod transport, for `harness train --workers N` (mpi: horovodrun --mpi) and `harness submit` "
            "(mpi: srun --mpi=pmix, needs Slurm's PMIx plugin; not with slurm.executor=local)"
        ),
    )
    pin_workers: bool = Field(
        True, description="harness train --workers: each worker runs on its own share of this machine's cores"
    )
    huge_pages: bool = Field(
        True,
        description=(
            "harness train, its workers and jobs start with glibc asking for transparent huge pages on large blocks "
            "(GLIBC_TUNABLES=glibc.malloc.hugetlb=1), so large tensors do not pay a page fault per 4 KiB"
        ),
    )
    gradient_compression: Literal["none", "fp16"] = Field(
        "none",
        description=(
            "fp16: gradients cross devices and processes as float16 (Horovod's Compression.fp16), half the bytes "
            "of each step's all-reduce; values below 6e-5 lose precision and below 3e-8 become 0"
        ),
    )
    timeout_s: Float = Field(
        300.0, gt=0.0, description="preflight and watchdog: seconds a collective or step may stall"
    )


class SlurmConfig(Section):
    """Resources and launch of `harness submit`; keys set here win over the cluster profile's."""

    partition: str | None = Field(None, description="default: the cluster's default partition")
    account: str | None = None
    qos: str | None = None
    nodes: PosInt = 1
    gpus_per_node: Int = Field(0, ge=0)
    gpu_type: str | None = Field(None, description="GPU model for --gpus-per-node=TYPE:N, e.g. a100")
    tasks_per_node: PosInt | None = Field(
        None,
        description="default: one per GPU for multiworker/horovod, else one per node",
    )
    cpus_per_task: PosInt = 1
    mem_gb: Float | None = Field(None, gt=0.0, description="memory per node")
    time_minutes: PosInt = 60
    constraint: str | None = None
    additional: dict[str, str] = Field(default_factory=dict, description="extra sbatch options")
    setup: list[str] = Field(
        default_factory=list,
        description="raw shell lines run before the job starts, e.g. 'module load cuda' (not quoted)",
    )
    env: dict[str, str] = Field(default_factory=dict, description="environment variables of the job (quoted)")
    max_requeues: Int = Field(3, ge=0, description="requeues after preemption or time limit before giving up")
    signal_delay_s: PosInt = Field(
        120, description="seconds before the time limit at which the job checkpoints and requeues"
    )
    profile: str | None = Field(None, description="cluster profile from the profiles file (configs/clusters.yaml)")
    executor: Literal["slurm", "local"] = Field(
        "slurm", description="local: run the same job on this machine without Slurm"
    )
    job_name: str | None = Field(None, description="default: run.name")


class ReportConfig(Section):
    html: bool = True
    plots: bool = True


class Config(Section):
    """The whole experiment. Sections are independent; cross-section rules live here."""

    run: RunConfig = RunConfig()
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    distribute: DistributeConfig = DistributeConfig()
    slurm: SlurmConfig = SlurmConfig()
    report: ReportConfig = ReportConfig()

    @model_validator(mode="after")
    def _cross_section_rules(self) -> Config:
        needs_path = {"csv", "npz", "image_folder"}
        if self.data.dataset in needs_path and not self.data.path:
            raise ValueError(f"data.path is required for dataset {echo(self.data.dataset)}")
        if self.data.dataset == "csv" and not self.data.target:
            raise ValueError("data.target (the target column) is required for dataset 'csv'")
        if self.training.jit_compile and self.run.deterministic:
            raise ValueError(
                "training.jit_compile=true cannot be combined with run.deterministic=true (the default): "
                "XLA has no deterministic implementation of some gradient ops (MaxPool's among them), so "
                "training would stop at its first step. Set run.deterministic=false to use XLA, or "
                "training.jit_compile=false to keep deterministic ops"
            )
        return self
