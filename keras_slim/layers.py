"""Layers that keras_slim puts into pruned models."""
from __future__ import annotations

from typing import Sequence

import keras
from keras import ops
from keras_slim.errors import ArgumentError


# Selection as slices + concatenation (ops the XNNPACK delegate runs) instead of
# one GATHER (which it does not: the graph splits around it), where the runs are
# long enough. Measured with LiteRT 2.3, 1 thread (benchmarks/results/selection_cutoff.md):
# a slice costs ~20 ns per pixel per run whatever its width, a gather ~4.5-7 ns per
# pixel per selected channel plus the partition split; slices were 0.65-0.71x the
# gather's cost at a mean run of 4.8 channels and 1.15-1.43x at 2.4, so the cut-off is 4.
MIN_MEAN_RUN = 4
# The XNNPACK delegate of LiteRT 2.3 takes CONCATENATION with 2-5 inputs (older
# TFLite: 2-4); wider ones are built as a tree of 4-input concatenations.
CONCAT_FAN_IN = 4


def channel_runs(indices: Sequence[int]) -> list[tuple[int, int]]:
    """Maximal [start, stop) runs of consecutive increasing indices, in order.

    `[4, 5, 6, 0, 1, 9]` -> `[(4, 7), (0, 2), (9, 10)]`.
    """
    runs: list[tuple[int, int]] = []
    for i in indices:
        i = int(i)
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


def uses_slices(indices: Sequence[int], min_mean_run: float | None = None) -> bool:
    """Whether `ChannelSelection(indices)` is expressed as slices (True) or a gather.

    `min_mean_run` (default `MIN_MEAN_RUN`): the mean run length slices need.
    """
    runs = channel_runs(indices)
    cut = MIN_MEAN_RUN if min_mean_run is None else min_mean_run
    return len(runs) == 1 or len(indices) >= cut * len(runs)


def select_channels(x, indices: Sequence[int], take, slice_last, concat,
                    min_mean_run: float | None = None):
    """`x[..., indices]` as slices + concatenation where `uses_slices`, else one gather.

    The three callables are the flavour's ops (Keras 3 or TF), so the Keras 3
    layer and its tf_keras twin build the same graph: `take(x, indices)`,
    `slice_last(x, start, stop)`, `concat(list_of_tensors)` on the last axis.
    """
    if not uses_slices(indices, min_mean_run):
        return take(x, list(indices))
    parts = [slice_last(x, a, b) for a, b in channel_runs(indices)]
    while len(parts) > 1:  # a tree, so every CONCATENATION stays delegable
        parts = [group[0] if len(group) == 1 else concat(group)
                 for group in (parts[i:i + CONCAT_FAN_IN]
                               for i in range(0, len(parts), CONCAT_FAN_IN))]
    return parts[0]


@keras.saving.register_keras_serializable(package="keras_slim", name="ChannelSelection")
class ChannelSelection(keras.layers.Layer):
    """Select channels `indices` of the last axis (the paper's `channel_selection`).

    keras_slim inserts it in front of a BatchNormalization whose input is
    shared with other layers (pre-activation ResNet, DenseNet): the BN and
    what follows keep only the selected channels while the shared tensor
    keeps all of them. Output channel p is input channel `indices[p]`.

    The selection is computed as slices of the runs of consecutive indices
    joined by one concatenation (TFLite STRIDED_SLICE + CONCATENATION, which
    XNNPACK runs) when the runs average at least `MIN_MEAN_RUN` channels, and
    as one gather (TFLite GATHER, run outside XNNPACK) otherwise. Both give
    the same values; the config is only `indices` either way, so files saved
    before this choice existed load unchanged. `export_tflite` reorders the
    shared channels first so that the runs are long (`order_channels`).
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

    @property
    def runs(self) -> list[tuple[int, int]]:
        """[start, stop) runs of consecutive indices (one slice each when sliced)."""
        return channel_runs(self.indices)

    @property
    def as_slices(self) -> bool:
        """True if `call` builds slices + concatenation, False for one gather."""
        return uses_slices(self.indices)

    def call(self, inputs):
        return select_channels(
            inputs, self.indices,
            take=lambda x, idx: ops.take(x, ops.convert_to_tensor(idx, dtype="int32"), axis=-1),
            slice_last=lambda x, a, b: x[..., a:b],
            concat=lambda parts: ops.concatenate(parts, axis=-1))

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
