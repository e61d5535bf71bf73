"""Which loss and optimizer a run trains with, and where each came from.

A model that arrives compiled (a builder that calls `compile()`, or a saved `.keras` file that
was compiled) is trained as compiled: its loss, and its optimizer's class and settings, rebuilt
in the strategy's scope. The config wins where it says so: `training.loss` other than plain
`auto` replaces the loss, and setting any `training.optimizer` key replaces the optimizer.

With a compiled optimizer the harness keeps the compiled learning rate as it is, except for what
the config asks for explicitly: `distribute.lr_scaling` (default none) scales it, and a
`training.schedule` key set in the config puts the schedule on top of it. The default cosine
schedule applies only to the harness's own optimizer.

The training loop weighs one loss value per example (so every replica's share adds up to the
global-batch mean), so every loss becomes a per-example function here, and the harness's integer
class labels are one-hot encoded for the losses that compare whole target vectors.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras

from harness.config import Config, OptimizerConfig, TrainingConfig
from harness.config import keras_names as names
from harness.config.schema import LossConfig
from harness.errors import ConfigError, ModelError
from harness.models import default_loss, has_logits_head
from harness.models.build import CompiledSetup, describe_object, output_activation
from harness.registry import closest
from harness.train.schedules import make_schedule, scaled_learning_rate

FROM_COMPILE = "the model's compile()"
FROM_LOSS_KEY = "training.loss"
FROM_OPTIMIZER_KEY = "training.optimizer"
DEFAULT_OPTIMIZER = "the default training.optimizer"
OPTIMIZER_KNOBS = ("learning_rate", "weight_decay", "clipnorm", "momentum")
HARNESS_SETS = ("reduction", "name", "dtype")
CACHED_ACCURACY = ("accuracy", "acc", "sparse_categorical_accuracy", "categorical_accuracy")
CACHED_MAE = ("mae", "mean_absolute_error")

PerExampleLoss = Callable[[Any, Any], Any]


@dataclass(frozen=True)
class LossChoice:
    """The per-example loss the loop uses, how to print it, and what the model outputs."""

    fn: PerExampleLoss
    text: str
    source: str
    logits: bool
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class OptimizerChoice:
    optimizer: keras.optimizers.Optimizer
    text: str
    source: str
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Objectives:
    """Everything the start of a run and its report say about what is optimised."""

    loss: LossChoice
    optimizer: OptimizerChoice
    compiled_metrics: tuple[str, ...] = ()
    task: str = "classification"

    @property
    def outputs(self) -> str:
        if self.task != "classification":
            return "values"
        return "logits" if self.loss.logits else "probabilities"

    def metrics_note(self) -> str | None:
        """What happens to the metrics the model was compiled with: said plainly."""
        if not self.compiled_metrics:
            return None
        logged = CACHED_ACCURACY if self.task == "classification" else CACHED_MAE
        used = [m for m in self.compiled_metrics if m.lower() in logged]
        other = [m for m in self.compiled_metrics if m.lower() not in logged]
        parts = []
        if used:
            parts.append(f"{', '.join(used)}: logged every epoch (the harness's own {logged[0]})")
        if other:
            parts.append(
                f"{', '.join(other)}: not computed (the loop logs loss and "
                f"{'accuracy' if self.task == 'classification' else 'mae'}; the test report adds "
                f"{'F1, ROC-AUC and log loss' if self.task == 'classification' else 'RMSE and R²'})"
            )
        return "; ".join(parts)

    def lines(self) -> list[str]:
        """The first lines of a run: loss, optimizer and metrics, each with where it came from."""
        lines = [f"loss: {self.loss.text} from {self.loss.source}"]
        lines += [f"  {note}" for note in self.loss.notes]
        lines.append(f"optimizer: {self.optimizer.text} from {self.optimizer.source}")
        lines += [f"  {note}" for note in self.optimizer.notes]
        note = self.metrics_note()
        if note:
            lines.append(f"metrics from compile(): {note}")
        return lines

    def summary(self) -> dict[str, Any]:
        """report.json's record (training section); `outputs` tells evaluate and predict about logits."""
        summary: dict[str, Any] = {
            "loss": self.loss.text,
            "loss_source": self.loss.source,
            "optimizer": self.optimizer.text,
            "optimizer_source": self.optimizer.source,
            "outputs": self.outputs,
        }
        if self.compiled_metrics:
            summary["compiled_metrics"] = list(self.compiled_metrics)
            summary["compiled_metrics_use"] = self.metrics_note()
        return summary


