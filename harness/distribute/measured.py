"""What `harness validate` measured about the multi-process strategies, and what `auto` makes of it.

Which of `multiworker` and `horovod` is faster with several processes depends on the machine:
on one 2-core CPU multiworker kept 1.16x Horovod's rate, on another it was the slowest. So no
constant is right everywhere. The end-to-end check of `harness validate` (`e2e.training`) trains
the same short run through both and saves the rates here, one JSON file per node:

    $HARNESS_MEASUREMENTS/NODE.json   (default ${XDG_CACHE_HOME:-~/.cache}/harness/measurements)

On a cluster the home directory is shared, so what node jobs measured is read on the login node
by `harness submit`; `harness train --workers N` reads the records of the machine it runs on.
Each validation of a node replaces its file (written atomically), so the store stays small and
node jobs running at the same time never write the same file.

`auto_choice` is the pure decision over the records: the launcher and the Slurm planner call it
and hand the concrete strategy to every rank, which never reads this store itself (a node-local
cache could make ranks disagree and hang the job). No TensorFlow or Horovod import here.
"""

from __future__ import annotations

import json
import os
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness import atomic
from harness.envinfo import package_version
from harness.errors import UserInputError

ENV = "HARNESS_MEASUREMENTS"
SCHEMA_VERSION = 1
MARGIN = 1.10
"""Horovod must be at least this much faster than multiworker to be picked: end-to-end figures of
a short run swing by about 10% between runs on a shared 2-core machine, so a smaller lead is noise
and the default (multiworker) stays."""

TENSORFLOW_DISTS = ("tensorflow", "tensorflow-cpu", "tensorflow-intel", "tensorflow-macos", "tf-nightly")
NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")
CPUINFO = Path("/proc/cpuinfo")
PROGRAM = "harness validate (e2e.training)"


@dataclass(frozen=True)
class Machine:
    """What decides how fast the strategies run: records of another machine say nothing here."""

    cpu_model: str
    logical_cpus: int
    gpus: int = 0
    gpu_model: str | None = None

    def describe(self) -> str:
        gpus = f", {self.gpus} x {self.gpu_model or 'GPU'}" if self.gpus else ""
        return f"{self.cpu_model} ({self.logical_cpus} CPUs{gpus})"


@dataclass(frozen=True)
class Record:
    """One node's measurement: the rates (samples/s) of every strategy that ran, N processes each."""

    node: str
    partition: str | None
    machine: Machine
    versions: Mapping[str, str | None]
    processes: int
    rates: Mapping[str, float]
    measured_at: str
    measured_by: str = PROGRAM
    source: str = field(default="", compare=False)
    """The file it was read from (not saved)."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["source"]
        return {"schema_version": SCHEMA_VERSION, **data, "versions": dict(self.versions), "rates": dict(self.rates)}

    @property
    def day(self) -> str:
        return self.measured_at[:10]


@dataclass(frozen=True)
class Choice:
    """The multi-process strategy `auto` prefers (`multiworker` or `horovod`) and one line saying why."""

    strategy: str
    reason: str


# --------------------------------------------------------------------------- the store


def store_folder(environ: Mapping[str, str]) -> Path:
    """`HARNESS_MEASUREMENTS`, else `${XDG_CACHE_HOME:-~/.cache}/harness/measurements`.

    A path that exists and is not a folder is bad input (exit 2), found before anything runs.
    """
    given = environ.get(ENV, "").strip()
    if given:
        folder = Path(given).expanduser().absolute()
    else:
        cache = environ.get("XDG_CACHE_HOME", "").strip() or str(Path(environ.get("HOME") or Path.home()) / ".cache")
        folder = Path(cache).expanduser().absolute() / "harness" / "measurements"
    if folder.exists() and not folder.is_dir():
        source = f"{ENV}={given[:300]}" if given else "the default"
        raise UserInputError(
            f"{source}: {folder} is not a folder. {ENV} names the folder where harness validate keeps its "
            "strategy measurements (one JSON file per node); point it at a folder, or unset it for "
            "~/.cache/harness/measurements"
        )
    return folder


def safe_name(node: str) -> str:
    """A node name as a file name: anything but letters, digits, '.', '-' and '_' becomes '_'."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", node).lstrip(".") or "node"


