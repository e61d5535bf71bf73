"""The training loop: compiled multi-step chunks over a distributed iterator.

Keras 3 `Model.fit` fails under MultiWorkerMirroredStrategy, so the project owns its loop. It is
written against `harness.distribute.Strategy` only, so every backend runs the same code. Speed
comes from running `steps_per_execution` steps per `tf.function` call and reading metrics from
the device once per chunk, never per step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import keras
import numpy as np
import tensorflow as tf

from harness.config import Config
from harness.data import PreparedData, fit_data_to_model, in_memory, make_step_dataset
from harness.distribute import Strategy
from harness.errors import ConfigError, Preempted, TrainingError
from harness.models import build_model, compiled_setup
from harness.train import checkpoint
from harness.train.callbacks import stop_reason as describe_stop
from harness.train.checkpoint import LoopState
from harness.train.objectives import Objectives, choose_loss, choose_optimizer, make_optimizer
from harness.train.progress import Reporter, SilentReporter

__all__ = ["Trainer", "TrainResult", "check_global_batch", "make_optimizer", "seed_everything"]

class RunRecord(Protocol):
    """Where the loop keeps what outlives the process: the run directory's metrics and checkpoints
    (`harness.train.rundir.RunWriter`); the loop runs without one in tests and benchmarks."""

    def history_until(self, epoch: int) -> list[dict[str, Any]]: ...

    def append_metrics(self, logs: dict[str, Any]) -> None: ...

    def save_checkpoint(self, trainer: Trainer, state: LoopState, best: bool) -> Path: ...

    def latest_checkpoint(self) -> Path | None: ...


ACCUMULATORS = ("loss", "metric", "count")
PICKED_BY_AUTO = ", picked by distribute.strategy=auto"


@dataclass
class TrainResult:
    """What the report needs to know about how training went."""

    history: list[dict[str, float]]
    state: LoopState
    stopped_early: bool
    stop_reason: str
    wall_time_s: float
    samples_per_s: float
    global_batch_size: int
    final_lr: float
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "epochs_run": len(self.history),
            "best_epoch": self.state.best_epoch,
            "best_value": self.state.best_value,
            "stopped_early": self.stopped_early,
            "stop_reason": self.stop_reason,
            "wall_time_s": round(self.wall_time_s, 3),
            "train_samples_per_s": round(self.samples_per_s, 1),
            "global_batch_size": self.global_batch_size,
            "final_lr": self.final_lr,
            **self.extra,
        }


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy, TensorFlow and Keras; optionally make TF ops deterministic."""
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def check_global_batch(batch_size: int, replicas: int, train_samples: int) -> None:
    """Refuse a global batch larger than the training split, before anything is allocated.

    Every step's global batch is padded to full size with zero-weight samples, so a batch size
    typed a few digits too long would allocate gigabytes of padding per epoch and train on the
    whole split in one step anyway.
    """
    global_batch = batch_size * replicas
    if global_batch <= train_samples:
        return
    per_replica = train_samples // replicas
    what = (
        f"training.batch_size={batch_size} must fit in the training split: {batch_size} per replica x {replicas} "
        f"replica(s) is a global batch of {global_batch}, more than the {train_samples} training samples"
    )
    if per_replica:
        raise ConfigError(f"{what}. Use training.batch_size={per_replica} or less.")
    raise ConfigError(
        f"{what}; even a batch of 1 per replica is too many. Use more data (data.max_samples, "
        "data.validation_split and data.test_split decide how much is for training) or fewer replicas."
    )


