"""Named cluster profiles: a site's partition, account, QOS, GPU type and setup lines, written once.

A profiles file maps names to partial `slurm:` sections, so a profile is validated by the same
schema as the config and cannot hold a key the config would reject:

    profiles:
      mycluster-gpu:
        description: A100 nodes
        partition: gpu
        gpu_type: a100
        setup: ["module load cuda/12.4"]
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from harness.config import SlurmConfig, echo, read_yaml_file
from harness.errors import ConfigError
from harness.registry import closest

PROFILES_ENV = "HARNESS_PROFILES"
NOT_IN_PROFILE = ("profile",)


def candidate_files(cwd: Path, environ: Mapping[str, str]) -> list[Path]:
    """Where a profiles file is looked for when --profiles is not given, in order."""
    candidates = []
    if environ.get(PROFILES_ENV):
        candidates.append(Path(environ[PROFILES_ENV]))
    candidates.append(cwd / "configs" / "clusters.yaml")
    config_home = Path(environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    candidates.append(config_home / "harness" / "clusters.yaml")
    return candidates


def find_profiles_file(explicit: Path | None, cwd: Path, environ: Mapping[str, str]) -> Path:
    if explicit is not None:
        if not explicit.exists():
            raise ConfigError(f"profiles file {explicit} does not exist")
        return explicit
    candidates = candidate_files(cwd, environ)
    for path in candidates:
        if path.is_file():
            return path
    looked = ", ".join(str(path) for path in candidates)
    raise ConfigError(
        f"a cluster profile was named but no profiles file was found (looked in: {looked}); pass --profiles FILE"
    )


def load_profiles(path: Path) -> dict[str, SlurmConfig]:
    """Every profile of a file, validated; the error names the file, the profile and the key."""
    raw = read_yaml_file(path, "profiles file").data or {}
    profiles = raw.get("profiles") if isinstance(raw, dict) else None
    if not isinstance(profiles, dict):
        raise ConfigError(f"profiles file {path} must hold a mapping 'profiles: {{NAME: {{partition: ...}}}}'")
    return {str(name): _validate(path, str(name), body) for name, body in profiles.items()}


def _validate(path: Path, name: str, body: Any) -> SlurmConfig:
    if not isinstance(body, dict):
        raise ConfigError(f"profiles file {path}: profile {name!r} must be a mapping of slurm keys")
    settings = {key: value for key, value in body.items() if key != "description"}
    for key in NOT_IN_PROFILE:
        if key in settings:
            raise ConfigError(f"profiles file {path}: profile {name!r} cannot set {key!r}")
    try:
        return SlurmConfig.model_validate(settings)
    except ValidationError as err:
        raise ConfigError(f"profiles file {path}, profile {name!r}: {_problems(err, settings)}") from None


def _problems(err: ValidationError, settings: Mapping[str, Any]) -> str:
    known = list(SlurmConfig.model_fields)
    problems = []
    for error in err.errors():
        key = ".".join(map(str, error["loc"]))
        if error["type"] == "extra_forbidden":
            hint = closest(key, known)
            problems.append(f"unknown key {echo(key)}" + (f" (did you mean {hint!r}?)" if hint else ""))
        else:
            problems.append(f"{key}: {error['msg']}. Received: {key}={echo(error['input'])}")
    return "; ".join(problems)


def get_profile(name: str, path: Path) -> SlurmConfig:
    profiles = load_profiles(path)
    if name not in profiles:
        hint = closest(name, list(profiles))
        did_you_mean = f" Did you mean {hint!r}?" if hint else ""
        raise ConfigError(
            f"unknown cluster profile {name!r} in {path}.{did_you_mean} Known: {', '.join(sorted(profiles)) or 'none'}"
        )
    return profiles[name]


def resolve_profile(
    name: str | None, explicit_file: Path | None, cwd: Path | None = None, environ: Mapping[str, str] | None = None
) -> SlurmConfig | None:
    """The named profile's settings, or None when no profile is named."""
    if name is None:
        return None
    path = find_profiles_file(explicit_file, cwd or Path.cwd(), os.environ if environ is None else environ)
    return get_profile(name, path)
