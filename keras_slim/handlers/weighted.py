"""WeightedOp: a traced layer's own weight in a binary keras.ops call (x * scale, x + bias)."""
from __future__ import annotations

import keras
import numpy as np

from keras_slim import _keras
from keras_slim.handlers.context import ChannelInfo
from keras_slim.handlers.base import Handler, slice_weights


def _per_channel(w: np.ndarray, channels: int) -> bool:
    return w.ndim >= 1 and w.shape[-1] == channels and all(d == 1 for d in w.shape[:-1])


def _scalar(w: np.ndarray) -> bool:
    return w.size == 1


def _apply(layer, w: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The op on per-channel values (1-D), with the weight broadcast per channel."""
    fn = getattr(keras.ops, layer.op)
    flat = w.reshape(-1) if not _scalar(w) else w.reshape(())
    x = values.astype("float32")
    out = fn(flat, x) if layer.weight_first else fn(x, flat)
    return np.asarray(keras.ops.convert_to_numpy(out), np.float64).reshape(-1)


class WeightedOpHandler(Handler):
    """Element-wise with a scalar or per-channel weight; any other weight shape is a barrier."""

    shares_channels = True

    def flow(self, ctx, ins):
        x = ins[0] if ins else None
        w = _keras.weight(ctx.layer, "w")
        if x is None or w is None or not (_scalar(w) or _per_channel(w, len(x))):
            shape = None if w is None else tuple(w.shape)
            return ctx.barrier(ins, f"weight of shape {shape} does not follow the channels")
        keeps_zero = _apply(ctx.layer, w, np.zeros(len(x))) == 0
        return [ChannelInfo(x.ids, x.zero & keeps_zero, x.const)]

    def constant(self, layer, consts, in_shapes, out_shapes):
        c = consts[0]
        w = _keras.weight(layer, "w")
        if w is None or not (_scalar(w) or _per_channel(w, len(c))):
            return None  # a barrier (see flow): a position-dependent weight has no constant
        out = _apply(layer, _keras.weight(layer, "w"), np.where(np.isfinite(c), c, 0.0))
        out[~np.isfinite(c)] = np.nan
        return [out]

    def rebuild(self, layer, in_keep, out_keep):
        w = _keras.weight(layer, "w")
        config = layer.get_config()
        if _scalar(w):
            return config, [w]
        config["weight_shape"] = list(w.shape[:-1]) + [len(out_keep[0])]
        return config, slice_weights(layer, {"w": [(-1, out_keep[0])]})
