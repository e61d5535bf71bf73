#!/usr/bin/env python3
"""All-reduce bandwidth of each strategy's gradient path, against MPI itself, on 2 local ranks.

Gradient all-reduce is what data parallelism pays per step; for large models it is all that
matters. The question is whether harness's paths move bytes as fast as the machine's MPI does.
One 64 MiB float32 tensor is summed over 2 ranks through:

  multiworker   `tf.distribute.get_replica_context().all_reduce(SUM, t)` inside `strategy.run` in a
                `tf.function` (what the Keras optimizer does with gradients), 2 processes started
                with `harness.distribute.cluster.launcher_env`; the strategy as harness builds it
                (CommunicationImplementation AUTO) and with RING forced
  horovod       `hvd.grouped_allreduce([t], op=hvd.Sum)` in a `tf.function` (harness's Horovod path),
                over Gloo and over MPI (`horovodrun -np 2 --gloo` / `--mpi`)
  mpi4py        `comm.Allreduce` of the same NumPy buffer (`mpirun -np 2`): the reference
  *_srun        (opt-in) Horovod over MPI and mpi4py as `harness submit` launches them: one
                `srun --mpi=pmix` step on the local Slurm cluster, on one node or across two

Every rank is pinned to its own core, as in bench_scaling.py. Each run warms up, then times
iterations (each one after a small barrier, so both ranks start together) and keeps rank 0's
median; runs are repeated with the order alternating. Algorithm bandwidth = bytes / time.

    python scripts/bench_allreduce.py [--repeats 5] [--iterations 7] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import (
    ROOT,
    add_output_arguments,
    close_section,
    cluster_env,
    load_average,
    machine_suffix,
    machine_words,
    markers,
    measure_and_publish,
    pin_gpu,
    pinning_env,
    provenance,
    provenance_line,
    source_version,
    start_process,
)

NAME = "bench_allreduce"
RESULT_TAG = "ALLREDUCE_RESULT"
CONTENDERS = ("multiworker_auto", "multiworker_ring", "horovod_gloo", "horovod_mpi", "mpi4py")
HEAP = {"MALLOC_MMAP_THRESHOLD_": str(2**30), "MALLOC_TRIM_THRESHOLD_": str(2**31), "GLIBC_TUNABLES": ""}
THP = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}  # glibc >= 2.35: madvise(MADV_HUGEPAGE) on its mappings
NO_THP = {"GLIBC_TUNABLES": ""}  # the harness paths as before distribute.huge_pages
# Settings tried on top of the default paths (issue: collectives on CPU nodes), selectable with
# --contenders: name -> (base contender, environment, implementation / extra launcher arguments).
VARIANTS: dict[str, tuple[str, dict[str, str], str]] = {
    "multiworker_ring_pack4m": ("multiworker_ring", {}, "ring:4194304"),
    "multiworker_ring_pack64m": ("multiworker_ring", {}, "ring:67108864"),
    "horovod_gloo_nofusion": ("horovod_gloo", {"HOROVOD_FUSION_THRESHOLD": "0"}, ""),
    "horovod_gloo_cycle0.1": ("horovod_gloo", {"HOROVOD_CYCLE_TIME": "0.1"}, ""),
    "horovod_mpi_nofusion": ("horovod_mpi", {"HOROVOD_FUSION_THRESHOLD": "0"}, ""),
    "horovod_mpi_cycle0.1": ("horovod_mpi", {"HOROVOD_CYCLE_TIME": "0.1"}, ""),
    "horovod_mpi_fusion128m": ("horovod_mpi", {"HOROVOD_FUSION_THRESHOLD": str(128 * 2**20)}, ""),
    "mpi4py_fresh_output": ("mpi4py", {}, "fresh"),
    # NumPy asks for transparent huge pages on large arrays; TensorFlow's allocator does not
    "mpi4py_fresh_output_4k": ("mpi4py", {}, "fresh4k"),
    # glibc serves blocks above its mmap threshold (at most 32 MiB) with a fresh mapping per call;
    # below it, a freed block could be reused without page faults (no huge pages, to tell them apart)
    "horovod_mpi_heap": ("horovod_mpi", HEAP, ""),
    "horovod_gloo_heap": ("horovod_gloo", HEAP, ""),
    "multiworker_auto_heap": ("multiworker_auto", HEAP, ""),
    "mpi4py_fresh_output_4k_thp": ("mpi4py", THP, "fresh4k"),
    "mpi4py_thp": ("mpi4py", THP, ""),
    "horovod_mpi_4k": ("horovod_mpi", NO_THP, ""),
    "horovod_gloo_4k": ("horovod_gloo", NO_THP, ""),
    "multiworker_auto_4k": ("multiworker_auto", NO_THP, ""),
}
# The launch `harness submit` uses for Horovod over MPI (srun with PMIx, no mpirun), on the local
# Slurm cluster of slurm/cluster.sh (started if needed): name -> (worker, nodes). Opt-in with
# --contenders, since they need root the first time the cluster starts.
SRUN_CONTENDERS: dict[str, tuple[str, int]] = {
    "horovod_mpi_srun": ("horovod", 1),
    "horovod_mpi_srun_2nodes": ("horovod", 2),
    "mpi4py_srun": ("mpi4py", 1),
    "mpi4py_srun_2nodes": ("mpi4py", 2),
}


# --------------------------------------------------------------------------- worker side


FAULTS: list[float] = []  # minor page faults per timed call of this process, for the report


def time_iterations(op: Callable[[], Any], barrier: Callable[[], Any], warmup: int, iterations: int) -> list[float]:
    """Seconds per call of `op`, each call started right after a barrier."""
    for _ in range(warmup):
        barrier()
        op()
    times = []
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(iterations):
        barrier()
        started = time.perf_counter()
        op()
        times.append(time.perf_counter() - started)
    FAULTS[:] = [(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / iterations]
    return times


def report(rank: int, times: list[float], nbytes: int, check: float, expected: float) -> None:
    if abs(check - expected) > 1e-3:
        raise SystemExit(f"rank {rank}: all-reduce returned {check}, expected {expected}")
    if rank == 0:
        faults = FAULTS[0] if FAULTS else None
        print(f"{RESULT_TAG} {json.dumps({'times': times, 'bytes': nbytes, 'faults': faults})}", flush=True)


def worker_tf(args: argparse.Namespace) -> None:
    """MultiWorkerMirroredStrategy as harness builds it, or the same with RING forced."""
    import tensorflow as tf

    from harness.config.schema import DistributeConfig
    from harness.distribute.cluster import detect
    from harness.distribute.strategy import TFStrategy, bind_gpu, make_strategy

    if args.implementation == "harness":
        strategy = make_strategy(DistributeConfig(strategy="multiworker"))
    else:
        cluster = detect(os.environ)
        bind_gpu(cluster)  # one GPU per rank, as make_strategy does: else each rank takes every GPU
        resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec(cluster.tf_config()["cluster"]),
            task_type="worker",
            task_id=cluster.rank,
            rpc_layer="grpc",
        )
        kind, _, pack = args.implementation.partition(":")
        implementation = getattr(tf.distribute.experimental.CommunicationImplementation, kind.upper())
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=implementation, bytes_per_pack=int(pack or 0)
        )
        strategy = TFStrategy(
            "multiworker",
            tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver, communication_options=options),
            cluster,
        )
    rank = strategy.rank
    with strategy.scope():  # places the inputs on this worker's device of the cluster
        tensor = tf.fill([args.elements], float(rank + 1))
        small = tf.ones([1])

    def all_reduce_sum(t: tf.Tensor) -> tf.Tensor:
        return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, t)

    # Captured, not passed as arguments: a function argument is a placeholder without the
    # worker's device, and the collective then has no destination.
    big = tf.function(lambda: strategy.run(all_reduce_sum, args=(tensor,)))
    tiny = tf.function(lambda: strategy.run(all_reduce_sum, args=(small,)))

    out: list[Any] = []
    times = time_iterations(lambda: _keep_last(out, big()), tiny, args.warmup, args.iterations)
    check = float(np.asarray(_local(out[-1]))[0])
    report(rank, times, args.elements * 4, check, float(sum(range(1, strategy.world_size + 1))))


def _keep_last(out: list[Any], value: Any) -> None:
    """Keep only the latest result: holding every 64 MiB output made each call map fresh memory,
    and the benchmark measured page faults instead of the all-reduce."""
    out[:] = [value]


def _local(value: Any) -> Any:
    """This process's result, whether `strategy.run` returned a PerReplica or a plain tensor."""
    local = getattr(value, "values", None)
    return local[0] if local else value