# ---- check time ------------------------------------------------------------------------------


def check_objectives(training: TrainingConfig, source: str) -> None:
    """Check loss and optimizer arguments against Keras's signatures, before any data is read.

    Names were checked when the config was loaded; this adds what needs Keras itself: the
    `kwargs` each class accepts, and `momentum` only where the optimizer has one. Nothing here
    creates a TensorFlow variable (a multi-worker strategy must start before any is made).
    """
    _check_loss_arguments(training.loss, source)
    _check_optimizer_arguments(training.optimizer, source)


def _check_loss_arguments(loss: LossConfig, source: str) -> None:
    if not loss.kwargs:
        return
    if loss.name == names.AUTO:
        raise ConfigError(
            f"invalid config {source}: training.loss.kwargs needs a loss name; with 'auto' the loss depends "
            f"on the task. Set training.loss.name as well. Received: training.loss.kwargs={loss.kwargs!r}"
        )
    cls = loss_class(loss.name)
    reserved = {"from_logits": "training.loss.from_logits"}
    _check_kwargs(cls, loss.kwargs, "training.loss.kwargs", source, reserved=reserved)
    try:
        cls(**loss.kwargs)
    except Exception as err:  # Keras checks values in the constructor: show its words
        raise ConfigError(
            f"invalid config {source}: training.loss.kwargs are not accepted by {cls.__name__}: "
            f"{type(err).__name__}: {str(err)[:300]}. Received: {loss.kwargs!r}"
        ) from None


def _check_optimizer_arguments(cfg: OptimizerConfig, source: str) -> None:
    cls = optimizer_class(cfg.name)
    reserved = {knob: f"training.optimizer.{knob}" for knob in OPTIMIZER_KNOBS}
    _check_kwargs(cls, cfg.kwargs, "training.optimizer.kwargs", source, reserved=reserved)
    if "momentum" in cfg.model_fields_set and "momentum" not in _parameters(cls):
        raise ConfigError(
            f"invalid config {source}: training.optimizer.momentum does not apply to {cfg.name!r} "
            f"({cls.__name__} has no momentum; sgd and rmsprop have one). Remove it, or pick sgd or rmsprop. "
            f"Received: training.optimizer.momentum={cfg.momentum}"
        )


def _check_kwargs(cls: type, kwargs: dict[str, Any], key: str, source: str, reserved: dict[str, str]) -> None:
    accepted = [p for p in _parameters(cls) if p not in HARNESS_SETS and p not in reserved]
    for name in kwargs:
        if name in reserved:
            raise ConfigError(
                f"invalid config {source}: {key}.{name}: set {reserved[name]} instead. Received: {key}={kwargs!r}"
            )
        if name in HARNESS_SETS:
            raise ConfigError(
                f"invalid config {source}: {key}.{name} is set by the harness (the loop needs one loss value "
                f"per example). Remove it. Received: {key}={kwargs!r}"
            )
        if name not in accepted:
            hint = closest(name, accepted)
            raise ConfigError(
                f"invalid config {source}: {key}.{name} is not an argument of keras {cls.__name__}"
                + (f"; did you mean {hint!r}?" if hint else ".")
                + f" It accepts: {', '.join(accepted) or 'none'}. Received: {key}={kwargs!r}"
            )


def _parameters(cls: type) -> list[str]:
    params = inspect.signature(cls).parameters.values()
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def loss_class(name: str) -> type[keras.losses.Loss]:
    """The keras.losses class behind a loss name or alias."""
    canonical = names.canonical_loss(name)
    for alias, target in names.LOSS_ALIASES.items():
        cls = getattr(keras.losses, alias, None)
        if target == canonical and inspect.isclass(cls):
            return cls
    raise ConfigError(f"training.loss={name!r} is not a Keras loss")  # the config check makes this unreachable


def optimizer_class(name: str) -> type[keras.optimizers.Optimizer]:
    cls: type[keras.optimizers.Optimizer] = getattr(keras.optimizers, names.OPTIMIZERS[name])
    return cls


# ---- the loss --------------------------------------------------------------------------------


