"""One training run from a validated config to a finished run directory.

Every input is checked (run directory, data, model, callbacks) before the run directory is
created, so bad input leaves nothing behind.
"""

from __future__ import annotations

import os
import shlex
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from harness import atomic
from harness.config import Config, to_yaml
from harness.config.loader import DEFAULT_SOURCE
from harness.data import PreparedData, prepare_data
from harness.data.fingerprint import data_fingerprint
from harness.distribute import Strategy, make_strategy
from harness.distribute.cluster import ClusterEnv, detect
from harness.distribute.preflight import preflight
from harness.distribute.watchdog import Heartbeats, Watchdog, heartbeat_folder, summarize_error
from harness.envinfo import environment, invocation
from harness.errors import ConfigError, LaunchError, Preempted, RunDirError
from harness.evaluate import write_report
from harness.imports import import_object, import_roots, importable
from harness.models import describe_model
from harness.rundir import RunDir, RunDirWarning, RunState
from harness.train import checkpoint, rundir
from harness.train.callbacks import make_early_stopping, watch_stops
from harness.train.checkpoint import CorruptCheckpoint, LoopState
from harness.train.evaluation import evaluate_test_split
from harness.train.loop import Trainer, TrainResult
from harness.train.objectives import check_objectives
from harness.train.precision import warn_if_slow_precision
from harness.train.progress import make_reporter
from harness.train.request import (
    RunRequest,
    absolute_data_path,
    check_global_batch,
    check_request,
    wants_resume,
)

__all__ = ["RunRequest", "invocation", "train"]


@dataclass
class Progress:
    """How far this process got with the run directory, to decide what a failure may touch.

    `started`: this run wrote its start into the run directory, so its end may be recorded
    there too; a run refused before that (bad input, exit 2) writes nothing. `created`: this run
    made the directory, so it may remove it again if a write failed before any checkpoint.
    """

    started: bool = False
    created: bool = False
    created_id: tuple[int, int] | None = None  # (device, inode) of the folder it made: still the same one?
    space_needed: int | None = None  # bytes the whole run directory will take, once the model is known
    fingerprint: dict[str, Any] | None = None  # data.path as this run read it (env.json)


def train(
    request: RunRequest,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
    stop_requested: Callable[[], bool] | None = None,
    cluster: ClusterEnv | None = None,
) -> Path:
    """Train, evaluate on the test split and write the full run directory; returns its path.

    In a multi-process job every rank calls this; only the chief checks and writes the run
    directory, the others train their shard and return. When `stop_requested()` turns true on
    any rank, all ranks stop at the same step, the chief saves a checkpoint, and `Preempted`
    is raised. The chief records the run's state in state.json throughout: `preempted`,
    `interrupted` (Ctrl-C) or `failed` at the end of a run that does not complete.

    `cluster` is this process's job context; without it, it is read here from the environment,
    once for the whole run.
    """
    cluster = detect(os.environ) if cluster is None else cluster
    progress = Progress()
    try:
        with importable(import_roots(request.base_dir)):  # the same import rule in every launch mode
            return _train(request, cluster, extra_callbacks, stop_requested, progress)
    except Preempted:
        if getattr(stop_requested, "received", None) == "SIGINT":  # the first Ctrl-C: stopped with a checkpoint
            _record(cluster, request, progress, RunState.INTERRUPTED, error="interrupted (Ctrl-C)")
        else:
            _record(cluster, request, progress, RunState.PREEMPTED)
        raise
    except KeyboardInterrupt:
        if not _remove_unfinished(cluster, request, progress):
            _record(cluster, request, progress, RunState.INTERRUPTED, error="interrupted (Ctrl-C)")
            _say_resumable(cluster, request, progress)
        raise
    except atomic.WriteError as err:
        removed = _remove_unfinished(cluster, request, progress)
        if not removed:
            _record(cluster, request, progress, RunState.FAILED, error=str(err)[:2000])
        raise _explain_write_failure(err, request, progress, removed) from None
    except BaseException as err:
        if not _remove_unfinished(cluster, request, progress):
            _record(cluster, request, progress, RunState.FAILED, error=f"{type(err).__name__}: {err}"[:2000])
        raise


def _record(cluster: ClusterEnv, request: RunRequest, progress: Progress, state: RunState, **fields: Any) -> None:
    """The chief notes how the run ended, if the run is its own; never hiding the error itself.

    Its own: this process started it, or it is a submitted job (`resume="auto"`) continuing the
    run it started before a requeue, whose failure `harness status` must show. A command refused
    before starting (a completed run trained again, a wrong resume) leaves the record as it was.
    """
    requeued = request.resume == "auto" and RunDir(request.run_dir).state.is_file()
    if not (cluster.is_chief and (progress.started or requeued)):
        return
    try:
        rundir.write_state(request.run_dir, state, job=cluster, **fields)
    except OSError as err:
        where = RunDir(request.run_dir).state
        print(f"harness: could not record state {str(state)!r} in {where}: {err}", file=sys.stderr)