def worker_horovod(args: argparse.Namespace) -> None:
    """harness's Horovod path: grouped_allreduce inside a tf.function, as in the train step."""
    import horovod.tensorflow as hvd
    import tensorflow as tf

    from harness.distribute.strategy import MPI_YIELD

    os.environ.setdefault(*MPI_YIELD)  # as harness's Horovod ranks over MPI do
    hvd.init()
    pin_gpu(hvd.local_rank())
    tensor = tf.fill([args.elements], float(hvd.rank() + 1))
    small = tf.ones([1])

    @tf.function
    def big(t: tf.Tensor) -> tf.Tensor:
        return hvd.grouped_allreduce([t], op=hvd.Sum)[0]

    out: list[Any] = []
    times = time_iterations(
        lambda: _keep_last(out, big(tensor)),
        lambda: hvd.allreduce(small, op=hvd.Sum, name="barrier"),
        args.warmup,
        args.iterations,
    )
    report(hvd.rank(), times, args.elements * 4, float(out[-1][0]), float(sum(range(1, hvd.size() + 1))))


def worker_mpi4py(args: argparse.Namespace) -> None:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    if args.implementation == "fresh4k":
        np.core.multiarray._set_madvise_hugepage(False)
    send = np.full(args.elements, float(comm.rank + 1), np.float32)
    out = [np.empty_like(send)]

    def allreduce() -> None:
        # "fresh": a new output buffer per call, as a TF op (Horovod's) allocates its output tensor
        recv = np.empty_like(send) if args.implementation.startswith("fresh") else out[-1]
        comm.Allreduce(send, recv, op=MPI.SUM)
        out[-1] = recv

    times = time_iterations(allreduce, comm.Barrier, args.warmup, args.iterations)
    report(comm.rank, times, send.nbytes, float(out[-1][0]), float(sum(range(1, comm.size + 1))))


