"""One training run from a validated config to a finished run directory.

Every input is checked (run directory, data, model, callbacks) before the run directory is
created, so bad input leaves nothing behind.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras

from harness import io
from harness.config import Config, to_yaml
from harness.data import PreparedData, prepare_data
from harness.distribute import Strategy, make_strategy
from harness.distribute.cluster import ClusterEnv, detect
from harness.distribute.preflight import preflight
from harness.distribute.watchdog import Heartbeats, Watchdog
from harness.envinfo import environment, node_name
from harness.errors import ConfigError, LaunchError, Preempted, RunDirError
from harness.evaluate import write_report
from harness.imports import import_object, import_roots, importable
from harness.models import describe_model
from harness.train import rundir
from harness.train.checkpoint import LoopState
from harness.train.evaluation import evaluate_test_split
from harness.train.loop import Trainer, TrainResult
from harness.train.progress import make_reporter
from harness.train.request import RunRequest, absolute_data_path, check_request, invocation, wants_resume

__all__ = ["RunRequest", "invocation", "train"]

PREPROCESSING = "preprocessing.json"
MODEL = "model.keras"


def train(
    request: RunRequest,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
    stop_requested: Callable[[], bool] | None = None,
) -> Path:
    """Train, evaluate on the test split and write the full run directory; returns its path.

    In a multi-process job every rank calls this; only the chief checks and writes the run
    directory, the others train their shard and return. When `stop_requested()` turns true on
    any rank, all ranks stop at the same step, the chief saves a checkpoint, and `Preempted`
    is raised. The chief records the run's state in state.json throughout.
    """
    cluster = detect(os.environ)
    try:
        with importable(import_roots(request.base_dir)):  # the same import rule in every launch mode
            return _train(request, cluster, extra_callbacks, stop_requested)
    except Preempted:
        _record(cluster, request.run_dir, "preempted")
        raise
    except BaseException as err:
        _record(cluster, request.run_dir, "failed", error=f"{type(err).__name__}: {err}"[:2000])
        raise


def _record(cluster: ClusterEnv, run_dir: Path, state: str, **fields: Any) -> None:
    """The chief notes a final state, if the run directory was ever created."""
    if cluster.is_chief and (run_dir / "config.yaml").is_file():
        rundir.write_state(run_dir, state, **fields)


def _train(
    request: RunRequest,
    cluster: ClusterEnv,
    extra_callbacks: Sequence[keras.callbacks.Callback],
    stop_requested: Callable[[], bool] | None,
) -> Path:
    config = absolute_data_path(request.config, request.base_dir)
    run_dir = request.run_dir
    if cluster.is_chief:
        check_request(request, config)
    resume = wants_resume(request)
    watchdog = make_watchdog(config, cluster)
    try:
        data = prepare_data(config.data, config.run.seed, request.base_dir)
        watchdog.beat("connecting to the other ranks")
        strategy = make_strategy(config.distribute)
        ranks = preflight(strategy) if cluster.is_distributed else []
        callbacks = [*build_callbacks(config), *extra_callbacks]
        reporter = make_reporter(config.training.progress, enabled=strategy.is_chief)
        trainer = Trainer(
            config,
            data,
            strategy,
            callbacks=callbacks,
            reporter=reporter,
            heartbeat=watchdog.beat,
            stop_requested=stop_requested,
        )
        writer = start_run_dir(request, config, data, strategy, ranks) if strategy.is_chief else None
        state = trainer.restore(_latest(run_dir)) if resume else None
        result = fit_or_explain(trainer, state, writer, watchdog, cluster)
        watchdog.pause()
        if strategy.num_replicas > 1:
            digests = strategy.weight_digests(trainer.model.trainable_variables)
            print(f"rank {strategy.rank}: weights digest per local replica: {' '.join(digests)}", flush=True)
    finally:
        watchdog.stop()
        if watchdog.heartbeats is not None:
            watchdog.heartbeats.retire()  # also when failing or preempted: no stale file for the next run
    if strategy.is_chief:
        evaluation = finish_run_dir(run_dir, config, data, trainer, result)
        reporter.message(result_lines(run_dir, evaluation, result))
    return run_dir


def fit_or_explain(
    trainer: Trainer,
    state: LoopState | None,
    writer: rundir.RunWriter | None,
    watchdog: Watchdog,
    cluster: ClusterEnv,
) -> TrainResult:
    """Train; if a collective fails because a peer is gone, say which rank instead of a traceback."""
    import tensorflow as tf

    try:
        return trainer.fit(state, writer)
    except tf.errors.OpError as err:
        if not cluster.is_distributed:
            raise
        raise LaunchError(watchdog.explain_failure(summarize_op_error(err))) from None


def summarize_op_error(err: Exception) -> str:
    """The line of a TensorFlow error that says what happened, without graph-node noise."""
    text = re.sub(r"\{\{[^}]*\}\}\s*", "", getattr(err, "message", "") or str(err))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Graph execution error", "Detected at node"))]
    return (useful or lines or [type(err).__name__])[0][:300]


def make_watchdog(config: Config, cluster: ClusterEnv) -> Watchdog:
    """Armed only when several processes take part: a single process cannot wait for a peer."""
    output = Path(config.run.output_dir)
    heartbeats = Heartbeats(
        output / f".{config.run.name}.heartbeats", cluster.rank, cluster.world_size, node_name()
    )
    watchdog = Watchdog(config.distribute.timeout_s, lambda: describe_ranks(cluster), heartbeats)
    return watchdog.start() if cluster.is_distributed else watchdog


def describe_ranks(cluster: ClusterEnv) -> str:
    hosts = ", ".join(f"rank {rank} on {host}" for rank, host in enumerate(cluster.hosts))
    return f"This is rank {cluster.rank} of {cluster.world_size} ({hosts})."


def build_callbacks(config: Config) -> list[keras.callbacks.Callback]:
    """Early stopping from the config plus user callbacks named by import path."""
    callbacks: list[keras.callbacks.Callback] = []
    stop = config.training.early_stopping
    if stop.enabled:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=stop.monitor,
                patience=stop.patience,
                min_delta=stop.min_delta,
                restore_best_weights=stop.restore_best,
            )
        )
    for index, path in enumerate(config.training.callbacks):
        callbacks.extend(_user_callbacks(path, f"training.callbacks[{index}]"))
    return callbacks


def _user_callbacks(path: str, key: str) -> list[keras.callbacks.Callback]:
    try:
        factory = import_object(path)
        made = factory()
    except ImportError as err:
        raise ConfigError(f"{key}: {err}") from None
    except Exception as err:
        raise ConfigError(f"{key}: calling {path!r} failed: {type(err).__name__}: {err}") from None
    items = made if isinstance(made, (list, tuple)) else [made]
    for item in items:
        if not isinstance(item, keras.callbacks.Callback):
            raise ConfigError(
                f"{key}: {path!r} must return a keras.callbacks.Callback or a list of them. "
                f"Received: {type(item).__name__}"
            )
    return list(items)


def start_run_dir(
    request: RunRequest, config: Config, data: PreparedData, strategy: Strategy, ranks: list[dict[str, Any]]
) -> rundir.RunWriter:
    """Create the run directory and write what is known before training starts."""
    run_dir = request.run_dir
    rundir.prepare(run_dir, overwrite=request.overwrite)
    io.write_text(run_dir / "config.yaml", to_yaml(config))
    data.preprocessor.save(run_dir / PREPROCESSING)
    extra = {"distribute": strategy.describe(), "ranks": ranks, "command": request.command}
    io.write_json(run_dir / "env.json", environment(request.base_dir, extra))
    rundir.write_state(
        run_dir, "running", starting=True, epochs=config.training.epochs, requeues=requeues(), error=None
    )
    return rundir.RunWriter(run_dir, tensorboard=config.training.tensorboard)


def result_lines(run_dir: Path, evaluation: dict[str, Any], result: TrainResult) -> str:
    """What a person wants to read when the run ends: the test result and where the files are."""
    headline = evaluation.get("headline", {})
    value = headline.get("value", float("nan"))
    metric = f"test {headline.get('metric')} {value:.4f} on {evaluation.get('n')} samples"
    stopped = f" ({result.stop_reason})" if result.stopped_early else ""
    return (
        f"done: {metric}, {len(result.history)} epochs{stopped}, {result.wall_time_s:.1f}s training\n"
        f"run directory: {run_dir}\nreport: {run_dir / 'report.html'}"
    )


def finish_run_dir(
    run_dir: Path, config: Config, data: PreparedData, trainer: Trainer, result: TrainResult
) -> dict[str, Any]:
    """Save the model, evaluate on the test split and write the report and model card."""
    save_model(trainer.model, run_dir / MODEL)
    result.extra["requeues"] = requeues()
    evaluation = evaluate_test_split(trainer.model, data, run_dir)
    env = environment(Path.cwd(), {"distribute": trainer.strategy.describe()})
    write_report(
        run_dir,
        task=data.task,
        evaluation=evaluation,
        training=result.summary(),
        data=data.summary(),
        model=describe_model(trainer.model, config.model),
        environment=env,
        config=config.model_dump(mode="json"),
        command=reproduce_command(run_dir),
    )
    rundir.write_state(run_dir, "completed", epoch=len(result.history), error=None)
    return evaluation


def requeues() -> int:
    """How many times Slurm requeued this job (preemption or time limit)."""
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    except ValueError:
        return 0


def save_model(model: keras.Model, target: Path) -> None:
    with io.atomic_path(target, suffix=".keras") as tmp:
        model.save(tmp)


def reproduce_command(run_dir: Path) -> str:
    """The command that re-runs exactly this experiment from its saved config."""
    config = shlex.quote(str(run_dir / "config.yaml"))
    return f"harness train {config} run.name={shlex.quote(run_dir.name)}-repro"


def _latest(run_dir: Path) -> Path:
    folder = rundir.checkpoint.resolve(run_dir / rundir.CHECKPOINTS)
    if folder is None:
        raise RunDirError(f"run directory {run_dir} has no checkpoint to resume from")
    return folder
