"""The paper's CIFAR architectures, built with the Keras functional API.

These mirror the reference implementation of Network Slimming (VGG with
BN after every conv, pre-activation bottleneck ResNet, DenseNet-BC-less
DenseNet-40) so that examples, tests and benchmarks share one definition.
`keras_slim.training.cifar.recipe` trains them.
"""
from __future__ import annotations

from typing import Sequence

import keras
from keras import layers

from keras_slim.errors import ArgumentError

__all__ = ["VGG_CONFIGS", "densenet", "preact_resnet", "vgg"]

VGG_CONFIGS = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
         512, 512, 512, 512, "M", 512, 512, 512, 512],
}


def _bn(name: str, gamma_regularizer=None):
    return layers.BatchNormalization(
        momentum=0.9, epsilon=1e-5, gamma_regularizer=gamma_regularizer, name=name
    )


def vgg(
    depth: int = 19,
    width: float = 1.0,
    num_classes: int = 10,
    input_shape: Sequence[int] = (32, 32, 3),
    gamma_regularizer=None,
    name: str | None = None,
) -> keras.Model:
    """VGG-{11,13,16,19} for CIFAR: conv3x3-BN-ReLU blocks, avg-pool, Flatten, Dense.

    `width` scales every conv (0.5 gives the half-width CPU configuration).
    """
    if depth not in VGG_CONFIGS:
        raise ArgumentError(f"vgg depth must be one of {sorted(VGG_CONFIGS)}, got {depth!r}")
    if not width > 0:
        raise ArgumentError(f"vgg width must be > 0, got {width!r}")
    inputs = keras.Input(tuple(input_shape), name="image")
    x = inputs
    conv_i = 0
    for item in VGG_CONFIGS[depth]:
        if item == "M":
            x = layers.MaxPooling2D(2, name=f"pool{conv_i}")(x)
            continue
        conv_i += 1
        x = layers.Conv2D(max(1, int(round(item * width))), 3, padding="same",
                          use_bias=False, name=f"conv{conv_i}")(x)
        x = _bn(f"bn{conv_i}", gamma_regularizer)(x)
        x = layers.ReLU(name=f"relu{conv_i}")(x)
    x = layers.AveragePooling2D(2, name="avgpool")(x)
    x = layers.Flatten(name="flatten")(x)
    outputs = layers.Dense(num_classes, name="classifier")(x)
    return keras.Model(inputs, outputs, name=name or f"vgg{depth}")


def preact_resnet(
    depth: int = 164,
    num_classes: int = 10,
    input_shape: Sequence[int] = (32, 32, 3),
    width: float = 1.0,
    gamma_regularizer=None,
    name: str | None = None,
) -> keras.Model:
    """Pre-activation bottleneck ResNet (He et al. 2016) as used in the paper.

    depth = 9n + 2; the paper's is 164 (n = 18); depth 20 (n = 2) is CPU-sized.
    Each block is BN-ReLU-conv1x1-BN-ReLU-conv3x3-BN-ReLU-conv1x1 with an
    identity or projection shortcut, so every BN reads a tensor it shares
    with the shortcut: the case channel selection exists for.
    """
    if depth < 11 or (depth - 2) % 9:
        raise ArgumentError("preact_resnet depth must be 9n+2 with n >= 1 (e.g. 20, 164), got "
                            f"{depth!r}")
    n = (depth - 2) // 9
    planes = [max(1, int(round(p * width))) for p in (16, 32, 64)]
    inputs = keras.Input(tuple(input_shape), name="image")
    x = layers.Conv2D(planes[0], 3, padding="same", use_bias=False, name="conv1")(inputs)
    in_ch = planes[0]
    for stage, p in enumerate(planes):
        for b in range(n):
            stride = 2 if (stage > 0 and b == 0) else 1
            pre = f"s{stage + 1}b{b + 1}"
            out_ch = p * 4
            y = _bn(f"{pre}_bn1", gamma_regularizer)(x)
            y = layers.ReLU(name=f"{pre}_relu1")(y)
            y = layers.Conv2D(p, 1, use_bias=False, name=f"{pre}_conv1")(y)
            y = _bn(f"{pre}_bn2", gamma_regularizer)(y)
            y = layers.ReLU(name=f"{pre}_relu2")(y)
            y = layers.Conv2D(p, 3, strides=stride, padding="same", use_bias=False,
                              name=f"{pre}_conv2")(y)
            y = _bn(f"{pre}_bn3", gamma_regularizer)(y)
            y = layers.ReLU(name=f"{pre}_relu3")(y)
            y = layers.Conv2D(out_ch, 1, use_bias=False, name=f"{pre}_conv3")(y)
            if stride != 1 or in_ch != out_ch:
                shortcut = layers.Conv2D(out_ch, 1, strides=stride, use_bias=False,
                                         name=f"{pre}_downsample")(x)
            else:
                shortcut = x
            x = layers.Add(name=f"{pre}_add")([y, shortcut])
            in_ch = out_ch
    x = _bn("bn_final", gamma_regularizer)(x)
    x = layers.ReLU(name="relu_final")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(num_classes, name="classifier")(x)
    return keras.Model(inputs, outputs, name=name or f"preact_resnet{depth}")


def densenet(
    depth: int = 40,
    growth_rate: int = 12,
    num_classes: int = 10,
    input_shape: Sequence[int] = (32, 32, 3),
    gamma_regularizer=None,
    name: str | None = None,
) -> keras.Model:
    """DenseNet-40 (k = 12) as in the paper: 3 dense blocks of BN-ReLU-conv3x3
    layers whose outputs are concatenated, transitions BN-ReLU-conv1x1-avgpool
    (no compression), then BN-ReLU-global pool-Dense.
    """
    if depth < 7 or (depth - 4) % 3:
        raise ArgumentError(f"densenet depth must be 3n+4 (e.g. 40), got {depth!r}")
    n = (depth - 4) // 3
    inputs = keras.Input(tuple(input_shape), name="image")
    x = layers.Conv2D(2 * growth_rate, 3, padding="same", use_bias=False, name="conv1")(inputs)
    channels = 2 * growth_rate
    for block in range(3):
        for i in range(n):
            pre = f"b{block + 1}l{i + 1}"
            y = _bn(f"{pre}_bn", gamma_regularizer)(x)
            y = layers.ReLU(name=f"{pre}_relu")(y)
            y = layers.Conv2D(growth_rate, 3, padding="same", use_bias=False, name=f"{pre}_conv")(y)
            x = layers.Concatenate(name=f"{pre}_concat")([x, y])
            channels += growth_rate
        if block < 2:
            pre = f"t{block + 1}"
            x = _bn(f"{pre}_bn", gamma_regularizer)(x)
            x = layers.ReLU(name=f"{pre}_relu")(x)
            x = layers.Conv2D(channels, 1, use_bias=False, name=f"{pre}_conv")(x)
            x = layers.AveragePooling2D(2, name=f"{pre}_pool")(x)
    x = _bn("bn_final", gamma_regularizer)(x)
    x = layers.ReLU(name="relu_final")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(num_classes, name="classifier")(x)
    return keras.Model(inputs, outputs, name=name or f"densenet{depth}")
