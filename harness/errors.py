"""The small exception family every part raises; the CLI maps each to an exit code.

User mistakes (bad config, missing files, unknown names) exit with code 2 so scripts and
Slurm job arrays can tell them apart from failures during a run (code 1).
"""

from __future__ import annotations


class HarnessError(Exception):
    """Base of all errors the tool reports to users as a message instead of a traceback."""

    exit_code = 1


class UserInputError(HarnessError):
    """Something the user supplied is wrong; nothing was run or written."""

    exit_code = 2


class ConfigError(UserInputError):
    """The experiment config is malformed, has unknown keys or bad values."""


class DataError(UserInputError):
    """A data file is missing or its content does not fit the config."""


class ModelError(UserInputError):
    """A model cannot be built or loaded from what the config names."""


class RunDirError(UserInputError):
    """The run directory is missing, already exists, or is not a run directory."""


class TrainingError(HarnessError):
    """Training stopped abnormally (for example a NaN loss); the last good checkpoint is kept."""


class LaunchError(HarnessError):
    """Worker processes could not be started or one of them failed."""


class LaunchVariableError(LaunchError, UserInputError):
    """A launcher's environment variable (HARNESS_RANK, TF_CONFIG, SLURM_*) is malformed: bad input, exit 2."""


class Preempted(HarnessError):
    """Training stopped on request (preemption or time limit) after saving a checkpoint.

    Exit code 75 (EX_TEMPFAIL): try again later, and the run continues where it stopped.
    """

    exit_code = 75
