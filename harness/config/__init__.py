"""Typed experiment config: schema, YAML loading, overrides and errors with key paths."""

from harness.config.loader import load_config, parse_override, to_yaml, validate_config
from harness.config.messages import clip, echo
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
from harness.config.yamlfile import YamlDoc, read_yaml_file

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
    "YamlDoc",
    "clip",
    "echo",
    "load_config",
    "parse_override",
    "read_yaml_file",
    "to_yaml",
    "validate_config",
]