class Trainer:
    """Builds model and optimizer in the strategy's scope and runs epochs of compiled chunks."""

    def __init__(
        self,
        config: Config,
        data: PreparedData,
        strategy: Strategy,
        callbacks: Sequence[keras.callbacks.Callback] = (),
        reporter: Reporter | None = None,
        heartbeat: Callable[[str], None] | None = None,
        stop_requested: Callable[[], bool] | None = None,
    ) -> None:
        check_global_batch(config.training.batch_size, strategy.num_replicas, len(data.x_train))
        self.config = config
        self.cfg = config.training
        self.data = data
        self.strategy = strategy
        self.reporter = reporter or SilentReporter()
        self.heartbeat = heartbeat or (lambda what: None)
        self.stop_requested = stop_requested or (lambda: False)
        self.classification = data.task == "classification"
        self.global_batch = self.cfg.batch_size * strategy.num_replicas
        self.local_batch = self.cfg.batch_size * strategy.local_replicas
        self.steps_per_epoch = max(1, math.ceil(len(data.x_train) / self.global_batch))
        self.validation_steps = max(1, math.ceil(len(data.x_val) / self.global_batch))
        seed_everything(config.run.seed, config.run.deterministic)
        keras.mixed_precision.set_global_policy(self.cfg.precision)
        self._target_scale = self._regression_target_scale()
        with strategy.scope():
            self.model = build_model(
                config.model, input_shape=data.input_shape, num_outputs=data.num_outputs, task=data.task
            )
            self.objectives = self._choose_objectives()
            self.loss_fn = self.objectives.loss.fn
            self.optimizer = self._build_optimizer()
            self.train_acc = self._accumulators("train")
            self.val_acc = self._accumulators("val")
        self.data = data = fit_data_to_model(data, self.model, self.reporter.message)  # (28, 28) vs (28, 28, 1)
        # Tensors once for the run: each epoch's pipeline gathers from these, not from a new copy.
        self._train_tensors = in_memory(data.x_train, data.y_train)
        strategy.synchronize(self._state_variables())
        self.callbacks = keras.callbacks.CallbackList(
            list(callbacks),
            model=self.model,
            add_history=False,
            add_progbar=False,
            epochs=self.cfg.epochs,
            steps=self.steps_per_epoch,
            verbose=0,
        )
        step = tf.function(self._train_step, jit_compile=True) if self.cfg.jit_compile else self._train_step
        self._replica_train_step = step
        self._train_chunk = tf.function(self._train_chunk_fn)
        self._eval_all = tf.function(self._eval_all_fn)
        self._val_dataset = strategy.distribute(self._dataset(data.x_val, data.y_val, None))

    # ---- construction -------------------------------------------------------------------
    def _choose_objectives(self) -> Objectives:
        """Loss and optimizer from the config, else from the model's compile(); see objectives.py."""
        setup = compiled_setup(self.model)
        scaled = self.config.data.target_scaling == "standard"
        loss = choose_loss(self.cfg, self.model, self.data.task, self.data.num_outputs, setup, scaled)
        optimizer = choose_optimizer(self.config, setup, self.strategy.num_replicas, self.steps_per_epoch)
        metrics = setup.metrics_text if setup is not None else ()
        return Objectives(loss=loss, optimizer=optimizer, compiled_metrics=tuple(metrics), task=self.data.task)

    def _build_optimizer(self) -> keras.optimizers.Optimizer:
        optimizer = self.objectives.optimizer.optimizer
        if self.cfg.precision == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(self.model.trainable_variables)
        self.strategy.prepare_optimizer(optimizer)
        return optimizer

    def _accumulators(self, prefix: str) -> dict[str, tf.Variable]:
        """Sums kept on each replica and added up across replicas when read."""
        return {
            name: tf.Variable(
                0.0,
                dtype=tf.float64,
                trainable=False,
                name=f"{prefix}_{name}",
                synchronization=tf.VariableSynchronization.ON_READ,
                aggregation=tf.VariableAggregation.SUM,
            )
            for name in ACCUMULATORS
        }

    def _regression_target_scale(self) -> np.ndarray:
        """Per-target factor from scaled to original units, so logged MAE is in real units."""
        if self.classification:
            return np.ones((1,), np.float32)
        k = self.data.num_outputs
        ones = self.data.preprocessor.inverse_targets(np.ones((1, k), np.float32))
        zeros = self.data.preprocessor.inverse_targets(np.zeros((1, k), np.float32))
        return np.abs(np.asarray(ones - zeros, np.float32)).reshape(-1)

    # ---- compiled steps -----------------------------------------------------------------
    def _train_step(self, x: tf.Tensor, y: tf.Tensor, weight: tf.Tensor) -> None:
        """One replica's step; weights make the sum over all replicas the global-batch mean."""
        with tf.GradientTape() as tape:
            pred = self.model(x, training=True)
            per_example = self.loss_fn(y, pred)
            loss = tf.reduce_sum(tf.cast(per_example, tf.float32) * weight)
            if self.model.losses:
                loss += tf.add_n(self.model.losses) / float(self.strategy.num_replicas)
            scaled = self.optimizer.scale_loss(loss)
        variables = self.model.trainable_variables
        grads = self.strategy.aggregate_gradients(tape.gradient(scaled, variables))
        self.optimizer.apply_gradients(zip(grads, variables, strict=True))
        self._accumulate(self.train_acc, y, pred, per_example, weight)

    def _eval_step(self, x: tf.Tensor, y: tf.Tensor, weight: tf.Tensor) -> None:
        pred = self.model(x, training=False)
        self._accumulate(self.val_acc, y, pred, self.loss_fn(y, pred), weight)

    def _accumulate(
        self,
        acc: dict[str, tf.Variable],
        y: tf.Tensor,
        pred: tf.Tensor,
        per_example: tf.Tensor,
        weight: tf.Tensor,
    ) -> None:
        """Add this replica's sums; padding samples (weight 0) count for nothing."""
        mask = tf.cast(weight > 0, tf.float64)
        pred = tf.cast(pred, tf.float32)
        if self.classification:
            hits = tf.equal(tf.argmax(pred, axis=-1, output_type=tf.int32), tf.cast(y, tf.int32))
            metric = tf.reduce_sum(tf.cast(hits, tf.float64) * mask)
        else:
            err = tf.abs(tf.cast(y, tf.float32) - pred) * self._target_scale
            metric = tf.reduce_sum(tf.cast(tf.reduce_mean(err, axis=-1), tf.float64) * mask)
        acc["loss"].assign_add(tf.reduce_sum(tf.cast(per_example, tf.float64) * mask))
        acc["metric"].assign_add(metric)
        acc["count"].assign_add(tf.reduce_sum(mask))

    def _train_chunk_fn(self, iterator: Any, steps: tf.Tensor) -> None:
        for _ in tf.range(steps):
            x, y, weight = next(iterator)
            self.strategy.run(self._replica_train_step, args=(x, y, weight))

    def _eval_all_fn(self, dataset: Any) -> None:
        for x, y, weight in dataset:
            self.strategy.run(self._eval_step, args=(x, y, weight))

    # ---- host side ----------------------------------------------------------------------
    @property
    def metric_name(self) -> str:
        return "accuracy" if self.classification else "mae"

    def _sums(
        self, acc: dict[str, tf.Variable], offset: dict[str, float] | None = None, stop_vote: bool = False
    ) -> dict[str, float]:
        """Accumulator values summed over replicas, plus those of a resumed partial epoch.

        `sums["stop"]` counts the ranks that voted to stop (`stop_vote`: preemption or a time
        limit): the vote travels with the sums every rank reads after each chunk, so all ranks see
        the same count and stop at the same step.
        """
        *totals, votes = self.strategy.sum_variables(list(acc.values()), extra=1.0 if stop_vote else 0.0)
        sums = {name: float(total) + (offset or {}).get(name, 0.0) for name, total in zip(acc, totals, strict=True)}
        sums["stop"] = float(votes)
        return sums

    def _logs(self, sums: dict[str, float], prefix: str = "") -> dict[str, float]:
        count = max(sums["count"], 1.0)
        return {f"{prefix}loss": sums["loss"] / count, f"{prefix}{self.metric_name}": sums["metric"] / count}

    @staticmethod
    def _reset(acc: dict[str, tf.Variable]) -> None:
        for var in acc.values():
            var.assign(0.0)

    def evaluate_validation(self) -> dict[str, float]:
        """Loss and metric over the whole validation split, with the callbacks' test hooks around it.

        As in `Model.fit`, validation calls `on_test_begin`, the test batch hooks and `on_test_end`
        (logs without the `val_` prefix). The split runs as one compiled call, so the batch hooks
        run once, with the first and the last step's index, as `Model.evaluate` calls them once
        per `steps_per_execution` chunk.
        """
        self.callbacks.on_test_begin()
        self.callbacks.on_test_batch_begin(0)
        self._reset(self.val_acc)
        self._eval_all(self._val_dataset)
        logs = self._logs(self._sums(self.val_acc))
        self.callbacks.on_test_batch_end(self.validation_steps - 1, logs)
        self.callbacks.on_test_end(logs)
        return {f"val_{name}": value for name, value in logs.items()}

    def current_lr(self) -> float:
        return float(keras.ops.convert_to_numpy(self.optimizer.learning_rate))

    def _state_variables(self) -> list[Any]:
        """The TensorFlow variables behind the model's and the optimizer's state."""
        return [v.value for v in [*self.model.variables, *self.optimizer.variables]]

    def restore(self, folder: Path) -> LoopState:
        """Load model and optimizer variables and the loop position from a checkpoint."""
        state = checkpoint.load(folder, self.model.variables, self.optimizer.variables)
        self.strategy.synchronize(self._state_variables())
        return state

    def fit(self, state: LoopState | None = None, run: RunRecord | None = None) -> TrainResult:
        """Train from `state` (fresh if None) to the configured number of epochs.

        `run` is the chief's run directory writer (None on other ranks): it receives metrics
        lines and checkpoints. Callbacks are called as `Model.fit` calls them with
        `steps_per_execution`: the train batch hooks once per compiled chunk (the chunk's first
        step index, then its last with the epoch's running logs), validation's test hooks at the end
        of every epoch, and `on_train_end` with the last epoch's logs.
        """
        state = self._adapt(state or LoopState())
        history = list(run.history_until(state.epoch)) if run is not None else []
        stop_reason = "completed all epochs"
        stopped_early = False
        self.model.stop_training = False
        self.callbacks.on_train_begin()
        self.reporter.message("\n".join([*self.objectives.lines(), self._start_line(state)]))
        try:
            for epoch in range(state.epoch, self.cfg.epochs):
                logs = self._run_epoch(epoch, state, run)
                history.append(logs)
                if self.model.stop_training:
                    stopped_early = True
                    stop_reason = describe_stop(self.callbacks.callbacks, epoch)
                    break
        finally:
            self.reporter.close()
        self.callbacks.on_train_end(history[-1] if history else None)
        if stopped_early and run is not None:
            self._save_final_checkpoint(state, run)
        return TrainResult(
            history=history,
            state=state,
            stopped_early=stopped_early,
            stop_reason=stop_reason,
            wall_time_s=state.train_time_s,
            samples_per_s=state.samples_seen / max(state.train_time_s, 1e-9),
            global_batch_size=self.global_batch,
            final_lr=self.current_lr(),
            extra={**self.strategy.describe(), **self.objectives.summary()},
        )

    def _adapt(self, state: LoopState) -> LoopState:
        """A partial epoch saved with another global batch cannot continue mid-way: redo it."""
        if state.step_in_epoch and state.global_batch not in (0, self.global_batch):
            self.reporter.message(
                f"the checkpoint was saved mid-epoch with global batch {state.global_batch}; this run uses "
                f"{self.global_batch}, so epoch {state.epoch + 1} restarts from its beginning"
            )
            state.step_in_epoch, state.partial = 0, {}
        state.global_batch = self.global_batch
        return state

    def _start_line(self, state: LoopState) -> str:
        where = (
            f"resuming at epoch {state.epoch + 1}, step {state.step_in_epoch}"
            if state.global_step
            else "starting"
        )
        return (
            f"{where}: {len(self.data.x_train)} training samples, {self.strategy.num_replicas} replica(s) "
            f"({self.strategy.name}{PICKED_BY_AUTO if self.strategy.picked_by_auto else ''}"
            f"{' by ' + self.strategy.auto_note if self.strategy.auto_note else ''}), "
            f"global batch {self.global_batch} "
            f"= {self.cfg.batch_size} per replica x {self.strategy.num_replicas}, "
            f"{self.steps_per_epoch} steps per epoch"
        )

    def _dataset(self, x: np.ndarray | tf.Tensor, y: np.ndarray | tf.Tensor, seed: int | None) -> tf.data.Dataset:
        """This rank's share of every global batch, as (x, y, weight)."""
        world, rank = self.strategy.world_size, self.strategy.rank
        return make_step_dataset(x, y, self.local_batch, world=world, rank=rank, shuffle_seed=seed)

    def _train_dataset(self, epoch: int, skip: int) -> Any:
        dataset = self._dataset(*self._train_tensors, self.config.run.seed + epoch)
        if skip:
            dataset = dataset.skip(skip)
        return self.strategy.distribute(dataset)

    def _run_epoch(self, epoch: int, state: LoopState, run: RunRecord | None) -> dict[str, float]:
        self.callbacks.on_epoch_begin(epoch)
        self._reset(self.train_acc)
        offset = dict(state.partial) if state.step_in_epoch else {}
        iterator = iter(self._train_dataset(epoch, state.step_in_epoch))
        self.reporter.start_epoch(epoch + 1, self.cfg.epochs, self.steps_per_epoch, state.step_in_epoch)
        epoch_time, counted = 0.0, offset.get("count", 0.0)
        sums = self._sums(self.train_acc, offset)
        while state.step_in_epoch < self.steps_per_epoch:
            steps = self._chunk_size(state)
            self.callbacks.on_train_batch_begin(state.step_in_epoch)
            started = time.perf_counter()
            self._train_chunk(iterator, tf.constant(steps, tf.int64))
            sums = self._sums(self.train_acc, offset, stop_vote=self.stop_requested())
            elapsed = time.perf_counter() - started
            epoch_time += elapsed
            state.train_time_s += elapsed
            state.step_in_epoch += steps
            state.global_step += steps
            state.samples_seen += int(sums["count"] - counted)
            counted = sums["count"]
            self._check_finite(self._logs(sums), epoch, state, run)
            self.heartbeat(f"training epoch {epoch + 1}, after global step {state.global_step}")
            self.reporter.update(state.step_in_epoch, self._logs(sums))
            self.callbacks.on_train_batch_end(state.step_in_epoch - 1, self._logs(sums))
            stopping = sums["stop"] > 0 and state.step_in_epoch < self.steps_per_epoch
            if run is not None and (self._step_checkpoint_due(state) or stopping):
                state.partial = {k: v for k, v in sums.items() if k != "stop"}
                run.save_checkpoint(self, state, best=False)
            if stopping:
                raise Preempted(self._stop_message(state))
            if self.model.stop_training:
                break  # a callback asked to stop (TerminateOnNaN does so mid-epoch), as Model.fit does
        new_samples = counted - offset.get("count", 0.0)
        logs = self._epoch_logs(epoch, state, self._logs(sums), epoch_time, new_samples)
        self.callbacks.on_epoch_end(epoch, logs)
        state.epoch, state.step_in_epoch, state.partial = epoch + 1, 0, {}
        is_best = self._update_best(logs, epoch, state)
        self.reporter.end_epoch(epoch + 1, self.cfg.epochs, logs)
        stopping = sums["stop"] > 0
        if run is not None:
            run.append_metrics(logs)
            if self._epoch_checkpoint_due(epoch) or stopping:
                run.save_checkpoint(self, state, best=is_best)
        if stopping and epoch + 1 < self.cfg.epochs:
            raise Preempted(self._stop_message(state))
        return logs

    @staticmethod
    def _stop_message(state: LoopState) -> str:
        return (
            f"training stopped on request at epoch {state.epoch + 1}, step {state.step_in_epoch} "
            f"(global step {state.global_step}); a checkpoint was saved and the run continues from it "
            "when resumed (--resume, or automatically when a Slurm job is requeued)"
        )

    def _epoch_logs(
        self, epoch: int, state: LoopState, train_logs: dict[str, Any], epoch_time: float, samples: float
    ) -> dict[str, float]:
        logs: dict[str, Any] = {"epoch": epoch + 1, "step": state.global_step}
        logs.update(train_logs)
        logs.update(self.evaluate_validation())
        logs["lr"] = self.current_lr()
        logs["epoch_time_s"] = round(epoch_time, 4)
        logs["samples_per_s"] = round(samples / max(epoch_time, 1e-9), 1)
        return logs

    def _chunk_size(self, state: LoopState) -> int:
        steps = min(self.cfg.steps_per_execution, self.steps_per_epoch - state.step_in_epoch)
        every = self.cfg.checkpoint.every_steps
        if every:
            steps = min(steps, every - state.global_step % every)
        return steps

    def _step_checkpoint_due(self, state: LoopState) -> bool:
        every = self.cfg.checkpoint.every_steps
        mid_epoch = state.step_in_epoch < self.steps_per_epoch
        return every is not None and state.global_step % every == 0 and mid_epoch

    def _epoch_checkpoint_due(self, epoch: int) -> bool:
        every = self.cfg.checkpoint.every_epochs
        last = epoch + 1 == self.cfg.epochs
        return bool(every) and ((epoch + 1) % every == 0 or last or bool(self.model.stop_training))

    def _save_final_checkpoint(self, state: LoopState, run: RunRecord) -> None:
        if not self.cfg.checkpoint.every_epochs:
            run.save_checkpoint(self, state, best=False)

    def _update_best(self, logs: dict[str, float], epoch: int, state: LoopState) -> bool:
        monitor = self.cfg.checkpoint.monitor
        if monitor not in logs:
            monitor = "val_loss"
        value = float(logs[monitor])
        higher_is_better = monitor.endswith("accuracy")
        better = state.best_value is None or (
            value > state.best_value if higher_is_better else value < state.best_value
        )
        if better:
            state.best_value, state.best_epoch = value, epoch + 1
        return better

    def _check_finite(self, logs: dict[str, Any], epoch: int, state: LoopState, run: RunRecord | None) -> None:
        if math.isfinite(logs["loss"]):
            return
        self.reporter.close()
        last = run.latest_checkpoint() if run is not None else None
        kept = (
            f"The last good checkpoint is kept at {last}." if last else "No checkpoint had been written yet."
        )
        raise TrainingError(
            f"training loss became {logs['loss']} in epoch {epoch + 1} (global step {state.global_step}); "
            f"training stopped. {kept} Hint: lower training.optimizer.learning_rate, add warmup "
            f"(training.schedule.warmup_epochs) or set training.optimizer.clipnorm."
        )