def write_record(folder: Path, record: Record) -> Path:
    """Replace the node's file with `record` (atomically: a reader never sees half a file)."""
    target = folder / f"{safe_name(record.node)}.json"
    atomic.make_dirs(folder)
    atomic.write_json(target, record.to_dict())
    return target


def read_records(folder: Path) -> tuple[list[Record], list[str]]:
    """Every readable record in `folder`, and a one-line warning per file that is not one."""
    if not folder.is_dir():
        return [], []
    records: list[Record] = []
    warnings: list[str] = []
    for path in sorted(folder.glob("*.json")):
        try:
            records.append(parse_record(json.loads(path.read_text(encoding="utf-8")), str(path)))
        except (OSError, UnicodeDecodeError, ValueError) as err:
            warnings.append(f"strategy measurement {path} ignored: {_first_line(err)}")
    return records, warnings


def parse_record(data: Any, source: str = "") -> Record:
    """A record from its JSON; ValueError saying what is wrong with it."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"schema_version {data.get('schema_version')!r:.40}, this harness reads {SCHEMA_VERSION}")
    try:
        machine = data["machine"]
        rates = {str(k): float(v) for k, v in data["rates"].items() if isinstance(v, int | float) and v > 0}
        return Record(
            node=str(data["node"]),
            partition=None if data.get("partition") is None else str(data["partition"]),
            machine=Machine(str(machine["cpu_model"]), int(machine["logical_cpus"]), int(machine["gpus"]),
                            None if machine.get("gpu_model") is None else str(machine["gpu_model"])),
            versions={str(k): None if v is None else str(v) for k, v in data["versions"].items()},
            processes=int(data["processes"]),
            rates=rates,
            measured_at=str(data["measured_at"]),
            measured_by=str(data.get("measured_by") or PROGRAM),
            source=source,
        )
    except (KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"missing or malformed field {err}") from None


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


# --------------------------------------------------------------------------- this machine


def this_machine() -> Machine:
    """This machine's CPU model, logical CPUs and NVIDIA GPUs, read without TensorFlow."""
    gpu_models = _nvidia_gpu_models()
    return Machine(cpu_model(), os.cpu_count() or 1, len(gpu_models), gpu_models[0] if gpu_models else None)


def cpu_model() -> str:
    """The CPU's model name as /proc/cpuinfo gives it (the processor name elsewhere)."""
    try:
        for line in CPUINFO.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "unknown CPU"


def _nvidia_gpu_models() -> list[str]:
    """The driver's list of GPUs (one folder each with an `information` file naming the model)."""
    models = []
    try:
        folders = sorted(NVIDIA_GPUS.iterdir())
    except OSError:
        return []
    for folder in folders:
        try:
            text = (folder / "information").read_text()
        except OSError:
            continue
        found = re.search(r"^Model:\s*(.+)$", text, flags=re.M)
        models.append(found.group(1).strip() if found else "NVIDIA GPU")
    return models


def stack_versions() -> dict[str, str | None]:
    """TensorFlow's and Horovod's versions from package metadata (nothing imported)."""
    tensorflow = next((v for v in map(package_version, TENSORFLOW_DISTS) if v), None)
    return {"tensorflow": tensorflow, "horovod": package_version("horovod")}


# --------------------------------------------------------------------------- the decision


