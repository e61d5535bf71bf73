"""Strategies: where replicas run, how gradients are combined, which rank is the chief.

The training loop talks only to `Strategy`. tf.distribute strategies combine gradients inside
the Keras optimizer (a SUM all-reduce), Horovod through its core ops, since its Keras
integration does not work with Keras 3 (`hvd.DistributedGradientTape` and
`hvd.DistributedOptimizer` assume Keras 2 internals).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, cast

import keras
import numpy as np
import tensorflow as tf

from harness.config import DistributeConfig
from harness.distribute.choice import auto_note, horovod_importable, resolve_strategy
from harness.distribute.cluster import ClusterEnv, detect, gpu_index, port_taken_message
from harness.distribute.cores import available_cores
from harness.distribute.gloo import (
    gloo_environment,
    needs_own_rendezvous,
    rendezvous_port,
    start_rendezvous,
    wait_for_rendezvous,
)
from harness.errors import LaunchError
from harness.registry import Registry


class Strategy(ABC):
    """What the training loop needs from a parallel backend, and nothing more."""

    name: str
    cluster: ClusterEnv
    picked_by_auto: bool = False
    auto_note: str = ""
    """Set when this rank resolved a bare `auto` for several processes by the constant rule."""
    gradient_compression: str = "none"
    """`fp16` when gradients cross devices or processes as float16 (distribute.gradient_compression);
    always `none` with one replica, where nothing is all-reduced."""

    @property
    @abstractmethod
    def num_replicas(self) -> int:
        """Replicas taking part in one optimizer step, over all processes."""

    @property
    def local_replicas(self) -> int:
        """Replicas driven by this process (devices it mirrors over)."""
        return self.num_replicas // self.world_size

    @property
    def rank(self) -> int:
        return self.cluster.rank

    @property
    def world_size(self) -> int:
        return self.cluster.world_size

    @property
    def is_chief(self) -> bool:
        """Only the chief writes checkpoints, metrics and reports."""
        return self.rank == 0

    @abstractmethod
    def scope(self) -> contextlib.AbstractContextManager[Any]:
        """Context in which model and optimizer variables must be created."""

    @abstractmethod
    def distribute(self, dataset: tf.data.Dataset) -> Any:
        """Turn this process's dataset into what `run` consumes."""

    @abstractmethod
    def run(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        """Run `fn` on every local replica."""

    @abstractmethod
    def sum_variables(self, variables: list[tf.Variable], extra: float = 0.0) -> np.ndarray:
        """Host-side sums of per-replica accumulators over all replicas of all processes.

        `extra`, one number per process (e.g. a vote to stop), is summed over processes and
        returned after the variables' sums. A collective: every rank must call it at the same
        point, and nothing else here may touch the accumulators collectively.
        """

    @abstractmethod
    def gather_bytes(self, data: bytes) -> list[bytes]:
        """Every replica's `data` (at most BLOB_SIZE bytes), on every rank. A collective."""

    def aggregate_gradients(self, grads: list[tf.Tensor]) -> list[tf.Tensor]:
        """Combine gradients across processes; tf.distribute does it inside the optimizer."""
        return grads

    def prepare_optimizer(self, optimizer: Any) -> None:  # noqa: B027 - most backends need nothing
        """Adjust a built optimizer to how this backend combines gradients, before the first step."""

    def synchronize(self, variables: list[tf.Variable]) -> None:  # noqa: B027 - most backends need nothing
        """Make every rank hold rank 0's values (after building or restoring)."""

    def weight_digests(self, variables: list[Any]) -> list[str]:
        """A short hash of the weights per local replica, to show that all replicas agree."""
        return [_digest([np.asarray(v) for v in variables])]

    def describe(self) -> dict[str, Any]:
        return {
            "strategy": self.name,
            "replicas": self.num_replicas,
            "local_replicas": self.local_replicas,
            "rank": self.rank,
            "world_size": self.world_size,
            "cluster_source": self.cluster.source,
            "cores": available_cores(),
            "gradient_compression": self.gradient_compression,
        }


class TFStrategy(Strategy):
    """Any tf.distribute strategy; the default one runs on a single device."""

    def __init__(self, name: str, strategy: tf.distribute.Strategy, cluster: ClusterEnv) -> None:
        self.name = name
        self.cluster = cluster
        self._strategy = strategy
        # Every rank runs the same number of full-size steps (harness.data.step_layout pads the
        # last global batch with weight-0 samples), so tf.distribute's partial-batch handling,
        # a tf.cond around each batch and, across workers, an all-reduce per step, is not needed.
        if hasattr(strategy.extended, "experimental_enable_get_next_as_optional"):
            strategy.extended.experimental_enable_get_next_as_optional = False
        self._sum_fns: dict[tuple[int, ...], Any] = {}

    @property
    def num_replicas(self) -> int:
        return int(self._strategy.num_replicas_in_sync)

    def scope(self) -> contextlib.AbstractContextManager[Any]:
        return cast(contextlib.AbstractContextManager[Any], self._strategy.scope())

    def distribute(self, dataset: tf.data.Dataset) -> Any:
        """Batches from our pipeline are this process's share already.

        With one CPU replica per process there is nothing to split or place, so the plain
        dataset goes to `strategy.run` as it is: a tf.distribute dataset would add a
        MultiDeviceIterator, a generator dataset that fetches every batch through a function
        call on another thread, and (multi-worker) a cross-worker all-reduce per step asking
        whether any rank still has data. On some CPUs that input path halved the step's
        speed (docs/benchmarks.md, scripts/repro_distributed_dataset.py).

        Otherwise (several local devices, or a GPU, where prefetching to the device pays),
        the local batch is split over the local devices; across processes each worker's dataset
        is handed over as it is, since `experimental_distribute_dataset` would treat each batch
        as the global one and split it again.
        """
        if self.plain_input:
            return dataset
        if self.world_size > 1:
            options = tf.distribute.InputOptions(experimental_fetch_to_device=True)
            return self._strategy.distribute_datasets_from_function(lambda _: dataset, options)
        return self._strategy.experimental_distribute_dataset(dataset)

    @property
    def plain_input(self) -> bool:
        """Whether `distribute` hands over the plain tf.data dataset (one CPU replica here)."""
        return self.local_replicas == 1 and not tf.config.list_logical_devices("GPU")

    def run(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        return self._strategy.run(fn, args=args)

    def prepare_optimizer(self, optimizer: Any) -> None:
        if self.gradient_compression == "fp16":
            _all_reduce_in_half_precision(optimizer)

    def sum_variables(self, variables: list[tf.Variable], extra: float = 0.0) -> np.ndarray:
        # One compiled function per variable set: distributed variables are captured by the
        # trace, so a function traced for one set would silently read it for another.
        key = tuple(id(v) for v in variables)
        if key not in self._sum_fns:
            self._sum_fns[key] = tf.function(lambda share: self._sum_graph(variables, share))
        share = tf.constant(extra / self.local_replicas, tf.float64)
        return np.asarray(self._sum_fns[key](share))

    def _sum_graph(self, variables: list[tf.Variable], share: tf.Tensor) -> tf.Tensor:
        def local() -> tf.Tensor:
            values = [tf.cast(v.read_value(), tf.float64) for v in variables]
            return tf.stack([*values, share])

        return self._strategy.reduce(tf.distribute.ReduceOp.SUM, self._strategy.run(local), axis=None)

    def weight_digests(self, variables: list[Any]) -> list[str]:
        per_replica = [self._strategy.experimental_local_results(v.value) for v in variables]
        return [_digest([np.asarray(copies[i]) for copies in per_replica]) for i in range(self.local_replicas)]

    def gather_bytes(self, data: bytes) -> list[bytes]:
        blob = tf.constant(_pad(data)[None])

        def gather() -> tf.Tensor:
            return self._strategy.gather(self._strategy.run(lambda: tf.identity(blob)), axis=0)

        return [_unpad(row) for row in np.asarray(tf.function(gather)())]


class HorovodStrategy(Strategy):
    """One process per device; Horovod's core ops average gradients and sync variables."""

    name = "horovod"

    def __init__(self, cluster: ClusterEnv, timeout_s: float = 300.0, controller: str = "gloo") -> None:
        import horovod.tensorflow as hvd

        self._hvd = hvd
        self._rendezvous: Any = None
        if controller == "mpi" and not cluster.horovod_identity:
            # Ranks that srun started with PMIx (harness submit): MPI_Init in hvd.init() joins them.
            os.environ.update(MPI_ENVIRONMENT)
        elif needs_own_rendezvous(cluster):
            if cluster.is_chief:
                self._rendezvous = start_rendezvous(cluster)
            else:
                # shorter than the watchdog's timeout, so this (more specific) message is the one shown
                wait_for_rendezvous(cluster.master_addr, rendezvous_port(cluster), 0.8 * timeout_s)
            # For Horovod itself, which reads its identity and rendezvous from the environment in
            # hvd.init(); nothing of ours reads these back.
            os.environ.update(gloo_environment(cluster, timeout_s))
        if controller == "mpi":
            os.environ.setdefault(*MPI_YIELD)  # read by MPI_Init, inside hvd.init()
        hvd.init()
        if cluster.is_distributed and int(hvd.size()) != cluster.world_size:
            raise LaunchError(
                f"Horovod sees {hvd.size()} process(es) but the {cluster.source} environment says "
                f"{cluster.world_size}: start Horovod workers with horovodrun or mpirun (or "
                "`harness train --workers N distribute.strategy=horovod`), or use distribute.strategy=multiworker"
            )
        self.cluster = _with_horovod_ranks(cluster, hvd)
        self.controller = _controller_in_use(hvd)
        if cluster.is_distributed and controller == "mpi" and self.controller != "mpi":
            raise LaunchError(
                f"distribute.horovod_controller is 'mpi' but Horovod runs over {self.controller!r}; "
                "start the ranks with harness submit (srun --mpi=pmix), horovodrun --mpi or mpirun for 'mpi'"
            )

    @property
    def num_replicas(self) -> int:
        return int(self._hvd.size())

    def describe(self) -> dict[str, Any]:
        described = {**super().describe(), "horovod_controller": self.controller}
        if self.controller == "mpi":
            described["mpi_yield_when_idle"] = os.environ.get(MPI_YIELD[0])
        return described

    def scope(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def distribute(self, dataset: tf.data.Dataset) -> Any:
        return dataset

    def run(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        return fn(*args)

    def aggregate_gradients(self, grads: list[tf.Tensor]) -> list[tf.Tensor]:
        # Weighted per-replica losses already divide by the global batch: sum, not average.
        compression = self._hvd.Compression.fp16 if self.gradient_compression == "fp16" else self._hvd.Compression.none
        return list(self._hvd.grouped_allreduce(grads, op=self._hvd.Sum, compression=compression))

    def sum_variables(self, variables: list[tf.Variable], extra: float = 0.0) -> np.ndarray:
        local = tf.stack([*[tf.cast(v.read_value(), tf.float64) for v in variables], tf.constant(extra, tf.float64)])
        return np.asarray(self._hvd.allreduce(local, op=self._hvd.Sum, name="harness_sums"))

    def synchronize(self, variables: list[tf.Variable]) -> None:
        self._hvd.broadcast_variables(variables, root_rank=0)

    def gather_bytes(self, data: bytes) -> list[bytes]:
        gathered = self._hvd.allgather(tf.constant(_pad(data)[None]), name="harness_preflight")
        return [_unpad(row) for row in np.asarray(gathered)]


BLOB_SIZE = 2048


def _digest(arrays: list[np.ndarray]) -> str:
    import hashlib

    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def _all_reduce_in_half_precision(optimizer: Any) -> None:
    """Make the Keras optimizer all-reduce gradients as float16, as Horovod's Compression.fp16 does.

    Under tf.distribute the optimizer itself all-reduces the gradients (in
    `_all_reduce_sum_gradients`, Keras's TensorFlow backend), so the casts go around that call;
    reducing them beforehand would leave the optimizer summing them a second time. Under a
    LossScaleOptimizer its inner optimizer reduces, after unscaling, so both are wrapped. Half
    the bytes halves TensorFlow's gRPC all-reduce on CPU; whether a step gains depends on how
    much of it waits for those bytes (docs/benchmarks.md).
    """
    targets = [optimizer, getattr(optimizer, "inner_optimizer", None)]
    for target in [t for t in targets if t is not None]:
        reduce = getattr(target, "_all_reduce_sum_gradients", None)
        if reduce is None:
            raise LaunchError(
                "distribute.gradient_compression=fp16 needs the gradient all-reduce of Keras's TensorFlow "
                f"optimizers (`_all_reduce_sum_gradients`), which {type(target).__name__} of Keras "
                f"{keras.__version__} does not have; set distribute.gradient_compression=none"
            )
        target._all_reduce_sum_gradients = _half_precision(reduce)


def _half_precision(reduce: Callable[[list[Any]], list[Any]]) -> Callable[[Any], list[Any]]:
    def reduce_in_half_precision(grads_and_vars: Any) -> list[Any]:
        pairs = list(grads_and_vars)
        reduced = reduce([(_to_half(grad), var) for grad, var in pairs])
        return [
            (grad if grad is None or grad.dtype == sent.dtype else tf.cast(grad, sent.dtype), var)
            for (grad, var), (sent, _) in zip(reduced, pairs, strict=True)
        ]

    return reduce_in_half_precision


def _to_half(grad: Any) -> Any:
    """Dense floating gradients go as float16; sparse ones (IndexedSlices) and others as they are."""
    if isinstance(grad, tf.Tensor) and grad.dtype.is_floating and grad.dtype != tf.float16:
        return tf.cast(grad, tf.float16)
    return grad


def _pad(data: bytes) -> np.ndarray:
    if len(data) > BLOB_SIZE:
        raise ValueError(f"gather_bytes takes at most {BLOB_SIZE} bytes. Received: {len(data)} bytes")
    blob = np.zeros(BLOB_SIZE, np.int32)  # collectives do not all-gather uint8
    blob[: len(data)] = np.frombuffer(data, np.uint8)
    return blob


def _unpad(row: np.ndarray) -> bytes:
    return bytes(row.astype(np.uint8)).rstrip(b"\0")


MPI_ENVIRONMENT = {"HOROVOD_CONTROLLER": "mpi", "HOROVOD_CPU_OPERATIONS": "mpi"}

MPI_YIELD = ("OMPI_MCA_mpi_yield_when_idle", "1")
"""Open MPI waits for messages by spinning on the core, and yields it only when it sees more ranks
than slots. A rank's compute threads share its core with that spin (one core per rank, or Horovod's
background thread beside TensorFlow's pools), so the spin took the core from the step: two
one-core ranks of the benchmark CNN trained 1.31x faster per worker yielding (711 against 495
samples/s, docs/benchmarks.md). A yield with nothing else to run returns at once. A value the user
set is kept."""


def _controller_in_use(hvd: Any) -> str:
    """What Horovod actually runs over once initialised, recorded so a silent fallback shows."""
    if hvd.mpi_enabled():
        return "mpi"
    return "gloo" if hvd.gloo_enabled() else "unknown"


def _with_horovod_ranks(cluster: ClusterEnv, hvd: Any) -> ClusterEnv:
    """Horovod's own view of ranks is the truth once it is initialised."""
    import dataclasses

    return dataclasses.replace(
        cluster,
        source=cluster.source if cluster.is_distributed else "horovod",
        rank=int(hvd.rank()),
        world_size=int(hvd.size()),
        local_rank=int(hvd.local_rank()),
        local_world_size=int(hvd.local_size()),
    )


# tf.data warns about options across serialization whenever a dataset is distributed per
# worker; it concerns reading options back in graph mode, which nothing here does.
warnings.filterwarnings("ignore", message="To make it possible to preserve tf.data options")

STRATEGIES: Registry[Callable[[DistributeConfig, ClusterEnv], Strategy]] = Registry("strategy")


@STRATEGIES.register("single")
def _single(cfg: DistributeConfig, cluster: ClusterEnv) -> Strategy:
    return TFStrategy("single", tf.distribute.get_strategy(), cluster)


@STRATEGIES.register("mirrored")
def _mirrored(cfg: DistributeConfig, cluster: ClusterEnv) -> Strategy:
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        devices = [f"/gpu:{i}" for i in range(len(gpus))]
    else:
        devices = [f"/cpu:{i}" for i in range(_logical_cpus(cfg.cpu_replicas))]
    strategy = tf.distribute.MirroredStrategy(devices, cross_device_ops=_cross_device_ops(bool(gpus)))
    return TFStrategy("mirrored", strategy, cluster)


@STRATEGIES.register("multiworker")
def _multiworker(cfg: DistributeConfig, cluster: ClusterEnv) -> Strategy:
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster.tf_config()["cluster"]),
        task_type="worker",
        task_id=cluster.rank,
        rpc_layer="grpc",
    )
    # No timeout on the collectives themselves: for each collective run with one, TensorFlow
    # starts a thread that sleeps out the timeout, so at a few collectives per step a worker
    # held tens of thousands of sleeping threads and a job under a task limit (`ulimit -u`, a
    # cgroup's pids.max) aborted ("Resource temporarily unavailable"). The watchdog bounds a
    # stall instead (distribute.timeout_s) and names the rank that went quiet.
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    except tf.errors.UnknownError as err:
        if "gRPC server" not in str(err):
            raise
        port = int(cluster.worker_addresses()[cluster.rank].rsplit(":", 1)[1])
        raise LaunchError(port_taken_message(f"rank {cluster.rank}'s gRPC server", port, cluster.node_name)) from None
    return TFStrategy("multiworker", strategy, cluster)


@STRATEGIES.register("horovod")
def _horovod(cfg: DistributeConfig, cluster: ClusterEnv) -> Strategy:
    try:
        return HorovodStrategy(cluster, cfg.timeout_s, cfg.horovod_controller)
    except ImportError as err:
        raise LaunchError(
            f"distribute.strategy 'horovod' needs Horovod, which does not import here ({err}). "
            "Install it with scripts/install_horovod.sh; `harness doctor` shows what is built"
        ) from None


def _cross_device_ops(gpus: bool) -> Any:
    # NCCL needs GPUs; on CPU devices a plain reduction is the one that works everywhere.
    return None if gpus else tf.distribute.ReductionToOneDevice()


def _logical_cpus(count: int) -> int:
    """Split the CPU into `count` logical devices (only possible before TF starts its runtime)."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError:
        pass  # the runtime already started; use the logical devices it has
    found = len(tf.config.list_logical_devices("CPU"))
    if found < count:
        raise LaunchError(
            f"mirrored on CPU needs {count} logical devices (distribute.cpu_replicas) but TensorFlow "
            f"was already initialised with {found}; start a fresh process"
        )
    return count


def bind_gpu(cluster: ClusterEnv) -> None:
    """One GPU per local rank with memory growth, so processes on a node do not collide."""
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return
    index = gpu_index(cluster, len(gpus)) if cluster.is_distributed else None
    chosen = [gpus[index]] if index is not None else gpus
    tf.config.set_visible_devices(chosen, "GPU")
    for gpu in chosen:
        tf.config.experimental.set_memory_growth(gpu, True)


def make_strategy(
    cfg: DistributeConfig, environ: Mapping[str, str] | None = None, *, cluster: ClusterEnv | None = None
) -> Strategy:
    """Build the configured strategy for this process's job context.

    The training entry point passes the `cluster` it read once; without it (scripts, tests) the
    context is read from `environ` (default: this process's environment).
    """
    if cluster is None:
        cluster = detect(os.environ if environ is None else environ)
    gpus = len(tf.config.list_physical_devices("GPU"))
    name = resolve_strategy(
        cfg.strategy,
        processes=cluster.world_size,
        gpus=gpus,
        launcher=cluster.source,
        horovod_installed=horovod_importable(),
    )
    if cfg.strategy in ("multiworker", "horovod", "auto") or cluster.is_distributed:
        bind_gpu(cluster)
    strategy = STRATEGIES.get(name)(cfg, cluster)
    strategy.picked_by_auto = cfg.strategy == "auto"
    if cfg.gradient_compression != "none" and strategy.num_replicas > 1:  # one replica: nothing to all-reduce
        strategy.gradient_compression = cfg.gradient_compression
    strategy.auto_note = auto_note(cfg.strategy, cluster.world_size, cluster.source)
    return strategy