def _explain_write_failure(
    err: atomic.WriteError, request: RunRequest, progress: Progress, removed: bool
) -> atomic.WriteError:
    """Add what the user can do: how much space the run needs, and whether it can be resumed."""
    if err.no_space and progress.space_needed:
        needed = atomic.format_size(progress.space_needed)
        err = err.explained(
            f"The whole run directory needs about {needed} (checkpoints, the saved model and the reports)"
        )
    if progress.started and not removed and checkpoint.candidates(RunDir(request.run_dir).checkpoints):
        err = err.explained(f"{request.run_dir} keeps its checkpoint: continue with --resume once the problem is fixed")
    return err


def _holds_progress(run_dir: Path) -> bool:
    """A checkpoint, a finished epoch's metrics line or a saved model: work that an error or a
    Ctrl-C must never cost (a run that saves no checkpoint until its end still has its metrics)."""
    metrics = RunDir(run_dir).metrics
    has_metrics = metrics.is_file() and metrics.stat().st_size > 0
    return has_metrics or RunDir(run_dir).model.exists() or bool(checkpoint.candidates(RunDir(run_dir).checkpoints))


def _remove_unfinished(cluster: ClusterEnv, request: RunRequest, progress: Progress) -> bool:
    """After an error or a Ctrl-C before the first epoch ended, remove the run directory this run
    made: nothing is lost, and the same command runs again without a half-made directory in its way
    (which could be neither resumed nor trained again without --overwrite). Only the very folder it
    made: another run may have replaced it since (`--overwrite`)."""
    run_dir = request.run_dir
    if not (cluster.is_chief and progress.created) or _holds_progress(run_dir):
        return False
    try:
        now = run_dir.stat()
        if (now.st_dev, now.st_ino) != progress.created_id:
            return False
        rundir.remove_run_dir(run_dir, Path(request.config.run.output_dir))
    except (OSError, RunDirError):
        return False
    print(f"harness: removed {run_dir}, which this run had created and which held no checkpoint yet", file=sys.stderr)
    return True


def _say_resumable(cluster: ClusterEnv, request: RunRequest, progress: Progress) -> None:
    """After a Ctrl-C that kept the run directory: how to go on from its checkpoint."""
    if cluster.is_chief and progress.started and checkpoint.candidates(RunDir(request.run_dir).checkpoints):
        print(f"harness: {request.run_dir} keeps its latest checkpoint: continue with --resume", file=sys.stderr)


def _train(
    request: RunRequest,
    cluster: ClusterEnv,
    extra_callbacks: Sequence[keras.callbacks.Callback],
    stop_requested: Callable[[], bool] | None,
    progress: Progress,
) -> Path:
    config = absolute_data_path(request.config, request.base_dir)
    run_dir = request.run_dir
    if cluster.is_chief:
        check_request(request, config)
    resume = wants_resume(request)
    watchdog = make_watchdog(config, cluster)
    try:
        check_objectives(config.training, str(request.config_path or DEFAULT_SOURCE))
        data = prepare_data(config.data, config.run.seed, request.base_dir)
        if cluster.is_chief:  # before the other ranks wait for this one in a collective
            progress.fingerprint = data_fingerprint(config.data.path)
        watchdog.beat("connecting to the other ranks")
        strategy = make_strategy(config.distribute, cluster=cluster)
        ranks = preflight(strategy) if cluster.is_distributed else []
        warn_if_slow_precision(config.training.precision, enabled=strategy.is_chief)
        callbacks = watch_stops([*build_callbacks(config), *extra_callbacks])
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
        data = trainer.data  # adapted to the model's input shape
        progress.space_needed = estimate_run_bytes(trainer)
        state = restore(trainer, run_dir, config) if resume else None
        writer = start_run_dir(request, config, data, strategy, ranks, progress) if strategy.is_chief else None
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
        reporter.message(result_lines(run_dir, evaluation, result, html=config.report.html))
    return run_dir


REPORTS_BYTES = 2 * 1024 * 1024
"""About what report.html (plots embedded), the other reports and the metrics take."""


def estimate_run_bytes(trainer: Trainer) -> int:
    """Space a run directory needs: up to three checkpoints kept plus one being written, the
    saved model, and the reports; so a full disk can be told how much to free."""
    model = _variable_bytes(trainer.model.variables)
    optimizer = _variable_bytes(trainer.optimizer.variables)
    return 4 * (model + optimizer) + model + REPORTS_BYTES


def _variable_bytes(variables: Sequence[Any]) -> int:
    total = 0
    for var in variables:
        count = 1
        for dim in var.shape:
            count *= int(dim or 1)
        total += count * np.dtype(str(getattr(var.dtype, "name", var.dtype))).itemsize
    return total


