"""Data-parallel training with real processes: every strategy, the same suite.

Each run is a fresh `python -m harness` process tree (TensorFlow fixes its devices at start),
with one CPU thread per worker. A run trains the same MLP with the same global batch; the result
must match the single-process run, every replica must end with the same weights, and only the
chief writes the run directory.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from harness.data import step_layout
from harness.distribute.cluster import launcher_env
from harness.distribute.cores import worker_shares
from harness.distribute.launcher import free_port_range
from tests.conftest import ROOT, THREADS, needs_horovod, wait_until

GLOBAL_BATCH = 32
COMMON = [
    "data.dataset=wine",
    "model.name=mlp",
    "model.hidden_units=[16]",
    "model.dropout=0",
    "model.batch_norm=false",
    "training.epochs=3",
    "training.progress=lines",
    "training.steps_per_execution=4",
    "training.optimizer.learning_rate=0.01",
    "training.schedule.name=constant",
    "distribute.timeout_s=60",
]

# (id, strategy, processes, extra overrides, per-replica batch)
SETUPS = [
    pytest.param("single", 1, [], GLOBAL_BATCH, id="single"),
    pytest.param("mirrored", 1, ["distribute.cpu_replicas=2"], GLOBAL_BATCH // 2, id="mirrored-2cpu"),
    pytest.param("multiworker", 2, [], GLOBAL_BATCH // 2, id="multiworker-2proc"),
    pytest.param(
        "horovod",
        2,
        ["distribute.horovod_controller=gloo"],
        GLOBAL_BATCH // 2,
        id="horovod-gloo-2proc",
        marks=needs_horovod,
    ),
    pytest.param(
        "horovod",
        2,
        ["distribute.horovod_controller=mpi"],
        GLOBAL_BATCH // 2,
        id="horovod-mpi-2proc",
        marks=needs_horovod,
    ),
]


def harness(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **THREADS, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def train(
    tmp: Path, name: str, strategy: str, workers: int, extra: list[str], batch: int, more: list[str] = ()
) -> subprocess.CompletedProcess[str]:  # type: ignore[assignment]
    args = [
        "train",
        *COMMON,
        f"run.name={name}",
        f"distribute.strategy={strategy}",
        f"training.batch_size={batch}",
        *extra,
        *more,
    ]
    if workers > 1:
        args += ["--workers", str(workers)]
    done = harness(args, tmp)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done


def epochs_logged(metrics: Path, count: int, proc: subprocess.Popen[str]) -> bool:
    """Whether `count` epochs are in the metrics log; a process that died instead fails the test with its stderr."""
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    return metrics.exists() and len(metrics.read_text().splitlines()) >= count


def final_weights(run_dir: Path) -> list[np.ndarray]:
    return keras.saving.load_model(run_dir / "model.keras").get_weights()


def digests(output: str) -> list[str]:
    return re.findall(r"weights digest per local replica: ([0-9a-f ]+)", output)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The single-process run every strategy is compared with."""
    tmp = tmp_path_factory.mktemp("reference")
    train(tmp, "ref", "single", 1, [], GLOBAL_BATCH)
    return tmp / "runs" / "ref"


@pytest.mark.parametrize(("strategy", "workers", "extra", "batch"), SETUPS)
def test_strategy_matches_single_process(
    tmp_path: Path, reference: Path, strategy: str, workers: int, extra: list[str], batch: int
) -> None:
    done = train(tmp_path, "run", strategy, workers, extra, batch)
    output = done.stdout + done.stderr
    run_dir = tmp_path / "runs" / "run"
    report = json.loads((run_dir / "report.json").read_text())
    assert report["training"]["global_batch_size"] == GLOBAL_BATCH
    assert f"global batch {GLOBAL_BATCH}" in output
    replicas = report["training"]["replicas"]
    assert replicas == (1 if strategy == "single" else 2)
    # every replica of every process ends with the same weights
    found = " ".join(digests(output)).split()
    if replicas > 1:
        assert len(found) == 2, output[-3000:]
        assert len(set(found)) == 1, found
    # same global batch, same samples per step: the same model as one process, up to float order
    for got, want in zip(final_weights(run_dir), final_weights(reference), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)
    ref_lines = (reference / "metrics.jsonl").read_text().splitlines()
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(ref_lines) == 3, "only the chief writes metrics lines"
    for line, ref in zip(lines, ref_lines, strict=True):
        assert json.loads(line)["val_loss"] == pytest.approx(json.loads(ref)["val_loss"], rel=1e-3)
    # no heartbeat folder or stray files left beside the run directory
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["run"]
    described = json.loads((run_dir / "env.json").read_text())["distribute"]
    if "distribute.horovod_controller=mpi" in extra:  # Open MPI does not spin on the step's core
        assert described["mpi_yield_when_idle"] == "1"
    shares = worker_shares(workers)
    if shares:  # the chief ran on its own share, however its launcher started it (horovodrun included)
        assert described["cores"] == shares[0]


