"""`harness doctor`: real checks in the project venv, and simulated absences through monkeypatch."""

from __future__ import annotations

import os
import stat
import sys
import types
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.commands import doctor
from harness.commands.doctor import Check, exit_code, format_table, run_checks

REAL_VERSION = doctor.distribution_version


def fake_versions(monkeypatch: pytest.MonkeyPatch, **versions: str | None) -> None:
    """Make `distribution_version` report `versions` (dist -> version or None) and the rest as installed."""

    def version(dist: str) -> str | None:
        return versions[dist] if dist in versions else REAL_VERSION(dist)

    monkeypatch.setattr(doctor, "distribution_version", version)


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks}


def fake_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, commands: dict[str, str]) -> None:
    """Put shell scripts printing the given text first on PATH, as real tools would be."""
    for name, output in commands.items():
        script = tmp_path / name
        script.write_text(f"#!/bin/sh\necho '{output}'\n")
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")


def test_venv_has_the_required_stack() -> None:
    checks = by_name(run_checks())
    for name in ("Python", "TensorFlow", "Keras", "scikit-learn", "pydantic", "submitit"):
        assert checks[name].status == "ok", checks[name]
        assert checks[name].required
    assert checks["Keras"].detail.startswith("3.")
    assert exit_code(list(checks.values())) == 0


def test_table_has_one_aligned_row_per_check() -> None:
    checks = run_checks()
    lines = format_table(checks).splitlines()
    assert lines[0].split() == ["CHECK", "STATUS", "DETAIL"]
    assert len(lines) == len(checks) + 1
    assert len({check.name for check in checks}) == len(checks)
    status_column = lines[0].index("STATUS")
    for line, check in zip(lines[1:], checks, strict=True):
        assert line.startswith(check.name)
        assert line[status_column:].split()[0] in {"OK", "MISSING", "WARN"}


def test_missing_required_package_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_versions(monkeypatch, **{"scikit-learn": None})
    checks = run_checks()
    sklearn = by_name(checks)["scikit-learn"]
    assert (sklearn.status, sklearn.required) == ("missing", True)
    assert "pip install scikit-learn" in sklearn.detail
    row = next(line for line in format_table(checks).splitlines() if line.startswith("scikit-learn"))
    assert "MISSING" in row
    assert exit_code(checks) == 1


def test_keras_2_counts_as_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_versions(monkeypatch, keras="2.15.0")
    keras_check = doctor.check_keras()
    assert keras_check.status == "missing"
    assert "2.15.0" in keras_check.detail
    assert exit_code([keras_check]) == 1


def test_old_python_counts_as_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "MIN_PYTHON", (99, 0))
    python = doctor.check_python()
    assert (python.status, python.required) == ("missing", True)
    assert ">= 99.0" in python.detail


def test_horovod_absence_is_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_versions(monkeypatch, horovod=None)
    checks = run_checks()
    horovod = by_name(checks)["Horovod"]
    assert (horovod.status, horovod.required) == ("missing", False)
    assert "scripts/install_horovod.sh" in horovod.detail
    assert exit_code(checks) == 0


def test_horovod_reports_built_controllers_and_guards_each_query(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> bool:
        raise RuntimeError("not initialised")

    fake = types.ModuleType("horovod.tensorflow")
    fake.mpi_built = lambda: False  # type: ignore[attr-defined]
    fake.gloo_built = lambda: True  # type: ignore[attr-defined]
    fake.nccl_built = broken  # type: ignore[attr-defined]
    package = types.ModuleType("horovod")
    package.tensorflow = fake  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "horovod", package)
    monkeypatch.setitem(sys.modules, "horovod.tensorflow", fake)
    fake_versions(monkeypatch, horovod="0.28.1")
    horovod = doctor.check_horovod()
    assert horovod.status == "ok"
    assert horovod.detail == "0.28.1; TensorFlow ops built; MPI no, Gloo yes, NCCL unknown"


def test_crashing_check_becomes_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    def crash() -> Check:
        raise RuntimeError("mpirun exploded")

    monkeypatch.setattr(doctor, "check_mpi", crash)
    checks = run_checks()
    mpi = by_name(checks)["MPI"]
    assert (mpi.status, mpi.detail) == ("warning", "check failed: RuntimeError: mpirun exploded")
    assert exit_code(checks) == 0


def test_no_gpu_is_a_warning() -> None:
    gpus = doctor.check_gpus()
    assert gpus.status in {"ok", "warning"}
    if gpus.status == "warning":
        assert gpus.detail == "no GPU visible; training runs on CPU"
    assert not gpus.required


@pytest.mark.parametrize(
    ("present", "status"),
    [(doctor.SLURM_COMMANDS, "ok"), (("sinfo", "sbatch"), "warning")],
)
def test_slurm_commands_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, present: tuple[str, ...], status: str
) -> None:
    monkeypatch.setattr(doctor.shutil, "which", _which_only(tmp_path, present))
    fake_commands(tmp_path, monkeypatch, {name: "slurm 22.05.8" for name in present})
    slurm = doctor.check_slurm()
    assert slurm.status == status
    assert slurm.detail.startswith("slurm 22.05.8")
    if status == "warning":
        assert "not on PATH: srun, squeue, scontrol" in slurm.detail


def test_a_sinfo_that_fails_is_not_reported_as_a_working_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Installed but not configured (no slurm.conf): sinfo's error is not a version."""
    monkeypatch.setattr(doctor.shutil, "which", _which_only(tmp_path, doctor.SLURM_COMMANDS))
    fake_commands(tmp_path, monkeypatch, {name: "slurm 22.05.8" for name in doctor.SLURM_COMMANDS})
    (tmp_path / "sinfo").write_text(
        "#!/bin/sh\necho 'sinfo: error: fetch_config: DNS SRV lookup failed' >&2\n"
        "echo 'sinfo: fatal: Could not establish a configuration source' >&2\nexit 1\n"
    )
    slurm = doctor.check_slurm()
    assert slurm.status == "warning", slurm
    assert "fails" in slurm.detail and "Could not establish a configuration source (exit code 1)" in slurm.detail


def test_mpirun_version_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_commands(tmp_path, monkeypatch, {"mpirun": "mpirun (Open MPI) 4.1.4"})
    assert doctor.check_mpi() == Check("MPI", "ok", "mpirun (Open MPI) 4.1.4", False)


def _which_only(folder: Path, names: tuple[str, ...]) -> Callable[[str], str | None]:
    """A `shutil.which` that sees only our fake tools, so a real Slurm install cannot interfere."""

    def which(command: str) -> str | None:
        return str(folder / command) if command in names else None

    return which