def choose_loss(
    training: TrainingConfig,
    model: keras.Model,
    task: str,
    num_outputs: int,
    setup: CompiledSetup | None,
    scaled_targets: bool = False,
) -> LossChoice:
    """The loss from `training.loss`, else the model's compile(), else the task's (logits-aware).

    `scaled_targets`: regression targets are standardised (`data.target_scaling=standard`).
    """
    loss = training.loss
    if loss.is_auto and setup is not None and setup.loss is not None:
        return _compiled_loss(setup, model, task, num_outputs, scaled_targets)
    name = default_loss(task) if loss.name == names.AUTO else loss.name
    source = FROM_LOSS_KEY if not loss.is_auto else f"training.loss=auto for {task}"
    canonical = names.canonical_loss(name) or name
    _check_fits_task(canonical, task, f"training.loss={name!r}" if not loss.is_auto else "", num_outputs)
    notes: list[str] = []
    if task == "regression" and scaled_targets:
        _check_positive_targets(canonical, f"training.loss={name!r}")
        notes.extend(_bounded_head_warning(model))
    kwargs = dict(loss.kwargs)
    logits = False
    if canonical in names.FROM_LOGITS_LOSSES:
        logits = loss.from_logits if loss.from_logits is not None else has_logits_head(model, task)
        kwargs["from_logits"] = logits
        if loss.from_logits is None and logits:
            notes.append("the model ends in a linear layer (logits, no softmax), so from_logits=True")
        elif loss.from_logits is False and has_logits_head(model, task):
            notes.append(_linear_head_warning("training.loss.from_logits=false"))
    elif task == "classification" and has_logits_head(model, task):
        logits = True
        notes.append(f"the model ends in a linear layer: {name} sees raw scores, and evaluation applies softmax")
    if setup is not None and setup.loss is not None:
        notes.append(f"replaces the model's compile() loss {setup.loss_text}")
    loss_obj = loss_class(canonical)(reduction=None, **kwargs)
    fn = _adapted(loss_obj, names.LOSSES[canonical], num_outputs)
    return LossChoice(fn=fn, text=describe_object(loss_obj), source=source, logits=logits, notes=tuple(notes))


def _compiled_loss(
    setup: CompiledSetup, model: keras.Model, task: str, num_outputs: int, scaled_targets: bool
) -> LossChoice:
    canonical = compiled_loss_name(setup.loss)
    notes: list[str] = []
    kind = "custom"
    if task == "regression" and scaled_targets:
        if canonical:
            _check_positive_targets(canonical, f"the model's compile(loss={setup.loss_text})")
        notes.extend(_bounded_head_warning(model))
    if canonical:
        _check_fits_task(canonical, task, f"the model's compile(loss={setup.loss_text})", num_outputs)
        kind = names.LOSSES[canonical]
    else:
        notes.append("a custom loss: it receives the labels as the harness holds them (class indices)")
    from_logits = _from_logits(setup.loss)
    head_logits = has_logits_head(model, task)
    logits = from_logits if from_logits is not None else head_logits
    if task == "classification" and from_logits is False and head_logits:
        notes.append(_linear_head_warning("compile()"))
    per_example = setup.per_example_loss()
    if per_example is None:  # unreachable: the caller checked setup.loss
        raise ModelError("the model's compile() set no loss")
    return LossChoice(
        fn=_adapted(per_example, kind, num_outputs),
        text=setup.loss_text or describe_object(setup.loss),
        source=FROM_COMPILE,
        logits=task == "classification" and bool(logits),
        notes=tuple(notes),
    )


POSITIVE_TARGET_LOSSES = ("poisson", "mean_squared_logarithmic_error", "mean_absolute_percentage_error")
"""Regression losses that need targets above zero (a log, a rate, a percentage of the target)."""
BOUNDED_ACTIVATIONS = ("relu", "relu6", "softplus", "sigmoid", "exponential", "softmax")
"""Output activations that cannot go below zero, where about half of standardised targets are."""


def _check_positive_targets(canonical: str, what: str) -> None:
    if canonical in POSITIVE_TARGET_LOSSES:
        raise ConfigError(
            f"{what} needs targets above zero, but regression targets are standardised for training "
            "(data.target_scaling=standard: about half of them are negative). Set data.target_scaling=none "
            "to train on the targets as they are, or use mean_squared_error, mae or huber"
        )