def auto_choice(
    records: Sequence[Record],
    *,
    processes: int,
    versions: Mapping[str, str | None],
    horovod_installed: bool,
    machine: Machine | None = None,
    partition: str | None = None,
) -> Choice:
    """`multiworker` or `horovod` for `auto` with `processes` processes, from the matching records.

    A record matches when it was measured in `partition` (when given), else on the same
    `machine`, with the same TensorFlow and Horovod versions (others are ignored, and the reason
    says so). Horovod is picked only when its rate is at least MARGIN (1.10x) multiworker's:
    e2e figures swing by ~10% on a shared 2-core machine, so a smaller lead is noise. Over
    several nodes the median ratio decides. Records made with the same number of processes are
    used when there are any, else those made with another number.
    """
    scope = f"partition {partition}" if partition else "this machine"
    mine = [r for r in records if (r.partition == partition if partition else r.machine == machine)]
    if not mine:
        hint = f"harness validate --partition {partition}" if partition else "harness validate"
        return Choice("multiworker", f"auto: multiworker (no measurement for {scope}: {hint} measures it)")
    current = [r for r in mine if _same_stack(r.versions, versions)]
    if not current:
        return Choice("multiworker", f"auto: multiworker ({_stale(mine, versions, scope)})")
    compared = [r for r in current if {"multiworker", "horovod"} <= set(r.rates)]
    if not compared:
        return Choice("multiworker", f"auto: multiworker (Horovod did not run when harness validate measured "
                                     f"{scope}: {_nodes(current)})")
    same = [r for r in compared if r.processes == processes]
    used = same or compared
    ratio = statistics.median(r.rates["horovod"] / r.rates["multiworker"] for r in used)
    where = _measured(used)
    if ratio >= MARGIN and horovod_installed:
        return Choice("horovod", f"auto: horovod, {ratio:.2f}x multiworker {where}")
    if ratio >= MARGIN:
        return Choice("multiworker", f"auto: multiworker (horovod was {ratio:.2f}x multiworker {where}, "
                                     "but Horovod is not installed here)")
    if ratio >= 1.0:
        return Choice("multiworker", f"auto: multiworker, horovod only {ratio:.2f}x its rate (under the "
                                     f"{MARGIN:.2f}x margin) {where}")
    return Choice("multiworker", f"auto: multiworker, {1 / ratio:.2f}x horovod {where}")


def _same_stack(measured: Mapping[str, str | None], current: Mapping[str, str | None]) -> bool:
    return all(measured.get(name) == current.get(name) for name in ("tensorflow", "horovod"))


def _stack(versions: Mapping[str, str | None]) -> str:
    return f"TensorFlow {versions.get('tensorflow') or 'none'}, Horovod {versions.get('horovod') or 'none'}"


def _stale(records: Sequence[Record], versions: Mapping[str, str | None], scope: str) -> str:
    newest = max(records, key=lambda r: r.measured_at)
    return (
        f"{len(records)} measurement(s) for {scope} ignored: made with {_stack(newest.versions)}, "
        f"this is {_stack(versions)}; harness validate measures again"
    )


def _nodes(records: Sequence[Record]) -> str:
    names = sorted({r.node for r in records})
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _measured(records: Sequence[Record]) -> str:
    """`with 2 processes as harness validate measured on n1 on 2026-12-01` (median over several nodes)."""
    counts = sorted({r.processes for r in records})
    processes = f"with {'/'.join(map(str, counts))} processes"
    days = sorted({r.day for r in records})
    when = days[0] if len(days) == 1 else f"{days[0]}..{days[-1]}"
    if len(records) == 1:
        return f"{processes} as harness validate measured on {records[0].node} on {when}"
    return f"{processes} (median of {len(records)} nodes: {_nodes(records)}) as harness validate measured on {when}"


def stored_choice(
    processes: int,
    environ: Mapping[str, str],
    *,
    horovod_installed: bool,
    partition: str | None = None,
    machine: Machine | None = None,
) -> tuple[Choice, list[str]]:
    """`auto_choice` over the store named by `environ`, for `partition` or else this machine;
    with the warnings about files that could not be read (the caller prints them)."""
    records, warnings = read_records(store_folder(environ))
    if partition is None and machine is None:
        machine = this_machine()
    choice = auto_choice(records, processes=processes, versions=stack_versions(), horovod_installed=horovod_installed,
                         machine=machine, partition=partition)
    return choice, warnings
