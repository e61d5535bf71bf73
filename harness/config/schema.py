"""The typed, frozen experiment config.

Every default here is the packaged default job (digits, a small CNN), so `harness train` with no
file and `configs/default.yaml` describe the same run. Unknown keys are errors everywhere.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

SCHEMA_VERSION = 1


class Section(BaseModel):
    """Base of every config section: frozen, and unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class RunConfig(Section):
    name: str = Field("digits-cnn", min_length=1, description="name of the run directory")
    output_dir: str = Field("runs", description="folder holding run directories")
    seed: int = Field(42, ge=0, description="seeds data splits, shuffling and initialisation")
    deterministic: bool = Field(True, description="enable TensorFlow op determinism")


class SyntheticConfig(Section):
    samples: PositiveInt = 2048
    image_shape: tuple[PositiveInt, PositiveInt, PositiveInt] = (32, 32, 3)
    features: PositiveInt = 20
    classes: PositiveInt = Field(10, ge=2)
    noise: float = Field(0.5, ge=0.0)


class DataConfig(Section):
    dataset: str = Field("digits", description="registered dataset name")
    path: str | None = Field(None, description="file or folder for csv, npz and image_folder")
    target: str | None = Field(None, description="csv: name of the target column")
    features: list[str] | None = Field(None, description="csv: feature columns (default: all others)")
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
    validation_split: float = Field(0.15, gt=0.0, lt=1.0)
    test_split: float = Field(0.15, gt=0.0, lt=1.0)
    stratify: bool = True
    scaling: Literal["standard", "minmax", "none"] = "standard"
    image_size: tuple[PositiveInt, PositiveInt] = (64, 64)
    color_mode: Literal["rgb", "grayscale"] = "rgb"
    x_key: str = Field("x", description="npz: array name of the inputs")
    y_key: str = Field("y", description="npz: array name of the targets")
    synthetic: SyntheticConfig = SyntheticConfig()
    max_samples: PositiveInt | None = Field(
        None, description="use a seeded subset of about this many samples (smoke tests, quick trials)"
    )

    @model_validator(mode="after")
    def _splits_leave_training_data(self) -> DataConfig:
        if self.validation_split + self.test_split >= 0.9:
            raise ValueError(
                "data.validation_split + data.test_split must be below 0.9 so training data "
                f"remains. Received: {self.validation_split} + {self.test_split}"
            )
        return self


class ModelConfig(Section):
    name: str = Field(
        "cnn",
        description="mlp, cnn, resnet, applications.<Name>, 'pkg.module:function' or a .keras file",
    )
    hidden_units: list[PositiveInt] = Field([128], description="dense layers before the output")
    filters: list[PositiveInt] = Field([32, 64], description="cnn: filters per conv block")
    kernel_size: PositiveInt = 3
    blocks_per_stage: list[PositiveInt] = Field([2, 2], description="resnet: residual blocks per stage")
    width: PositiveInt = Field(16, description="resnet: filters of the first stage")
    dropout: float = Field(0.25, ge=0.0, lt=1.0)
    activation: str = "relu"
    batch_norm: bool = True
    weights: str | None = Field(None, description="applications: local weights file")
    freeze: int | list[str] = Field(
        0, description="fine-tuning: freeze the first N layers, or the named layers"
    )
    kwargs: dict[str, Any] = Field(default_factory=dict, description="extra builder arguments")

    @model_validator(mode="after")
    def _freeze_non_negative(self) -> ModelConfig:
        if isinstance(self.freeze, int) and self.freeze < 0:
            raise ValueError(f"model.freeze must be >= 0 or a list of layer names. Received: {self.freeze}")
        return self


class OptimizerConfig(Section):
    name: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    learning_rate: float = Field(2e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="sgd and rmsprop")
    clipnorm: float | None = Field(None, gt=0.0)


class ScheduleConfig(Section):
    name: Literal["constant", "cosine", "step"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0.0)
    step_epochs: PositiveInt = Field(10, description="step: epochs between decays")
    gamma: float = Field(0.1, gt=0.0, le=1.0, description="step: decay factor")
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0, description="cosine: final LR / base LR")


MONITORS = ("loss", "val_loss", "accuracy", "val_accuracy", "mae", "val_mae")


class EarlyStoppingConfig(Section):
    enabled: bool = False
    monitor: Literal["loss", "val_loss", "accuracy", "val_accuracy", "mae", "val_mae"] = "val_loss"
    patience: PositiveInt = 5
    min_delta: float = Field(0.0, ge=0.0)
    restore_best: bool = True


class CheckpointConfig(Section):
    every_epochs: int = Field(1, ge=0, description="0 disables epoch checkpoints")
    every_steps: PositiveInt | None = Field(None, description="also save every N steps")
    monitor: Literal["loss", "val_loss", "accuracy", "val_accuracy", "mae", "val_mae"] = "val_loss"


class TrainingConfig(Section):
    epochs: PositiveInt = 12
    batch_size: PositiveInt = Field(32, description="per replica")
    loss: str = Field("auto", description="auto follows the task, or a Keras loss name")
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    steps_per_execution: PositiveInt = Field(16, description="training steps per compiled call")
    jit_compile: bool = False
    precision: Literal["float32", "mixed_float16", "mixed_bfloat16"] = "float32"
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    callbacks: list[str] = Field(
        default_factory=list, description="'pkg.module:factory' returning Keras callbacks"
    )
    tensorboard: bool = False
    progress: Literal["auto", "bar", "lines", "none"] = "auto"


class DistributeConfig(Section):
    strategy: Literal["auto", "single", "mirrored", "multiworker", "horovod"] = Field(
        "auto", description="auto picks from the environment and says what it picked"
    )
    lr_scaling: Literal["none", "linear", "sqrt"] = "none"
    cpu_replicas: PositiveInt = Field(
        2, description="mirrored on a machine without GPUs: logical CPU devices to mirror over"
    )
    horovod_controller: Literal["gloo", "mpi"] = Field(
        "gloo", description="local launcher: Horovod transport"
    )
    timeout_s: float = Field(
        300.0, gt=0.0, description="preflight and watchdog: seconds a collective or step may stall"
    )


class SlurmConfig(Section):
    """Resources and launch of `harness submit`; keys set here win over the cluster profile's."""

    partition: str | None = Field(None, description="default: the cluster's default partition")
    account: str | None = None
    qos: str | None = None
    nodes: PositiveInt = 1
    gpus_per_node: int = Field(0, ge=0)
    gpu_type: str | None = Field(None, description="GPU model for --gpus-per-node=TYPE:N, e.g. a100")
    tasks_per_node: PositiveInt | None = Field(
        None,
        description="default: one per GPU for multiworker/horovod, else one per node",
    )
    cpus_per_task: PositiveInt = 1
    mem_gb: float | None = Field(None, gt=0.0, description="memory per node")
    time_minutes: PositiveInt = 60
    constraint: str | None = None
    additional: dict[str, str] = Field(default_factory=dict, description="extra sbatch options")
    setup: list[str] = Field(
        default_factory=list,
        description="raw shell lines run before the job starts, e.g. 'module load cuda' (not quoted)",
    )
    env: dict[str, str] = Field(default_factory=dict, description="environment variables of the job (quoted)")
    max_requeues: int = Field(3, ge=0, description="requeues after preemption or time limit before giving up")
    signal_delay_s: PositiveInt = Field(
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
            raise ValueError(f"data.path is required for dataset {self.data.dataset!r}")
        if self.data.dataset == "csv" and not self.data.target:
            raise ValueError("data.target (the target column) is required for dataset 'csv'")
        return self