def _bounded_head_warning(model: keras.Model) -> list[str]:
    activation = output_activation(model)
    if activation not in BOUNDED_ACTIVATIONS:
        return []
    return [
        f"warning: the model's output ends in {activation}, which cannot reach the negative values that "
        "standardised targets take (data.target_scaling=standard, about half of them): predictions will stop "
        "at the mean. End the model in a linear layer, or set data.target_scaling=none"
    ]


def _linear_head_warning(where: str) -> str:
    return (
        f"warning: the model ends in a linear layer (logits) but {where} says its outputs are probabilities; "
        "if training stalls near chance, use from_logits=True (or end the model in softmax)"
    )


def compiled_loss_name(loss: Any) -> str | None:
    """The canonical Keras name of a compiled loss, or None for a custom one."""
    fn = getattr(loss, "fn", loss)  # Keras's loss classes wrap the function of the same name
    name = getattr(fn, "__name__", None)
    if not isinstance(name, str) or name not in names.LOSSES:
        return None
    try:
        return name if keras.losses.get(name) is fn else None
    except (ValueError, TypeError):
        return None


def _from_logits(loss: Any) -> bool | None:
    """What a compiled loss says about logits; None when it has no such setting."""
    if isinstance(loss, keras.losses.Loss):
        try:
            config = loss.get_config()
        except Exception:  # a custom Loss without a usable config says nothing about logits
            return None
        value = config.get("from_logits")
        return bool(value) if value is not None else None
    if compiled_loss_name(loss) in names.FROM_LOGITS_LOSSES:
        return False  # a loss named by its function: Keras calls it with from_logits=False
    return None


def _check_fits_task(canonical: str, task: str, what: str, num_outputs: int) -> None:
    """Refuse a loss that compares the wrong things for this task, before anything trains."""
    kind = names.LOSSES.get(canonical)
    if kind == "unsupported":
        raise ConfigError(f"{what or canonical} cannot be used: {names.UNSUPPORTED_WHY[canonical]}")
    if task == "classification" and kind == "regression":
        raise ConfigError(
            f"{what} is a regression loss, but the data is classification ({num_outputs} classes). Use "
            "training.loss=auto (sparse_categorical_crossentropy), categorical_crossentropy or another "
            "classification loss; or set data.task=regression if the target is a number to predict"
        )
    if task == "regression" and kind in ("class_index", "one_hot"):
        raise ConfigError(
            f"{what} is a classification loss, but the data is regression ({num_outputs} target(s)). Use "
            "training.loss=auto (mean_squared_error), mae, huber or another regression loss; or set "
            "data.task=classification if the target holds class labels"
        )


def _adapted(loss: PerExampleLoss, kind: str, num_outputs: int) -> PerExampleLoss:
    """The loss fed labels in the form it expects: the harness holds class indices."""
    if kind != "one_hot":
        return loss

    def one_hot_loss(y: Any, pred: Any) -> Any:
        labels = keras.ops.one_hot(keras.ops.cast(keras.ops.reshape(y, (-1,)), "int32"), num_outputs)
        return loss(keras.ops.cast(labels, pred.dtype), pred)

    return one_hot_loss


# ---- the optimizer ---------------------------------------------------------------------------


def choose_optimizer(
    config: Config, setup: CompiledSetup | None, replicas: int, steps_per_epoch: int
) -> OptimizerChoice:
    """The optimizer of the model's compile() unless `training.optimizer` sets a key. Call in scope."""
    training = config.training
    compiled = setup.optimizer if setup is not None else None
    if compiled is not None and not training.optimizer_is_set:
        return _compiled_optimizer(compiled, config, replicas, steps_per_epoch)
    base_lr = scaled_learning_rate(training.optimizer.learning_rate, replicas, config.distribute.lr_scaling)
    schedule = make_schedule(training.schedule, base_lr, steps_per_epoch, training.epochs)
    try:
        optimizer = make_optimizer(training.optimizer, schedule)
    except (ValueError, TypeError) as err:
        raise ConfigError(
            f"training.optimizer cannot be built: {type(err).__name__}: {str(err)[:300]}. "
            f"Received: training.optimizer.kwargs={training.optimizer.kwargs!r}"
        ) from None
    source = FROM_OPTIMIZER_KEY if training.optimizer_is_set else DEFAULT_OPTIMIZER
    notes = [_lr_note(training.optimizer.learning_rate, base_lr, config)]
    warmup = training.schedule.warmup_epochs
    notes.append(f"schedule: {training.schedule.name}" + (f", {warmup:g} warmup epochs" if warmup else ""))
    if compiled is not None:
        notes.append(f"replaces the model's compile() optimizer {setup.optimizer_text if setup else ''}")
    text = f"{type(optimizer).__name__}({_optimizer_args(optimizer, training.optimizer, base_lr)})"
    return OptimizerChoice(optimizer=optimizer, text=text, source=source, notes=tuple(n for n in notes if n))


