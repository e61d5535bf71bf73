"""Node basics: host memory, free space where runs and scratch files go, a writable shared folder."""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from harness.validate.context import NodeContext
from harness.validate.judge import result
from harness.validate.results import CheckResult, Measurement
from harness.validate.spec import check
from harness.validate.verdict import Verdict

GIB = 2.0**30
MEMINFO = Path("/proc/meminfo")


def read_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo as bytes per field (`MemTotal: 16318480 kB`)."""
    found: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            found[key.strip()] = int(parts[0]) * (1024 if parts[1:2] == ["kB"] else 1)
    return found


@check("node.memory", "host memory: total and available", unit="GiB",
       reference="limits.memory_available_*_fraction")
def node_memory(ctx: NodeContext) -> CheckResult:
    info = read_meminfo(MEMINFO.read_text())
    total, available = info["MemTotal"], info.get("MemAvailable", info.get("MemFree", 0))
    fraction = available / total
    limits = ctx.references
    measurements = (
        Measurement("total", total / GIB, "GiB"),
        Measurement("available", available / GIB, "GiB"),
    )
    text = f"{available / GIB:.1f} of {total / GIB:.1f} GiB available ({fraction:.0%})"
    findings = []
    if fraction < limits.limit("memory_available_fail_fraction"):
        findings.append((Verdict.FAIL, f"only {text}: something holds the node's memory"))
    elif fraction < limits.limit("memory_available_warn_fraction"):
        findings.append((Verdict.WARN, f"only {text}"))
    return result("node.memory", findings, text, measurements)


@check("node.disk", "free space on the run and scratch directories", unit="GiB",
       reference="limits.disk_free_*_gib")
def node_disk(ctx: NodeContext) -> CheckResult:
    places = {"run directory": ctx.settings.run_dir, "scratch": ctx.settings.scratch_dir}
    findings: list[tuple[Verdict, str]] = []
    measurements = []
    for label, path in places.items():
        folder = nearest_existing(path)
        if folder is None:
            findings.append((Verdict.FAIL, f"{label} {path}: no part of the path exists"))
            continue
        free = shutil.disk_usage(folder).free / GIB
        measurements.append(Measurement(f"{label} free", free, "GiB"))
        text = f"{label} {path}: {free:.1f} GiB free"
        if free < ctx.references.limit("disk_free_fail_gib"):
            findings.append((Verdict.FAIL, text))
        elif free < ctx.references.limit("disk_free_warn_gib"):
            findings.append((Verdict.WARN, text))
    summary = ", ".join(f"{m.name} {m.value:.1f} GiB" for m in measurements)
    return result("node.disk", findings, summary, measurements)


def nearest_existing(path: Path) -> Path | None:
    for folder in (path, *path.parents):
        if folder.exists():
            return folder
    return None


@check("node.shared_fs", "the shared file system is writable from this node (write, read back, delete)",
       reference="the bytes written come back")
def node_shared_fs(ctx: NodeContext) -> CheckResult:
    folder = ctx.settings.shared_dir
    if folder is None:
        return CheckResult("node.shared_fs", Verdict.SKIPPED, "no shared directory given (--shared DIR)")
    probe = folder / f".harness-validate-{ctx.node}-{secrets.token_hex(4)}"
    payload = secrets.token_bytes(4096)
    try:
        with open(probe, "xb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        back = probe.read_bytes()
    except OSError as err:
        probe.unlink(missing_ok=True)
        return CheckResult("node.shared_fs", Verdict.FAIL, f"cannot write {probe}: {err.strerror or err}")
    try:
        probe.unlink()
    except OSError as err:
        return CheckResult("node.shared_fs", Verdict.FAIL, f"cannot delete {probe}: {err.strerror or err}")
    if back != payload:
        return CheckResult("node.shared_fs", Verdict.FAIL, f"{probe}: the bytes read back differ from those written")
    return CheckResult("node.shared_fs", Verdict.PASS, f"{folder}: wrote, read back and deleted a file")
