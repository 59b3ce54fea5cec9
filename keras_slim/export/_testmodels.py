"""Tiny models that cover the export edge cases (used by the tests; handy smoke checks).

Each has BatchNormalization layers whose statistics can be randomised with
`randomize_bn`, so that folding and conversion errors are not hidden by the
identity statistics of a fresh BN.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops


@keras.saving.register_keras_serializable(package="keras_slim_tests")
class TakeChannels(layers.Layer):
    """Keeps the given channels of the last axis (what channel selection does)."""

    def __init__(self, indices, **kwargs):
        super().__init__(**kwargs)
        self.indices = [int(i) for i in indices]

    def call(self, x):
        return ops.take(x, np.asarray(self.indices, dtype="int32"), axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (len(self.indices),)

    def get_config(self):
        return {**super().get_config(), "indices": self.indices}


def _conv_bn(x, filters, kernel=3, strides=1, act=True, name=None):
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                      name=name)(x)
    x = layers.BatchNormalization()(x)
    return layers.ReLU()(x) if act else x


def plain_cnn(input_shape=(16, 16, 3), classes=4) -> keras.Sequential:
    """Sequential conv-BN-ReLU stack with a gather on the channel axis."""
    return keras.Sequential([
        keras.Input(input_shape, name="image"),
        layers.Conv2D(16, 3, padding="same", use_bias=False),
        layers.BatchNormalization(),
        layers.ReLU(),
        layers.MaxPooling2D(),
        layers.Conv2D(32, 3, padding="same"),
        layers.BatchNormalization(),
        layers.ReLU(),
        TakeChannels(list(range(0, 32, 2))),
        layers.Conv2D(40, 3, padding="same"),
        layers.BatchNormalization(),
        layers.ReLU(),
        layers.GlobalAveragePooling2D(),
        layers.Dense(classes),
    ], name="plain_cnn")


def resnet_add(input_shape=(16, 16, 3), classes=4) -> keras.Model:
    """Two residual blocks (identity and projection shortcut) joined with Add."""
    inp = keras.Input(input_shape, name="image")
    x = _conv_bn(inp, 8)
    y = _conv_bn(x, 8)
    y = _conv_bn(y, 8, act=False)
    x = layers.ReLU()(layers.Add()([x, y]))
    y = _conv_bn(x, 16, strides=2)
    y = _conv_bn(y, 16, act=False)
    shortcut = _conv_bn(x, 16, kernel=1, strides=2, act=False)
    x = layers.ReLU()(layers.Add()([shortcut, y]))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, layers.Dense(classes)(x), name="resnet_add")


def mbv2_se(input_shape=(16, 16, 3), classes=4) -> keras.Model:
    """MobileNetV2 inverted residual (expand, depthwise, project) with squeeze-excitation."""
    inp = keras.Input(input_shape, name="image")
    x = _conv_bn(inp, 8)
    y = _conv_bn(x, 24, kernel=1)  # expand
    y = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(y)
    y = layers.BatchNormalization()(y)
    y = layers.ReLU(6.0)(y)
    s = layers.GlobalAveragePooling2D()(y)  # squeeze-excitation
    s = layers.Dense(6, activation="relu")(s)
    s = layers.Dense(24, activation="sigmoid")(s)
    y = layers.Multiply()([y, layers.Reshape((1, 1, 24))(s)])
    y = _conv_bn(y, 8, kernel=1, act=False)  # linear projection
    x = layers.Add()([x, y])
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, layers.Dense(classes)(x), name="mbv2_se")


def two_io(input_shape=(16, 16, 3), meta_dim=5, classes=3) -> keras.Model:
    """Image + vector inputs (dict), class logits + regression outputs (dict)."""
    image = keras.Input(input_shape, name="image")
    meta = keras.Input((meta_dim,), name="meta")
    x = _conv_bn(image, 8)
    x = layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2)(x)
    x = layers.BatchNormalization()(x)
    x = layers.GlobalAveragePooling2D()(layers.ReLU()(x))
    m = layers.BatchNormalization()(layers.Dense(8)(meta))
    x = layers.Concatenate()([x, layers.ReLU()(m)])
    return keras.Model({"image": image, "meta": meta},
                       {"logits": layers.Dense(classes, name="logits")(x),
                        "score": layers.Dense(1, name="score")(x)}, name="two_io")


def randomize_bn(model: keras.Model, seed: int = 0) -> keras.Model:
    """Give every BatchNormalization (nested models too) non-trivial statistics."""
    rng = np.random.default_rng(seed)
    for layer in _all_layers(model):
        if isinstance(layer, layers.BatchNormalization):
            c = layer.moving_mean.shape[0]
            values = []
            if layer.scale:
                values.append(rng.uniform(0.5, 1.5, c))
            if layer.center:
                values.append(rng.normal(0.0, 0.2, c))
            values += [rng.normal(0.0, 0.3, c), rng.uniform(0.3, 2.0, c)]
            layer.set_weights([v.astype("float32") for v in values])
    return model


def _all_layers(model: keras.Model) -> list:
    out = []
    for layer in model.layers:
        out += _all_layers(layer) if isinstance(layer, keras.Model) else [layer]
    return out