def _optimizer_args(optimizer: keras.optimizers.Optimizer, cfg: OptimizerConfig, base_lr: float) -> str:
    """The settings that differ from the class's defaults, plus the learning rate, as a call reads."""
    defaults = {p.name: p.default for p in inspect.signature(type(optimizer)).parameters.values()}
    parts = [f"learning_rate={base_lr:.6g}"]
    for key, value in _knobs(cfg, type(optimizer)).items():
        if key in defaults and value != defaults[key]:
            parts.append(f"{key}={value:.6g}" if isinstance(value, float) else f"{key}={value!r}")
    return ", ".join(parts)


def _lr_note(configured: float, base_lr: float, config: Config) -> str:
    if base_lr == configured:
        return ""
    return (
        f"learning rate {configured:g} scaled to {base_lr:g} for {config.distribute.lr_scaling} "
        "scaling (distribute.lr_scaling)"
    )


def _compiled_optimizer(
    compiled: keras.optimizers.Optimizer, config: Config, replicas: int, steps_per_epoch: int
) -> OptimizerChoice:
    """The compiled optimizer's class and settings, made anew in the current (strategy) scope."""
    inner = compiled.inner_optimizer if isinstance(compiled, keras.optimizers.LossScaleOptimizer) else compiled
    settings = inner.get_config()
    learning_rate = settings.get("learning_rate")
    training, rule = config.training, config.distribute.lr_scaling
    notes = []
    if isinstance(learning_rate, (int, float)):
        base_lr = scaled_learning_rate(float(learning_rate), replicas, rule)
        if base_lr != learning_rate:
            notes.append(f"learning rate {learning_rate:.6g} scaled to {base_lr:.6g} by distribute.lr_scaling={rule}")
        if training.schedule_is_set:
            settings["learning_rate"] = make_schedule(training.schedule, base_lr, steps_per_epoch, training.epochs)
            notes.append(f"with training.schedule {training.schedule.name} on the compiled learning rate")
        else:
            settings["learning_rate"] = base_lr
            notes.append("its learning rate is kept constant (set training.schedule to add a schedule)")
    elif training.schedule_is_set or rule != "none":
        what = "training.schedule" if training.schedule_is_set else f"distribute.lr_scaling={rule}"
        raise ConfigError(
            f"the model is compiled with a learning-rate schedule ({describe_object(inner)}), so {what} cannot "
            "apply on top of it. Remove it from the config, or set training.optimizer keys to train with "
            "the harness's optimizer instead"
        )
    try:
        optimizer = type(inner).from_config(settings)
    except Exception as err:  # an optimizer whose config does not round-trip cannot be rebuilt in scope
        raise ModelError(
            f"the model's compile() optimizer {describe_object(inner)} cannot be rebuilt from its config "
            f"({type(err).__name__}: {str(err)[:200]}); set training.optimizer to choose one in the config"
        ) from None
    text = describe_object(inner) if settings["learning_rate"] == learning_rate else describe_object(optimizer)
    return OptimizerChoice(optimizer=optimizer, text=text, source=FROM_COMPILE, notes=tuple(notes))


def _knobs(cfg: OptimizerConfig, cls: type) -> dict[str, Any]:
    """The config's optimizer settings this class takes, plus its kwargs."""
    params = _parameters(cls)
    knobs: dict[str, Any] = {"clipnorm": cfg.clipnorm}
    if cfg.weight_decay or cfg.name == "adamw":
        knobs["weight_decay"] = cfg.weight_decay
    if "momentum" in params and (cfg.name in ("sgd", "rmsprop") or "momentum" in cfg.model_fields_set):
        knobs["momentum"] = cfg.momentum
    knobs.update(cfg.kwargs)
    return knobs


def make_optimizer(cfg: OptimizerConfig, learning_rate: Any) -> keras.optimizers.Optimizer:
    """The configured Keras 3 optimizer; weight decay is decoupled for every kind."""
    cls = optimizer_class(cfg.name)
    return cls(learning_rate=learning_rate, **_knobs(cfg, cls))