def restore(trainer: Trainer, run_dir: Path, config: Config) -> LoopState:
    """Load the newest readable checkpoint; a damaged one is named and an older one used instead.

    Every rank reads the same files and so picks the same checkpoint.
    """
    folders = checkpoint.candidates(RunDir(run_dir).checkpoints)
    problems: list[str] = []
    for folder in folders:
        try:
            state = trainer.restore(folder)
        except CorruptCheckpoint as err:
            problems.append(str(err))
            continue
        if problems and trainer.strategy.is_chief:
            warnings.warn(
                RunDirWarning(f"{'; '.join(problems)}. Resuming from the older checkpoint {folder} instead"),
                stacklevel=2,
            )
        check_global_batch(run_dir, config, trainer.global_batch, state.global_batch)
        return state
    if not folders:
        raise RunDirError(f"run directory {run_dir} has no checkpoint to resume from")
    raise RunDirError(
        f"cannot resume {run_dir}: no checkpoint can be read: {'; '.join(problems)}. "
        "Start again with --overwrite, or restore the files from a backup"
    )


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
    return summarize_error(getattr(err, "message", "") or str(err)) or type(err).__name__


def make_watchdog(config: Config, cluster: ClusterEnv) -> Watchdog:
    """Armed only when several processes take part: a single process cannot wait for a peer."""
    output = Path(config.run.output_dir)
    heartbeats = Heartbeats(
        heartbeat_folder(output, config.run.name), cluster.rank, cluster.world_size, cluster.node_name
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
        callbacks.append(make_early_stopping(stop))
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
    request: RunRequest,
    config: Config,
    data: PreparedData,
    strategy: Strategy,
    ranks: list[dict[str, Any]],
    progress: Progress,
) -> rundir.RunWriter:
    """Create the run directory (or continue the existing one) with what is known before training.

    A new run directory is assembled under a temporary name and appears complete, so a full
    disk here leaves nothing behind; a resumed one gets its config, environment and state updated.
    """
    run_dir = request.run_dir
    if request.resume and run_dir.is_dir() and not request.overwrite:
        _write_start(run_dir, request, config, data, strategy, ranks, progress.fingerprint)
    else:
        output_dir = Path(config.run.output_dir)
        with rundir.new_run_dir(run_dir, output_dir, overwrite=request.overwrite) as staging:
            _write_start(staging, request, config, data, strategy, ranks, progress.fingerprint)
        progress.created = True
        made = run_dir.stat()
        progress.created_id = (made.st_dev, made.st_ino)
    progress.started = True
    return rundir.RunWriter(run_dir, tensorboard=config.training.tensorboard, job=strategy.cluster)


def _write_start(
    folder: Path,
    request: RunRequest,
    config: Config,
    data: PreparedData,
    strategy: Strategy,
    ranks: list[dict[str, Any]],
    fingerprint: dict[str, Any] | None,
) -> None:
    atomic.write_text(RunDir(folder).config, to_yaml(config))
    data.preprocessor.save(RunDir(folder).preprocessing)
    extra = {
        "distribute": strategy.describe(),
        "ranks": ranks,
        "command": request.command,
        "data_fingerprint": fingerprint,  # `harness evaluate` checks it
        "code_folders": [str(folder) for folder in import_roots(request.base_dir)],  # predict imports from there
    }
    atomic.write_json(RunDir(folder).env, environment(request.base_dir, extra))
    rundir.write_state(
        folder,
        RunState.RUNNING,
        starting=True,
        job=strategy.cluster,
        epochs=config.training.epochs,
        requeues=strategy.cluster.restart_count,
        error=None,
    )


def result_lines(run_dir: Path, evaluation: dict[str, Any], result: TrainResult, html: bool = True) -> str:
    """What a person wants to read when the run ends: the test result and where the files are
    (report.md when `report.html` is off)."""
    headline = evaluation.get("headline", {})
    value = headline.get("value", float("nan"))
    metric = f"test {headline.get('metric')} {value:.4f} on {evaluation.get('n')} samples"
    stopped = f" ({result.stop_reason})" if result.stopped_early else ""
    return (
        f"done: {metric}, {len(result.history)} epochs{stopped}, {result.wall_time_s:.1f}s training\n"
        f"run directory: {run_dir}\nreport: {RunDir(run_dir).report_html if html else RunDir(run_dir).report_md}"
    )


def finish_run_dir(
    run_dir: Path, config: Config, data: PreparedData, trainer: Trainer, result: TrainResult
) -> dict[str, Any]:
    """Save the model, evaluate on the test split and write the report and model card."""
    save_model(trainer.model, RunDir(run_dir).model)
    result.extra["requeues"] = trainer.strategy.cluster.restart_count
    evaluation = evaluate_test_split(trainer.model, data, run_dir, logits=trainer.objectives.loss.logits)
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
    rundir.write_state(run_dir, RunState.COMPLETED, job=trainer.strategy.cluster, epoch=len(result.history), error=None)
    return evaluation


def save_model(model: keras.Model, target: Path) -> None:
    with atomic.atomic_path(target, suffix=".keras") as tmp:
        model.save(tmp)


def reproduce_command(run_dir: Path) -> str:
    """The command that re-runs exactly this experiment from its saved config."""
    config = shlex.quote(str(RunDir(run_dir).config))
    return f"harness train {config} run.name={shlex.quote(run_dir.name)}-repro"
