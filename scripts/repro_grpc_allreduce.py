#!/usr/bin/env python3
"""Minimal reproducer, without the harness: MultiWorkerMirroredStrategy's all-reduce on CPU costs
milliseconds per megabyte, and a few milliseconds even for one number.

Two local workers (one core each, one thread pool thread each) build the strategy from a
TF_CONFIG and time `all_reduce(SUM)` of float32 tensors of several sizes inside `strategy.run`
in a `tf.function`, as an optimizer's gradient all-reduce runs; rank 0 prints the median per size.
With `--mpi`, the same sizes are timed with mpi4py's `Allreduce` under `mpirun` for comparison.

On the AMD EPYC of docs/benchmarks.md ("What multiworker's all-reduce costs"), one number took
about 2 ms and each further megabyte about 3 ms: the CPU path moves every chunk through gRPC's
`RecvBuf`, which copies it into a protobuf (`RecvBufRespExtra` packed into an `Any`, with a
`memset` of the buffer first), serializes, parses and copies it out again; `perf` shows a third
of the rank's time in `memmove`/`memset` during the all-reduce. MPI moves the same bytes in a
tenth of the time.

    python scripts/repro_grpc_allreduce.py [--sizes 1 65536 550000 4194304] [--iterations 50] [--mpi]
        [--per-call 32] [--dtype float16]

`--per-call N` runs N all-reduces in one `tf.function` call, as training does with
`training.steps_per_execution`, and reports the time per all-reduce; `--dtype float16` moves the
same number of elements as float16, as `distribute.gradient_compression=fp16` does.

Prints a table; writes nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

SIZES = (1, 65536, 262144, 550000, 1048576, 4194304)
THREADS = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1"}


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def worker_tf(sizes: list[int], iterations: int, per_call: int, dtype: str) -> dict[int, float]:
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    rank = int(json.loads(os.environ["TF_CONFIG"])["task"]["index"])
    medians = {}
    for size in sizes:
        with strategy.scope():
            tensor = tf.cast(tf.fill([size], float(rank + 1)), dtype)

        def reduce(t: tf.Tensor) -> tf.Tensor:
            return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, t)

        def steps() -> None:
            for _ in tf.range(per_call):
                strategy.run(reduce, args=(tensor,))  # noqa: B023 - traced in this iteration

        medians[size] = timed(tf.function(steps), iterations) / per_call
    return medians


def worker_mpi(sizes: list[int], iterations: int) -> dict[int, float]:
    import numpy as np
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    medians = {}
    for size in sizes:
        send = np.full(size, float(comm.rank + 1), np.float32)
        out = np.empty_like(send)
        medians[size] = timed(lambda: comm.Allreduce(send, out), iterations, comm.Barrier)  # noqa: B023
    return medians


def timed(call: Callable[[], object], iterations: int, barrier: Callable[[], object] | None = None) -> float:
    """Median seconds of `iterations` calls after 5 warm-up calls."""
    times = []
    for index in range(iterations + 5):
        if barrier:
            barrier()
        start = time.perf_counter()
        call()
        if index >= 5:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def launch_tf(sizes: list[int], iterations: int, per_call: int, dtype: str) -> str:
    addresses = [f"127.0.0.1:{port}" for port in free_ports(2)]
    procs = []
    for rank in range(2):
        config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": rank}}
        env = {**os.environ, **THREADS, "TF_CONFIG": json.dumps(config), "TF_CPP_MIN_LOG_LEVEL": "2"}
        command = [sys.executable, __file__, "--worker", "tf", "--iterations", str(iterations)]
        command += ["--per-call", str(per_call), "--dtype", dtype, "--sizes"]
        command += [str(size) for size in sizes]
        if shutil.which("taskset") and len(os.sched_getaffinity(0)) >= 2:
            command = ["taskset", "-c", str(sorted(os.sched_getaffinity(0))[rank]), *command]
        procs.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True))
    outputs = [proc.communicate(timeout=900)[0] for proc in procs]
    if any(proc.returncode for proc in procs):
        raise SystemExit("a worker failed")
    return outputs[0]


def launch_mpi(sizes: list[int], iterations: int) -> str:
    command = ["mpirun", "-np", "2", "--bind-to", "core"]
    if os.geteuid() == 0:
        command.insert(1, "--allow-run-as-root")
    command += [sys.executable, __file__, "--worker", "mpi", "--iterations", str(iterations), "--sizes"]
    done = subprocess.run([*command, *map(str, sizes)], env={**os.environ, **THREADS}, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    return done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="float32 elements")
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--per-call", type=int, default=1, help="all-reduces per tf.function call")
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32", help="multiworker only")
    parser.add_argument("--mpi", action="store_true", help="also time mpi4py's Allreduce (needs mpirun, mpi4py)")
    parser.add_argument("--worker", choices=("tf", "mpi"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        if args.worker == "tf":
            medians = worker_tf(args.sizes, args.iterations, args.per_call, args.dtype)
        else:
            medians = worker_mpi(args.sizes, args.iterations)
        rank = os.environ.get("OMPI_COMM_WORLD_RANK") or json.loads(os.environ.get("TF_CONFIG", "{}"))["task"]["index"]
        if str(rank) == "0":
            print(json.dumps(medians))
        return 0
    tf_column = launch_tf(args.sizes, args.iterations, args.per_call, args.dtype)
    columns = {f"multiworker (gRPC, {args.dtype})": json.loads(tf_column.strip().splitlines()[-1])}
    if args.mpi:
        columns["mpi4py"] = json.loads(launch_mpi(args.sizes, args.iterations).strip().splitlines()[-1])
    print("| elements | MB as float32 | " + " | ".join(f"{name} ms" for name in columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    for size in args.sizes:
        cells = " | ".join(f"{1000 * column[str(size)]:.2f}" for column in columns.values())
        print(f"| {size} | {4 * size / 1e6:.2f} | {cells} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
