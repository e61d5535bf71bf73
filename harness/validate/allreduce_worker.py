"""One rank of the in-node all-reduce benchmark, started by `mpirun` (mpi4py, no TensorFlow).

Prints one JSON line from rank 0: the message size, the ranks and the best time of one
all-reduce, from which the check computes bus bandwidth as nccl-tests defines it.
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bytes", type=int, required=True)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    import numpy as np
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    send = np.full(args.bytes // 4, comm.rank + 1, dtype=np.float32)
    receive = np.empty_like(send)
    comm.Allreduce(send, receive)
    best = float("inf")
    for _ in range(args.repeats):
        comm.Barrier()
        start = time.perf_counter()
        comm.Allreduce(send, receive)
        best = min(best, time.perf_counter() - start)
    seconds = comm.allreduce(best, op=MPI.MAX)  # the slowest rank decides
    want = comm.size * (comm.size + 1) / 2
    correct = comm.allreduce(bool(np.all(receive == want)), op=MPI.LAND)
    if comm.rank == 0:
        print(json.dumps({"bytes": send.nbytes, "ranks": comm.size, "seconds": seconds, "correct": correct}))


if __name__ == "__main__":
    main()
