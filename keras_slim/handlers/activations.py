"""Element-wise layers: activations, noise/dropout, rescaling."""
from __future__ import annotations

import keras
import numpy as np

from keras_slim import _keras
from keras_slim.handlers.context import ChannelInfo
from keras_slim.handlers.base import Handler, slice_weights


# Activations that normalise across the channel axis: a channel cut changes every other one.
_CHANNEL_MIXING = {"softmax", "log_softmax", "sparsemax", "glu"}


def _activation_name(activation) -> str | None:
    if activation is None:
        return None
    if isinstance(activation, str):
        return activation
    return getattr(activation, "__name__", None)


def mixes_channels(activation) -> bool:
    """True for activations over the channel axis (softmax, sparsemax, ...)."""
    return _activation_name(activation) in _CHANNEL_MIXING


def preserves_zero(activation) -> bool:
    """True if the activation function maps 0 to 0 (relu, swish, tanh, ...)."""
    if activation is None:
        return True
    fn = keras.activations.get(activation)
    return _maps_zero_to_zero(fn)


def _maps_zero_to_zero(fn) -> bool:
    try:
        value = keras.ops.convert_to_numpy(fn(keras.ops.zeros((1, 1))))
    except Exception:  # an activation that needs more context: assume it does not
        return False
    return bool(np.all(np.asarray(value) == 0))


def apply_activation(activation, values: np.ndarray) -> np.ndarray:
    """activation(values) for a 1-D array of per-channel constants; NaN stays NaN."""
    return evaluate(keras.activations.get(activation), values)


def evaluate(fn, values: np.ndarray) -> np.ndarray:
    nan = ~np.isfinite(values)
    x = np.where(nan, 0.0, values).astype("float32")[None, :]
    if _is_plain_relu(fn):  # the common case, without a backend op call (planning speed)
        out = np.maximum(x, 0.0).astype(np.float64).reshape(-1)
    else:
        out = np.asarray(keras.ops.convert_to_numpy(fn(x)), dtype=np.float64).reshape(-1)
    out[nan] = np.nan
    return out


def _is_plain_relu(fn) -> bool:
    """max(x, 0) exactly: keras.activations.relu, Activation("relu"), ReLU() with defaults."""
    if fn is keras.activations.relu:
        return True
    if type(fn) is keras.layers.Activation:
        return fn.activation is keras.activations.relu
    if type(fn) is keras.layers.ReLU:
        return (fn.max_value is None and not fn.negative_slope and not fn.threshold)
    return False


def evaluable(layer):
    """Something to evaluate the layer's function on: a fresh copy, or its activation.

    A layer whose config does not round-trip (an Activation holding a Python
    lambda) is evaluated through its stateless `activation` function.
    """
    try:
        return fresh_copy(layer)
    except Exception:
        fn = getattr(layer, "activation", None)
        if callable(fn):
            return fn
        raise


def fresh_copy(layer):
    """A fresh copy of a weightless layer, shared between layers of equal config."""
    config = {k: v for k, v in layer.get_config().items() if k != "name"}
    try:
        key = (type(layer), repr(_freeze(config)))
    except TypeError:  # unhashable config: no sharing
        return _keras.new_layer(layer)
    if key not in _FRESH:
        _FRESH[key] = _keras.new_layer(layer)
    return _FRESH[key]


_FRESH: dict = {}
_ZERO: dict = {}


def layer_preserves_zero(layer) -> bool:
    """Evaluate a fresh copy of an element-wise layer on zeros (never the layer itself)."""
    copy = evaluable(layer)
    if id(copy) not in _ZERO:
        _ZERO[id(copy)] = _maps_zero_to_zero(copy)
    return _ZERO[id(copy)]


def _freeze(v):
    if isinstance(v, dict):
        return tuple(sorted((k, _freeze(x)) for k, x in v.items()))
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    hash(v)
    return v


class ElementwiseHandler(Handler):
    """Channel-wise, weightless layers: channels pass through unchanged.

    The `zero` bit survives iff the layer maps 0 to 0, which is checked by
    running a fresh copy of the layer on zeros.
    """

    def __init__(self, always_zero_preserving: bool = False):
        self.always = always_zero_preserving

    def flow(self, ctx, ins):
        x = ins[0] if ins else None
        if x is None:
            return ctx.barrier(ins, "no channel axis")
        if mixes_channels(getattr(ctx.layer, "activation", None)):
            return ctx.barrier(ins, "softmax over the channel axis")
        try:
            keeps = self.always or layer_preserves_zero(ctx.layer)
        except Exception:  # cannot be evaluated on its own: assume 0 does not stay 0
            keeps = False
        return [x] if keeps else [x.not_zero()]

    def constant(self, layer, consts, in_shapes, out_shapes):
        if self.always:
            return [consts[0]]
        try:
            return [evaluate(evaluable(layer), consts[0])]
        except Exception:  # a layer that needs a real spatial shape
            return None


class DropoutHandler(ElementwiseHandler):
    """Dropout: the identity at inference; a `noise_shape` naming the channel count follows it."""

    def __init__(self):
        super().__init__(always_zero_preserving=True)

    def rebuild(self, layer, in_keep, out_keep):
        config, weights = super().rebuild(layer, in_keep, out_keep)
        shape = config.get("noise_shape")
        if shape and out_keep and out_keep[0] is not None and isinstance(shape[-1], int) \
                and shape[-1] > 1:
            config["noise_shape"] = list(shape[:-1]) + [len(out_keep[0])]
        return config, weights