# --------------------------------------------------------------------------- driver side


def worker_args(args: argparse.Namespace, kind: str, implementation: str = "harness") -> list[str]:
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        kind,
        "--implementation",
        implementation,
        "--elements",
        str(args.elements),
        "--warmup",
        str(args.warmup),
        "--iterations",
        str(args.iterations),
    ]


def collect(processes: list[subprocess.Popen[str]], timeout_s: float, label: str) -> dict[str, Any]:
    """Wait for every process; the result line comes from rank 0, wherever a launcher prints it."""
    deadline = time.monotonic() + timeout_s
    outputs = []
    for process in processes:
        try:
            out, _ = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for other in processes:
                if other.poll() is None:
                    os.killpg(other.pid, signal.SIGKILL)
            out, _ = process.communicate()
            raise RuntimeError(f"{label}: timed out after {timeout_s:.0f}s\n{out[-3000:]}") from None
        outputs.append(out)
        if process.returncode != 0:
            for other in processes:
                if other.poll() is None:
                    os.killpg(other.pid, signal.SIGKILL)
            raise RuntimeError(f"{label}: exit code {process.returncode}\n{out[-3000:]}")
    for out in outputs:
        # mpirun may interleave another rank's output on the same line: decode only the object.
        if RESULT_TAG in out:
            text = out.split(RESULT_TAG, 1)[1].lstrip()
            result, _ = json.JSONDecoder().raw_decode(text)
            return dict(result)
    raise RuntimeError(f"{label}: no result line\n" + outputs[0][-3000:])