@pytest.mark.parametrize(
    ("n", "batch", "world"), [(11, 2, 1), (11, 2, 2), (11, 2, 3), (100, 8, 4), (7, 16, 2)]
)
def test_every_sample_once_per_epoch_across_ranks(n: int, batch: int, world: int) -> None:
    seen: list[int] = []
    steps = set()
    for rank in range(world):
        indices, weights = step_layout(n, batch, world, rank, shuffle_seed=5)
        steps.add(indices.shape[0])
        seen.extend(indices[weights > 0].tolist())
        # each global step's weights sum to one over all ranks
    assert len(steps) == 1, "every rank runs the same number of steps"
    assert sorted(seen) == list(range(n))
    total = sum(step_layout(n, batch, world, r, 5)[1] for r in range(world))
    np.testing.assert_allclose(total.sum(axis=1), 1.0, rtol=1e-6)


def test_global_batches_do_not_depend_on_world_size() -> None:
    one, _ = step_layout(50, 8, 1, 0, shuffle_seed=3)
    two = [step_layout(50, 4, 2, r, 3)[0] for r in range(2)]
    for step in range(one.shape[0]):
        assert sorted(one[step]) == sorted(np.concatenate([two[0][step], two[1][step]]))


@pytest.mark.parametrize(
    ("strategy", "extra"),
    [
        pytest.param("multiworker", [], id="multiworker"),
        pytest.param("horovod", ["distribute.horovod_controller=gloo"], id="horovod-gloo", marks=needs_horovod),
    ],
)
def test_two_workers_train_with_float16_gradients(
    tmp_path: Path, reference: Path, strategy: str, extra: list[str]
) -> None:
    """Compressed all-reduce across real processes: replicas still agree, the run records it, and
    the model stays close to the one-process run (float16 keeps about 3 digits of each sum)."""
    more = ["distribute.gradient_compression=fp16"]
    done = train(tmp_path, "run", strategy, 2, extra, GLOBAL_BATCH // 2, more)
    found = " ".join(digests(done.stdout + done.stderr)).split()
    assert len(found) == 2 and len(set(found)) == 1, found
    run_dir = tmp_path / "runs" / "run"
    assert json.loads((run_dir / "env.json").read_text())["distribute"]["gradient_compression"] == "fp16"
    for got, want in zip(final_weights(run_dir), final_weights(reference), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=3e-4)  # 3e-5 apart on this workload
    last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    ref = json.loads((reference / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["val_loss"] == pytest.approx(ref["val_loss"], rel=1e-3)


INPUT_PROBE = """
import sys
import tensorflow as tf
from harness.config import DistributeConfig
from harness.distribute import make_strategy

strategy = make_strategy(DistributeConfig(strategy=sys.argv[1], cpu_replicas=int(sys.argv[2])), {})
with strategy.scope():
    weight = tf.Variable(1.0)
batches = strategy.distribute(tf.data.Dataset.range(8).map(lambda i: tf.cast(i, tf.float32)).batch(2))

@tf.function
def total(iterator):
    out = tf.constant(0.0)
    for _ in tf.range(4):
        per_replica = strategy.run(lambda x: tf.reduce_sum(x) * weight, args=(next(iterator),))
        out += tf.add_n(strategy._strategy.experimental_local_results(per_replica))
    return out

print(type(batches).__name__, strategy.local_replicas, float(total(iter(batches))))
"""


@pytest.mark.parametrize(
    ("strategy", "cpu_replicas", "expected"),
    [
        ("single", 1, "1 28.0"),
        ("multiworker", 1, "1 28.0"),
        ("mirrored", 1, "1 28.0"),
        ("mirrored", 2, "2 28.0"),
    ],
)
def test_one_cpu_replica_per_process_reads_a_plain_dataset(
    tmp_path: Path, strategy: str, cpu_replicas: int, expected: str
) -> None:
    """A tf.distribute dataset costs up to half a CPU step on some machines (docs/benchmarks.md):
    with one CPU replica per process the plain tf.data dataset goes to `strategy.run`; only
    several local replicas need it split (and still see every sample once)."""
    env = {**os.environ, **THREADS}
    env.pop("TF_CONFIG", None)
    probe = tmp_path / "probe.py"  # a file: AutoGraph reads the source of what it converts
    probe.write_text(INPUT_PROBE)
    done = subprocess.run(
        [sys.executable, str(probe), strategy, str(cpu_replicas)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    kind, rest = done.stdout.strip().splitlines()[-1].split(" ", 1)
    assert rest == expected
    plain = cpu_replicas == 1
    assert (kind.endswith("Dataset") and "Distributed" not in kind) == plain, kind


def test_checkpoint_of_two_workers_resumes_in_one_process(tmp_path: Path, reference: Path) -> None:
    two_workers = ["distribute.strategy=multiworker", "training.batch_size=16", "--workers", "2"]
    first = harness(["train", *COMMON, "run.name=r", "training.epochs=2", *two_workers], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert len(digests(first.stdout)) == 2
    variables = json.loads((tmp_path / "runs" / "r" / "env.json").read_text())["variables"]
    assert "glibc.malloc.hugetlb=1" in variables.get("GLIBC_TUNABLES", "")  # distribute.huge_pages reached the workers
    done = harness(
        [
            "train",
            *COMMON,
            "run.name=r",
            "distribute.strategy=single",
            "training.epochs=3",
            f"training.batch_size={GLOBAL_BATCH}",
            "--resume",
        ],
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = tmp_path / "runs" / "r"
    assert [json.loads(x)["epoch"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    for got, want in zip(final_weights(run_dir), final_weights(reference), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


class CountThreads(keras.callbacks.Callback):
    """Appends this process's thread count after each epoch to a file named for its rank."""

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        path = Path(os.environ["THREAD_COUNTS"]) / f"rank{os.environ.get('HARNESS_RANK', '0')}"
        with path.open("a") as counts:
            counts.write(f"{len(os.listdir('/proc/self/task'))}\n")


def count_threads() -> keras.callbacks.Callback:
    return CountThreads()


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts a process's threads in /proc")
def test_multiworker_threads_stay_flat_over_the_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No thread is left behind per collective: a worker holds as many threads at the last epoch as
    at the third. (A collective timeout made TensorFlow start one per collective, each sleeping out
    the timeout: thousands per worker, until a task limit aborted the job.)"""
    counts = tmp_path / "threads"
    counts.mkdir()
    monkeypatch.setenv("THREAD_COUNTS", str(counts))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the workers import the callback from here
    more = [
        "training.epochs=8",
        "training.steps_per_execution=1",  # many collectives: one all-reduce per step, one read per step
        f"training.callbacks=['{__name__}:count_threads']",
    ]
    train(tmp_path, "threads", "multiworker", 2, [], 4, more)
    for rank in (0, 1):
        per_epoch = [int(line) for line in (counts / f"rank{rank}").read_text().split()]
        assert len(per_epoch) == 8, per_epoch
        # epochs 4-8: about 80 steps of a global batch of 8 wine samples, two collectives each
        assert per_epoch[-1] - per_epoch[2] <= 10, per_epoch


def test_killed_worker_makes_the_others_exit_naming_it(tmp_path: Path) -> None:
    port = free_port_range(2)
    args = [
        sys.executable,
        "-m",
        "harness",
        "train",
        *COMMON,
        "run.name=k",
        "distribute.strategy=multiworker",
        "training.batch_size=16",
        "training.epochs=5000",
        "distribute.timeout_s=15",
    ]
    procs = []
    for rank in range(2):
        env = {**os.environ, **THREADS, **launcher_env(rank, 2, port)}
        procs.append(
            subprocess.Popen(
                args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    try:
        metrics = tmp_path / "runs" / "k" / "metrics.jsonl"
        wait_until(lambda: epochs_logged(metrics, 2, procs[0]), 180, 0.5, "two epochs in metrics.jsonl")
        procs[1].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        _, err = procs[0].communicate(timeout=120)
        waited = time.monotonic() - killed_at
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert procs[0].returncode != 0
    assert waited < 15 + 30, f"rank 0 took {waited:.0f}s to give up"
    assert "rank 1" in err, err[-3000:]
    from harness.train import checkpoint

    latest = checkpoint.resolve(tmp_path / "runs" / "k" / "checkpoints")
    assert latest is not None
    assert json.loads((latest / "state.json").read_text())["epoch"] >= 1


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR2])
def test_a_stop_signal_to_the_launcher_checkpoints_every_rank_and_exits_75(tmp_path: Path, sig: signal.Signals) -> None:
    """SIGTERM reaches multiworker ranks too (TensorFlow's coordination service installs its own handler)."""
    env = {**os.environ, **THREADS}
    args = [*COMMON, "run.name=t", "distribute.strategy=multiworker", "training.batch_size=16", "training.epochs=5000"]
    launcher = subprocess.Popen(
        [sys.executable, "-m", "harness", "train", *args, "--workers", "2"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        metrics = tmp_path / "runs" / "t" / "metrics.jsonl"
        wait_until(lambda: epochs_logged(metrics, 2, launcher), 180, 0.2, "two epochs in metrics.jsonl")
        launcher.send_signal(sig)
        out, err = launcher.communicate(timeout=120)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 75, err[-3000:]
    assert f"[rank 0] received {sig.name}" in out and f"[rank 1] received {sig.name}" in out
    state = json.loads((tmp_path / "runs" / "t" / "state.json").read_text())
    assert state["state"] == "preempted"
    from harness.train import checkpoint

    assert checkpoint.resolve(tmp_path / "runs" / "t" / "checkpoints") is not None


def test_smoke_passes_and_fails(tmp_path: Path) -> None:
    done = harness(["smoke", "data.dataset=wine", "model.name=mlp", "--workers", "2"], tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.rstrip().endswith("PASS")
    assert "ranks took part" in done.stdout
    bad = harness(
        [
            "smoke",
            "data.dataset=wine",
            "model.name=mlp",
            "training.optimizer.learning_rate=1e9",
            "training.optimizer.name=sgd",
            "--workers",
            "2",
        ],
        tmp_path,
    )
    assert bad.returncode == 1
    assert bad.stdout.rstrip().endswith("FAIL")


@pytest.mark.parametrize(
    ("strategy", "held"),
    [
        pytest.param("multiworker", 0, id="multiworker-grpc"),
        pytest.param("horovod", 2, id="horovod-rendezvous", marks=needs_horovod),
    ],
)
def test_a_taken_port_stops_the_chief_naming_port_and_node(tmp_path: Path, strategy: str, held: int) -> None:
    """A bind failure used to end in TensorFlow's bare "Could not start gRPC server"."""
    import socket

    port = free_port_range(3)
    holder = socket.socket()
    holder.bind(("", port + held))  # rank 0's gRPC port, or the rendezvous past the workers' ports
    holder.listen()
    env = {**os.environ, **THREADS, **launcher_env(0, 2, port), "SLURMD_NODENAME": ""}
    args = [*COMMON, "run.name=p", f"distribute.strategy={strategy}", "distribute.horovod_controller=gloo"]
    try:
        done = subprocess.run(
            [sys.executable, "-m", "harness", "train", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        holder.close()
    assert done.returncode == 1, done.stderr[-3000:]
    assert f"could not listen on port {port + held} on {socket.gethostname()}" in done.stderr, done.stderr[-3000:]
    assert "another process holds it" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "runs" / "p").exists()