class SoftmaxHandler(ElementwiseHandler):
    """Softmax over a non-channel axis is element-wise per channel; over channels it mixes."""

    def flow(self, ctx, ins):
        axis = ctx.layer.axis
        rank = len(ctx.in_shapes[0]) if ctx.in_shapes else 0
        axes = axis if isinstance(axis, (list, tuple)) else [axis]
        if any(a % rank == rank - 1 for a in axes):
            return ctx.barrier(ins, "softmax over the channel axis")
        return [ins[0].not_zero()]

    def constant(self, layer, consts, in_shapes, out_shapes):
        """A channel constant over the softmax axes becomes 1 / (their total length)."""
        shape = in_shapes[0]
        axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
        axes = {a % len(shape) for a in axes}
        if 0 in axes or any(shape[a] is None for a in axes):  # the batch, or unknown sizes
            return None
        n = float(np.prod([shape[a] for a in axes]))
        c = np.asarray(consts[0], np.float64)
        return [np.where(np.isfinite(c), 1.0 / n, np.nan)]


class PReLUHandler(ElementwiseHandler):
    """PReLU: per-channel alpha (unless the channel axis is shared)."""

    shares_channels = True

    def __init__(self):
        super().__init__(always_zero_preserving=True)

    def constant(self, layer, consts, in_shapes, out_shapes):
        """c where c >= 0, alpha * c below: per channel only where alpha is one number.

        Alpha has one value per position unless `shared_axes` covers the
        spatial axes; a negative constant channel whose alpha differs between
        positions is no constant after PReLU (NaN: it stays).
        """
        c = np.asarray(consts[0], dtype=np.float64)
        alpha = _keras.weight(layer, "alpha")
        a = np.asarray(keras.ops.convert_to_numpy(alpha), np.float64)
        a = a.reshape(-1, a.shape[-1]) if a.ndim else a.reshape(1, 1)
        low, high = np.broadcast_to(a.min(0), c.shape), np.broadcast_to(a.max(0), c.shape)
        negative = c < 0  # NaN compares False: stays NaN
        out = np.where(negative, c * low, c)
        out[negative & (low != high)] = np.nan
        return [out]

    def rebuild(self, layer, in_keep, out_keep):
        alpha = _keras.weight(layer, "alpha")
        rules = {}
        if alpha is not None and alpha.shape[-1] > 1:
            rules["alpha"] = [(-1, out_keep[0])]
        return layer.get_config(), slice_weights(layer, rules)


class RescalingHandler(ElementwiseHandler):
    """x * scale + offset with scalar scale/offset; per-channel values are a barrier."""

    def flow(self, ctx, ins):
        layer = ctx.layer
        if not (np.ndim(layer.scale) == 0 and np.ndim(layer.offset) == 0):
            return ctx.barrier(ins, "per-channel Rescaling")
        x = ins[0]
        zero = x.zero & (float(layer.offset) == 0.0)
        return [ChannelInfo(x.ids, zero, x.const)]

    def constant(self, layer, consts, in_shapes, out_shapes):
        return [consts[0] * float(layer.scale) + float(layer.offset)]


class NormalizationHandler(Handler):
    """keras.layers.Normalization on the channel axis: per-channel affine."""

    shares_channels = True

    def flow(self, ctx, ins):
        x = ins[0] if ins else None
        layer = ctx.layer
        rank = len(ctx.in_shapes[0]) if ctx.in_shapes else 0
        axis = layer.axis if isinstance(layer.axis, (list, tuple)) else (layer.axis,)
        if x is None or tuple(a % rank for a in axis) != (rank - 1,):
            return ctx.barrier(ins, "Normalization not on the channel axis")
        return [x.not_zero()]

    def constant(self, layer, consts, in_shapes, out_shapes):
        """(c - mean) / max(sqrt(variance), epsilon) per channel (mean + c * that, inverted)."""
        c = np.asarray(consts[0], np.float64)
        stats = [_per_channel(getattr(layer, name, None), len(c)) for name in ("mean", "variance")]
        if any(v is None for v in stats):
            return None  # not built or adapted yet, or statistics of another shape
        mean, variance = stats
        std = np.maximum(np.sqrt(variance), keras.backend.epsilon())
        return [mean + c * std if getattr(layer, "invert", False) else (c - mean) / std]

    def rebuild(self, layer, in_keep, out_keep):
        config = layer.get_config()
        keep = out_keep[0]
        for key in ("mean", "variance"):
            if config.get(key) is not None and np.ndim(config[key]) > 0:
                config[key] = np.take(np.asarray(config[key]), keep, axis=-1).tolist()
        weights = [np.take(w, keep, axis=-1) if np.ndim(w) > 0 and w.shape[-1] > 1 else w
                   for _, w in _keras.get_weights(layer)]
        return config, weights


def _per_channel(value, n: int):
    """A Normalization statistic as n float64 values (broadcast from 1), or None."""
    if value is None:
        return None
    v = np.asarray(keras.ops.convert_to_numpy(value), np.float64).reshape(-1)
    if v.size == 1:
        return np.full(n, v[0])
    return v if v.size == n else None