def run_contender(name: str, args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    from harness.distribute.cluster import launcher_env
    from harness.distribute.launcher import free_port_range
    from harness.distribute.memory import huge_page_env

    ranks = 2
    horovodrun = shutil.which("horovodrun") or str(Path(sys.executable).parent / "horovodrun")
    base, extra_env, variant_arg = VARIANTS.get(name, (name, {}, ""))
    harness_path = not base.startswith("mpi4py") and SRUN_CONTENDERS.get(name, ("horovod", 0))[0] == "horovod"
    # the harness starts its workers with large blocks on huge pages (distribute.huge_pages)
    env = {**env, **(huge_page_env(env) if harness_path else {}), **extra_env}
    if name in SRUN_CONTENDERS:
        processes = [start_process(srun_command(args, name, ranks), {**env, **slurm_environment()})]
    elif base.startswith("multiworker"):
        implementation = "harness" if base == "multiworker_auto" else (variant_arg or "ring")
        port = free_port_range(ranks)
        processes = [
            start_process(worker_args(args, "tf", implementation), {**env, **launcher_env(rank, ranks, port)})
            for rank in range(ranks)
        ]
    elif base.startswith("horovod"):
        controller = base.split("_", 1)[1]
        mpi_args = variant_arg.removeprefix("--mpi-args=")
        if controller == "mpi" and os.geteuid() == 0:
            mpi_args = f"--allow-run-as-root {mpi_args}".strip()
        extra = [f"--mpi-args={mpi_args}"] if mpi_args else []
        command = [horovodrun, "-np", str(ranks), "-H", f"localhost:{ranks}", f"--{controller}", *extra]
        processes = [start_process([*command, *worker_args(args, "horovod")], env)]
    else:
        mpirun = ["mpirun", "--bind-to", "none", "-np", str(ranks)]
        if os.geteuid() == 0:
            mpirun.insert(1, "--allow-run-as-root")
        processes = [start_process([*mpirun, *worker_args(args, "mpi4py", variant_arg or "harness")], env)]
    return collect(processes, args.timeout, name)


def srun_command(args: argparse.Namespace, name: str, ranks: int) -> list[str]:
    """One job step as `harness submit` starts Horovod over MPI: srun serves PMIx to every rank."""
    from harness.distribute.strategy import MPI_ENVIRONMENT
    from harness.slurm.script import MPI_SRUN_ARGS

    kind, nodes = SRUN_CONTENDERS[name]
    exports = ",".join(f"{k}={v}" for k, v in MPI_ENVIRONMENT.items()) if kind == "horovod" else ""
    return [
        "srun",
        *MPI_SRUN_ARGS,
        f"--nodes={nodes}",
        f"--ntasks={ranks}",
        "--kill-on-bad-exit=1",
        f"--export=ALL{',' + exports if exports else ''}",
        *worker_args(args, kind),
    ]


_SLURM_ENV: dict[str, str] = {}


def slurm_environment() -> dict[str, str]:
    """The local cluster's client variables; the cluster is started on first use."""
    if not _SLURM_ENV:
        _SLURM_ENV.update(cluster_env())
    return _SLURM_ENV


def measure(args: argparse.Namespace) -> dict[str, Any]:
    runs: dict[str, list[float]] = {name: [] for name in args.contenders}
    faults: dict[str, list[float | None]] = {name: [] for name in args.contenders}
    loads = [load_average()]
    with tempfile.TemporaryDirectory(prefix="bench_allreduce_pin_") as hook_dir:
        env = pinning_env(Path(hook_dir), ROOT)
        machine = provenance(env)
        for repeat in range(args.repeats):
            order = args.contenders if repeat % 2 == 0 else list(reversed(args.contenders))
            for name in order:
                result = run_contender(name, args, env)
                seconds = statistics.median(result["times"])
                runs[name].append(seconds)
                faults[name].append(result.get("faults"))
                print(
                    f"repeat {repeat + 1}/{args.repeats} {name}: median {seconds * 1e3:.1f} ms = "
                    f"{result['bytes'] / seconds / 1e9:.2f} GB/s (iterations ms: "
                    + ", ".join(f"{t * 1e3:.0f}" for t in result["times"])
                    + f"; minor page faults per call: {result.get('faults')})",
                    flush=True,
                )
            loads.append(load_average())
    return {
        "seconds": runs,
        "faults": faults,
        "loads": loads,
        "bytes": args.elements * 4,
        "date": time.strftime("%Y-%m-%d"),
        "source": source_version(),
        "settings": {"repeats": args.repeats, "iterations": args.iterations, "warmup": args.warmup},
        "provenance": machine,
    }


def markdown(measured: dict[str, Any], analysis: Path | None = None, section: str = NAME) -> str:
    import tensorflow as tf

    nbytes = measured["bytes"]
    seconds = measured["seconds"]
    cfg = measured["settings"]
    gbps = {name: [nbytes / s / 1e9 for s in values] for name, values in seconds.items()}
    ratios = {name: [a / b for a, b in zip(values, gbps["mpi4py"], strict=True)] for name, values in gbps.items()}
    labels = {
        "multiworker_auto": "multiworker, as harness builds it (CommunicationImplementation.AUTO), huge pages",
        "multiworker_ring": "multiworker, CommunicationImplementation.RING, huge pages",
        "horovod_gloo": "horovod `grouped_allreduce`, Gloo (`horovodrun --gloo`), huge pages",
        "horovod_mpi": "horovod `grouped_allreduce`, MPI (`horovodrun --mpi`), huge pages",
        "mpi4py": "mpi4py `comm.Allreduce` (`mpirun`), reference",
        "horovod_mpi_srun": "horovod `grouped_allreduce`, MPI, `srun --mpi=pmix`, 1 node x 2 tasks",
        "horovod_mpi_srun_2nodes": "horovod `grouped_allreduce`, MPI, `srun --mpi=pmix`, 2 nodes x 1 task",
        "mpi4py_srun": "mpi4py `comm.Allreduce`, `srun --mpi=pmix`, 1 node x 2 tasks",
        "mpi4py_srun_2nodes": "mpi4py `comm.Allreduce`, `srun --mpi=pmix`, 2 nodes x 1 task",
    }
    slurm = any(name in SRUN_CONTENDERS for name in seconds)
    try:
        import horovod

        hvd_version = horovod.__version__
    except ImportError:
        hvd_version = "n/a"
    begin, end = markers(section)
    lines = [
        begin,
        f"## All-reduce bandwidth, 64 MiB on 2 ranks{', on the local Slurm cluster' if slurm else ''}"
        f"{machine_suffix(measured)} (scripts/bench_allreduce.py)",
        "",
        f"Measured {measured['date']} (harness {measured.get('source', 'unknown')}) on {machine_words(measured)}, "
        f"TensorFlow {tf.__version__}, Horovod {hvd_version}, {_mpi_version()}. One float32 tensor of "
        f"{nbytes / 2**20:.0f} MiB summed over 2 local ranks, each pinned to its own cores (one on a CPU node); "
        "per run "
        f"{cfg['warmup']} warm-up and {cfg['iterations']} timed iterations (rank 0's median), "
        f"{cfg['repeats']} interleaved repeats"
        + (" (the Slurm steps on slurm/cluster.sh's two nodes, which are both this machine)" if slurm else "")
        + ". Load average before and after each repeat: "
        f"{' | '.join(measured['loads'])} (the machine was shared with other jobs).",
        "",
        provenance_line(measured.get("provenance")),
        *_on_gpus(measured),
        "",
        "Algorithm bandwidth = bytes / time (for 2 ranks equal to the bus bandwidth).",
        "",
        "| path | median time (ms) | median GB/s | / mpi4py (median) | GB/s per repeat | page faults per call |",
        "|---|---|---|---|---|---|",
    ]
    for name in seconds:
        label = labels[name] if name in labels else _variant_label(name)
        lines.append(
            f"| {label} | {statistics.median(seconds[name]) * 1e3:.0f} | "
            f"{statistics.median(gbps[name]):.2f} | **{statistics.median(ratios[name]):.2f}** | "
            + ", ".join(f"{v:.2f}" for v in gbps[name])
            + f" | {_faults(measured.get('faults', {}).get(name))} |"
        )
    return close_section(lines, analysis, end)


def _on_gpus(measured: dict[str, Any]) -> list[str]:
    """What the labels mean on a GPU node, where they would otherwise mislead."""
    if not (measured.get("provenance") or {}).get("gpus"):
        return []
    return [
        "",
        "On this GPU node each rank's tensor lives on its own GPU: multiworker as harness builds it "
        "(AUTO) and Horovod (when built with NCCL) all-reduce it with NCCL, so Gloo and MPI in the labels "
        "name only Horovod's controller; `CommunicationImplementation.RING` and its pack variants keep "
        "TensorFlow's ring over gRPC. Huge pages and page faults concern host memory. "
        "mpi4py still sums host memory: the ratios compare the GPU paths with host MPI, not with NCCL "
        "itself (nccl-tests' `all_reduce_perf` measures that).",
    ]


def _faults(values: list[float | None] | None) -> str:
    """Minor page faults per timed call in rank 0 (median of the runs); one per 4 KiB page first touched."""
    known = [v for v in values or [] if v is not None]
    return f"{statistics.median(known):.0f}" if known else "n/a"


def _variant_label(name: str) -> str:
    base, env, arg = VARIANTS[name]
    settings = [f"{k}={v}" for k, v in env.items()] if env != NO_THP else ["without huge pages (as before)"]
    if arg == "fresh":
        settings.append("a new output buffer per call")
    elif arg == "fresh4k":
        settings.append("a new output buffer per call, NumPy's huge-page request off")
    elif arg.startswith("ring:"):
        settings.append(f"bytes_per_pack={int(arg.split(':')[1]) // 2**20} MiB")
    elif arg:
        settings.append(f"`{arg}`")
    return f"{base}, " + ", ".join(settings)


def _mpi_version() -> str:
    """The MPI library's name, without starting MPI in this process: a started MPI puts its
    OMPI_*/PMIX_* variables into the environment every later child inherits, and an `mpirun`
    started from here (the next benchmark, a test) then exits 1 without a word."""
    try:
        import mpi4py

        if "mpi4py.MPI" not in sys.modules:
            mpi4py.rc.initialize = False
            mpi4py.rc.finalize = False
        from mpi4py import MPI

        return f"mpi4py + {MPI.Get_library_version().splitlines()[0].split(',')[0].strip()}"
    except Exception:  # noqa: BLE001 - only a label
        return "MPI unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=7, help="timed iterations per run (>= 5)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--elements", type=int, default=16 * 2**20, help="float32 elements (64 MiB)")
    parser.add_argument(
        "--contenders",
        nargs="+",
        choices=[*CONTENDERS, *VARIANTS, *SRUN_CONTENDERS],
        default=list(CONTENDERS),
        help="mpi4py is needed",
    )
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds per run before it is killed")
    add_output_arguments(parser, "timings")
    parser.add_argument(
        "--section",
        help=f"section name in the file (e.g. bench_allreduce_slurm; default {NAME}; `_gpu` added on a GPU node)",
    )
    parser.add_argument("--worker", choices=("tf", "horovod", "mpi4py"), help=argparse.SUPPRESS)
    parser.add_argument("--implementation", default="harness", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        {"tf": worker_tf, "horovod": worker_horovod, "mpi4py": worker_mpi4py}[args.worker](args)
        return 0
    if "mpi4py" not in args.contenders:
        parser.error("--contenders must include mpi4py: every figure is relative to it")
    return measure_and_publish(NAME, args, measure, markdown)


if __name__ == "__main__":
    sys.exit(main())
