"""What the benchmark scripts share: their section of docs/benchmarks.md, provenance, core pinning.

Each script owns one section between `<!-- NAME:begin -->` and `<!-- NAME:end -->` markers and
rewrites only that section, so the benchmarks can run separately and in any order.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "slurm" / "cluster.sh"
BENCHMARKS_MD = ROOT / "docs" / "benchmarks.md"
HEADER = "# Benchmarks\n\nFigures written by the scripts in `scripts/`.\n\n"

# Ranks started by the harness launcher, horovodrun or mpirun cannot be wrapped in `taskset`
# by us, so a sitecustomize hook pins each one to its share of the cores (HARNESS_BENCH_PIN cores
# each, from the first; one on CPU nodes) as the interpreter starts, before TensorFlow creates any
# thread (threads inherit the affinity of the thread that creates them). Layout.cores is the same rule.
PIN_HOOK = """\
import os


def _bench_pin() -> None:
    per = os.environ.get("HARNESS_BENCH_PIN", "")
    if not per.isdecimal() or int(per) < 1:
        return
    ranks = ("HARNESS_RANK", "HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "HARNESS_BENCH_CORE")
    for name in ranks:
        if name in os.environ:
            rank = int(os.environ[name])
            break
    else:
        return
    cores = sorted(os.sched_getaffinity(0))
    start = (rank * int(per)) % len(cores)
    os.sched_setaffinity(0, set(cores[start : start + int(per)]))


_bench_pin()
"""


@dataclass(frozen=True)
class Layout:
    """How a benchmark's worker processes share the node.

    CPU nodes: one core and one TensorFlow/OpenMP thread per worker, so two workers on a 2-core
    machine are the same experiment as two one-core nodes. GPU nodes: one GPU per worker and an
    equal share of the cores with TensorFlow's own thread pools, since one core cannot feed a GPU
    (input pipeline, CUDA host threads, NCCL's proxy thread all need it).
    """

    gpus: int
    cores_per_worker: int

    def cores(self, index: int) -> list[int]:
        """Worker `index`'s cores, by the rule of PIN_HOOK."""
        cores = sorted(os.sched_getaffinity(0))
        start = (index * self.cores_per_worker) % len(cores)
        return cores[start : start + self.cores_per_worker]

    def gpu(self, index: int) -> str:
        """Worker `index`'s GPU as CUDA_VISIBLE_DEVICES names it: the index-th of the GPUs this
        benchmark may use (a Slurm job's `2,3`, UUIDs), as harness's launcher picks them."""
        from harness.distribute.cluster.gpu import cuda_devices

        allowed = cuda_devices(os.environ.get("CUDA_VISIBLE_DEVICES", "")) or [str(i) for i in range(self.gpus)]
        return allowed[index % len(allowed)]

    def describe(self) -> str:
        """The sentence a section says about it."""
        how = "(`taskset`, or `sched_setaffinity` at interpreter start for ranks that a launcher starts)"
        if self.gpus:
            cores = "core" if self.cores_per_worker == 1 else f"{self.cores_per_worker} cores"
            return (
                f"Each worker on its own GPU (`CUDA_VISIBLE_DEVICES` for a process we start, one GPU per local "
                f"rank otherwise) and its own {cores} {how}, with TensorFlow's default threads."
            )
        return (
            f"Each worker pinned to its own core {how} with "
            "TF_NUM_INTRAOP_THREADS=TF_NUM_INTEROP_THREADS=OMP_NUM_THREADS=1."
        )


@cache
def node_layout(workers: int = 2) -> Layout:
    """This node's layout for `workers` workers at once; a GPU node needs a GPU for each."""
    import tensorflow as tf

    gpus = len(tf.config.list_physical_devices("GPU"))
    if not gpus:
        return Layout(gpus=0, cores_per_worker=1)
    if gpus < workers:
        sys.exit(
            f"this benchmark runs {workers} workers at once, one GPU each, but this node shows {gpus} GPU(s): "
            "use a node with more, or measure the CPU with CUDA_VISIBLE_DEVICES= (empty)"
        )
    return Layout(gpus=gpus, cores_per_worker=max(1, len(os.sched_getaffinity(0)) // workers))


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def write_section(path: Path, name: str, section: str) -> None:
    """Replace benchmark `name`'s section of the file (atomically), keeping the other sections."""
    from harness import atomic

    begin, end = markers(name)
    text = path.read_text() if path.exists() else HEADER
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + section + rest.split(end, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    atomic.write_text(path, text)


def add_output_arguments(parser: argparse.ArgumentParser, what: str | None = None) -> None:
    """--write/--no-write; with `what` (the raw figures' name) also --analysis, --json, --from-json."""
    if what:
        parser.add_argument("--analysis", type=Path, help="markdown file appended to the section (the findings)")
        parser.add_argument("--json", type=Path, help=f"also save the raw {what} here")
        parser.add_argument("--from-json", type=Path, help=f"re-render a section from {what} saved with --json")
    parser.add_argument("--write", type=Path, default=BENCHMARKS_MD)
    parser.add_argument("--no-write", action="store_true")


def publish(name: str, section: str, path: Path | None) -> None:
    """Print the section, and write it unless `path` is None (--no-write)."""
    print(section)
    if path is not None:
        write_section(path, name, section)
        print(f"written to {path}")


def close_section(lines: list[str], analysis: Path | None, end: str) -> str:
    """The section's text: its lines, the findings file if given, and the end marker."""
    if analysis:
        lines = [*lines, "", analysis.read_text().strip()]
    return "\n".join([*lines, end]) + "\n"


def measure_and_publish(
    name: str,
    args: argparse.Namespace,
    measure: Callable[[argparse.Namespace], dict[str, Any]],
    render: Callable[[dict[str, Any], Path | None, str], str],
) -> int:
    """Measure (or, with --from-json, take figures saved before), keep them with --json, publish.

    `render(measured, analysis, section)` makes the section, named `args.section` if the script
    has that flag and it was given, else `name`, with `_gpu` added for a GPU node's figures; the
    other flags are add_output_arguments' with `what`.
    """
    measured = json.loads(args.from_json.read_text()) if args.from_json else measure(args)
    if args.json and not args.from_json:
        args.json.write_text(json.dumps(measured, indent=1))
    section = section_name(getattr(args, "section", None) or name, measured)
    publish(section, render(measured, args.analysis, section), None if args.no_write else args.write)
    return 0


def source_version() -> str:
    """The commit measured (with `+dirty` for uncommitted changes): figures go stale with the code."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def load_average() -> str:
    try:
        return " ".join(f"{value:.1f}" for value in os.getloadavg())
    except OSError:
        return "n/a"


def start_process(command: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    """A benchmark process in its own session (so a timeout kills its whole tree), output merged."""
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


THREAD_SETTINGS = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS")
THREAD_VARIABLES = (*THREAD_SETTINGS, "TF_ENABLE_ONEDNN_OPTS")


def pinning_env(hook_dir: Path, *pythonpath: Path, layout: Layout | None = None) -> dict[str, str]:
    """Environment for every benchmark process: each worker on its own cores (Layout), and on CPU
    nodes one TF/OpenMP thread per worker."""
    layout = layout or node_layout()
    (hook_dir / "sitecustomize.py").write_text(PIN_HOOK)
    paths = [str(hook_dir), *map(str, pythonpath), os.environ.get("PYTHONPATH", "")]
    one_thread = {name: "1" for name in THREAD_SETTINGS} if not layout.gpus else {}
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in paths if p),
        "PYTHONUNBUFFERED": "1",
        "HARNESS_BENCH_PIN": str(layout.cores_per_worker),
        **one_thread,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "OMPI_ALLOW_RUN_AS_ROOT": "1",
        "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    }


def provenance(env: dict[str, str] | None = None) -> dict[str, Any]:
    """What the figures depend on besides the code: CPU, vector units, TF build, threads, GPUs.

    The same benchmark differed by 2x between two 2-core machines (an Intel Xeon with AVX-512
    and AMX, and an AMD EPYC), so every section says which machine it measured. `env` is the
    environment the measured processes ran with (thread settings).
    """
    import tensorflow as tf

    env = dict(os.environ if env is None else env)
    flags: set[str] = set()
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    build = tf.sysconfig.get_build_info()
    gpus = tf.config.list_physical_devices("GPU")
    return {
        "cpu": model,
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "avx512": "avx512f" in flags,
        "amx": "amx_tile" in flags,
        "avx2": "avx2" in flags,
        "tensorflow": tf.__version__,
        "cuda_build": bool(build.get("is_cuda_build")),
        "cuda": build.get("cuda_version"),
        "cudnn": build.get("cudnn_version"),
        "gpus": len(gpus),
        "gpu_models": [_gpu_model(tf, gpu) for gpu in gpus],
        "horovod_nccl": _horovod_nccl() if gpus else "not asked",
        "threads": {name: env.get(name, "default") for name in THREAD_VARIABLES},
    }


def _gpu_model(tf: Any, gpu: Any) -> str:
    """The GPU's product name ("NVIDIA A100-SXM4-80GB"), not its TensorFlow device name."""
    try:
        return str(tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name))
    except (RuntimeError, ValueError):
        return str(gpu.name)


def _horovod_nccl() -> str:
    """Whether Horovod's GPU all-reduce goes through NCCL; asked after measuring, so a Horovod that
    does not load (built for another TensorFlow) must not lose the figures."""
    try:
        import horovod.tensorflow as hvd
    except ImportError:
        return "not installed"
    except Exception as err:  # noqa: BLE001 - only a label
        return f"unknown ({type(err).__name__})"
    return "yes" if hvd.nccl_built() else "no"


def provenance_line(info: dict[str, Any] | None) -> str:
    """One sentence for a section's header; sections rendered from old JSON say so."""
    if not info:
        return "Machine: not recorded."

    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    threads = ", ".join(f"{k}={v}" for k, v in info["threads"].items())
    build = f"CUDA {info['cuda']}" if info.get("cuda_build") else "CPU-only"
    return (
        f"Machine: {info['cpu']}, {info['cores']} cores (AVX2 {yes(info['avx2'])}, AVX-512 {yes(info['avx512'])}, "
        f"AMX {yes(info['amx'])}), {info['gpus']} GPU(s){_gpu_words(info)}; TensorFlow {info['tensorflow']} "
        f"({build} build); threads: {threads}."
    )


def _gpu_words(info: dict[str, Any]) -> str:
    if not info.get("gpu_models"):
        return ""
    nccl = info.get("horovod_nccl") or "unknown"
    return f" ({', '.join(gpu_models(info))}; cuDNN {info.get('cudnn') or 'unknown'}; Horovod with NCCL: {nccl})"


def gpu_models(info: dict[str, Any]) -> list[str]:
    """Each model once, with its count ("2x NVIDIA A100"), rather than the same name twice."""
    models: list[str] = info.get("gpu_models") or []
    return [f"{models.count(m)}x {m}" for m in dict.fromkeys(models)]


def machine_suffix(measured: dict[str, Any]) -> str:
    """The CPU (and GPUs) in the heading: sections from different machines must not read as one."""
    info = measured.get("provenance") or {}
    gpus = f", {' + '.join(gpu_models(info))}" if info.get("gpu_models") else ""
    return f", {info['cpu']}{gpus}" if info.get("cpu") else ""


def machine_words(measured: dict[str, Any]) -> str:
    """Architecture and cores of the machine that measured, not of the one that renders the section."""
    info = measured.get("provenance") or {}
    return f"{info.get('arch') or platform.machine()}, {info.get('cores') or os.cpu_count()} CPU cores"


def section_name(name: str, measured: dict[str, Any]) -> str:
    """`name`, or `name_gpu` for figures from a GPU node, which must not overwrite the CPU ones."""
    gpus = (measured.get("provenance") or {}).get("gpus")
    return f"{name}_gpu" if gpus and not name.endswith("_gpu") else name


def pin_gpu(local_rank: int) -> None:
    """On a GPU node, one GPU per rank (as harness's own bind_gpu does); nothing on CPU nodes."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        tf.config.set_visible_devices(gpus[local_rank % len(gpus)], "GPU")
        tf.config.experimental.set_memory_growth(gpus[local_rank % len(gpus)], True)


def cluster_env() -> dict[str, str]:
    """Start the local two-node Slurm cluster (or find it running); the variables its clients need."""
    started = subprocess.run([str(CLUSTER), "start"], capture_output=True, text=True)
    if started.returncode != 0:
        sys.exit(f"slurm/cluster.sh start failed (it needs root the first time):\n{started.stderr[-2000:]}")
    exports = subprocess.run([str(CLUSTER), "env"], capture_output=True, text=True, check=True).stdout
    found = re.findall(r"^export (\w+)=(.*)$", exports, flags=re.M)
    return {name: shlex.split(value)[0] for name, value in found}
