"""Layers that keras_slim puts into pruned models."""
from __future__ import annotations

from typing import Sequence

import keras
from keras import ops
from keras_slim.errors import ArgumentError


@keras.saving.register_keras_serializable(package="keras_slim", name="ChannelSelection")
class ChannelSelection(keras.layers.Layer):
    """Gather channels `indices` from the last axis (the paper's `channel_selection`).

    keras_slim inserts it in front of a BatchNormalization whose input is
    shared with other layers (pre-activation ResNet, DenseNet): the BN and
    what follows keep only the selected channels while the shared tensor
    keeps all of them. It converts to a single TFLite GATHER.
    """

    def __init__(self, indices: Sequence[int], **kwargs):
        super().__init__(**kwargs)
        self.indices = [int(i) for i in indices]
        if not self.indices:
            raise ArgumentError("ChannelSelection needs at least one index")
        if min(self.indices) < 0:
            raise ArgumentError(f"ChannelSelection indices must be >= 0, got {min(self.indices)}")

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is not None and max(self.indices) >= channels:
            raise ArgumentError(
                f"ChannelSelection {self.name!r}: index {max(self.indices)} is out of "
                f"range for an input with {channels} channels"
            )
        self.built = True

    def call(self, inputs):
        return ops.take(inputs, ops.convert_to_tensor(self.indices, dtype="int32"), axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (len(self.indices),)

    def get_config(self) -> dict:
        config = super().get_config()
        config["indices"] = list(self.indices)
        return config


@keras.saving.register_keras_serializable(package="keras_slim", name="WeightedOp")
class WeightedOp(keras.layers.Layer):
    """`keras.ops.<op>(x, w)` (or `(w, x)`) with `w` a weight of this layer.

    Tracing puts it where a custom layer used its own weight (`self.add_weight`)
    in a binary `keras.ops` call (a learnable per-channel scale or bias, a
    layer-scale): the weight stays a (trainable) weight of the pruned model,
    sliced with the channels it belongs to.
    """

    OPS = ("add", "subtract", "multiply", "divide", "true_divide", "maximum", "minimum")

    def __init__(self, op: str, weight_shape: Sequence[int], weight_first: bool = False,
                 weight_trainable: bool = True, **kwargs):
        super().__init__(**kwargs)
        if op not in self.OPS:
            raise ArgumentError(f"WeightedOp: op must be one of {self.OPS}, got {op!r}")
        self.op = op
        self.weight_shape = tuple(int(d) for d in weight_shape)
        self.weight_first = bool(weight_first)
        self.weight_trainable = bool(weight_trainable)

    def build(self, input_shape):
        self.w = self.add_weight(shape=self.weight_shape, initializer="zeros", name="w",
                                 trainable=self.weight_trainable)
        self.built = True

    def call(self, inputs):
        fn = getattr(ops, self.op)
        return fn(self.w, inputs) if self.weight_first else fn(inputs, self.w)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        return dict(super().get_config(), op=self.op, weight_shape=list(self.weight_shape),
                    weight_first=self.weight_first, weight_trainable=self.weight_trainable)
