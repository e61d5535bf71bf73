"""The registered models: `mlp`, `cnn` and `resnet`, built with the Functional API.

Layers get explicit, stable names (`block1_conv`, `dense1`, `output`, ...) so `model.freeze` can
name them in a config and the names are the same in every process.
"""

from __future__ import annotations

from typing import Any

import keras

from harness.config.schema import ModelConfig
from harness.errors import ModelError
from harness.models.base import (
    ModelBuilder,
    Task,
    batch_norm,
    check_activation,
    check_no_kwargs,
    task_head,
)
from harness.registry import Registry

MODELS: Registry[ModelBuilder] = Registry("model")

CNN_POOLING = ("avg", "flatten")


@MODELS.register("mlp")
def mlp(cfg: ModelConfig, *, input_shape: tuple[int, ...], num_outputs: int, task: Task) -> keras.Model:
    """Flatten, then the dense head: works for tabular rows and (small) images alike."""
    check_no_kwargs(cfg)
    check_activation(cfg.activation)
    inputs = keras.Input(input_shape, name="input")
    features = keras.layers.Flatten(name="flatten")(inputs)
    return keras.Model(inputs, task_head(features, cfg, num_outputs, task), name="mlp")


@MODELS.register("cnn")
def cnn(cfg: ModelConfig, *, input_shape: tuple[int, ...], num_outputs: int, task: Task) -> keras.Model:
    """Conv blocks from `cfg.filters`, pooled features, then the dense head.

    Pooling halves the image after each block until it is 2x2, so the same config fits 8x8
    digits and 32x32 photos. `model.kwargs.pooling` picks global average pooling (default,
    few parameters on large images) or flatten.
    """
    check_no_kwargs(cfg, ("pooling",))
    check_activation(cfg.activation)
    pooling = _cnn_pooling(cfg)
    inputs = keras.Input(input_shape, name="input")
    x = as_image(inputs, input_shape, "cnn")
    size = input_shape[:2]
    for index, filters in enumerate(cfg.filters, start=1):
        x = conv_bn_act(x, filters, 1, f"block{index}", cfg)
        if min(size) > 2:
            x = keras.layers.MaxPooling2D(2, name=f"block{index}_pool")(x)
            size = (size[0] // 2, size[1] // 2)
    if pooling == "avg":
        features = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    else:
        features = keras.layers.Flatten(name="flatten")(x)
    return keras.Model(inputs, task_head(features, cfg, num_outputs, task), name="cnn")


def _cnn_pooling(cfg: ModelConfig) -> str:
    pooling = cfg.kwargs.get("pooling", "avg")
    if pooling not in CNN_POOLING:
        raise ModelError(
            f"`model.kwargs.pooling` must be one of {', '.join(CNN_POOLING)}. Received: pooling={pooling!r}"
        )
    return str(pooling)


@MODELS.register("resnet")
def resnet(cfg: ModelConfig, *, input_shape: tuple[int, ...], num_outputs: int, task: Task) -> keras.Model:
    """A small ResNet: stem conv, stages of basic residual blocks, global pooling, dense head.

    Stage `i` has `cfg.width * 2**i` filters; each stage after the first starts with a stride-2
    block, unless the image is already 2x2 or smaller.
    """
    check_no_kwargs(cfg)
    check_activation(cfg.activation)
    inputs = keras.Input(input_shape, name="input")
    x = conv_bn_act(as_image(inputs, input_shape, "resnet"), cfg.width, 1, "stem", cfg)
    size = input_shape[:2]
    for stage, blocks in enumerate(cfg.blocks_per_stage):
        filters = cfg.width * 2**stage
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 and min(size) > 2 else 1
            x = basic_block(x, filters, stride, f"stage{stage + 1}_block{block + 1}", cfg)
            size = (-(-size[0] // stride), -(-size[1] // stride))
    features = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, task_head(features, cfg, num_outputs, task), name="resnet")


def basic_block(x: Any, filters: int, stride: int, prefix: str, cfg: ModelConfig) -> Any:
    """Two convs plus a shortcut; the shortcut is a 1x1 conv when the shape changes."""
    y = conv_bn_act(x, filters, stride, f"{prefix}_1", cfg)
    y = conv_bn(y, filters, 1, cfg.kernel_size, f"{prefix}_2", cfg)
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = conv_bn(x, filters, stride, 1, f"{prefix}_shortcut", cfg)
    y = keras.layers.Add(name=f"{prefix}_add")([y, shortcut])
    return keras.layers.Activation(cfg.activation, name=f"{prefix}_out")(y)


def conv_bn(x: Any, filters: int, stride: int, kernel: int, prefix: str, cfg: ModelConfig) -> Any:
    """Conv2D with 'same' padding and optional BatchNorm; bias is redundant before BN."""
    x = keras.layers.Conv2D(
        filters, kernel, strides=stride, padding="same", use_bias=not cfg.batch_norm, name=f"{prefix}_conv"
    )(x)
    if cfg.batch_norm:
        x = batch_norm(f"{prefix}_bn")(x)
    return x


def conv_bn_act(x: Any, filters: int, stride: int, prefix: str, cfg: ModelConfig) -> Any:
    x = conv_bn(x, filters, stride, cfg.kernel_size, prefix, cfg)
    return keras.layers.Activation(cfg.activation, name=f"{prefix}_act")(x)


def as_image(inputs: Any, input_shape: tuple[int, ...], model: str) -> Any:
    """Return `inputs` as (height, width, channels); a (height, width) input gets one channel."""
    if len(input_shape) == 3:
        return inputs
    if len(input_shape) == 2:
        return keras.layers.Reshape((*input_shape, 1), name="add_channel")(inputs)
    raise ModelError(
        f"{model} needs image input of shape (height, width, channels). Received: "
        f"input_shape={input_shape}. For tabular data use model.name=mlp."
    )
