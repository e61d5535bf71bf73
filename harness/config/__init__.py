"""Typed experiment config: schema, YAML loading, overrides and errors with key paths."""

from harness.config.loader import load_config, parse_override, to_yaml, validate_config
from harness.config.schema import (
    SCHEMA_VERSION,
    CheckpointConfig,
    Config,
    DataConfig,
    DistributeConfig,
    EarlyStoppingConfig,
    ModelConfig,
    OptimizerConfig,
    ReportConfig,
    RunConfig,
    ScheduleConfig,
    SlurmConfig,
    SyntheticConfig,
    TrainingConfig,
)

__all__ = [
    "SCHEMA_VERSION",
    "CheckpointConfig",
    "Config",
    "DataConfig",
    "DistributeConfig",
    "EarlyStoppingConfig",
    "ModelConfig",
    "OptimizerConfig",
    "ReportConfig",
    "RunConfig",
    "ScheduleConfig",
    "SlurmConfig",
    "SyntheticConfig",
    "TrainingConfig",
    "load_config",
    "parse_override",
    "to_yaml",
    "validate_config",
]
