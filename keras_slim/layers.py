"""Layers that keras_slim puts into pruned models."""
from __future__ import annotations

from typing import Sequence

import keras
from keras import ops


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
            raise ValueError("ChannelSelection needs at least one index")
        if min(self.indices) < 0:
            raise ValueError(f"ChannelSelection indices must be >= 0, got {min(self.indices)}")

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is not None and max(self.indices) >= channels:
            raise ValueError(
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
