"""One rank of the in-node all-reduce benchmark, started by `mpirun` (mpi4py, no TensorFlow).

Prints one JSON line from rank 0: the message size, the ranks, the best time of one all-reduce
(from which the check computes bus bandwidth as nccl-tests defines it) and the node each rank ran
on (Slurm's node name, else the host name), so a pair test can tell that it spanned two nodes.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
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
    nodes = comm.gather(os.environ.get("SLURMD_NODENAME") or socket.gethostname(), root=0)
    if comm.rank == 0:
        print(json.dumps({"bytes": send.nbytes, "ranks": comm.size, "seconds": seconds, "correct": correct,
                          "nodes": nodes}))


if __name__ == "__main__":
    main()
