"""Layers that move values around without mixing channels."""
from __future__ import annotations

import weakref

import numpy as np

from keras_slim.handlers.context import ChannelInfo
from keras_slim.handlers.base import Handler, channels_last


class PassThroughHandler(Handler):
    """Pooling, padding, cropping, upsampling, dropout: channels pass unchanged.

    Each maps a zero channel to zero (max-pool, avg-pool, zero-padding, ...).
    """

    def flow(self, ctx, ins):
        x = ins[0] if ins else None
        if x is None or not channels_last(ctx.layer):
            return ctx.barrier(ins, "channels_first or no channel axis")
        return [x] + [None] * (len(ctx.call.outputs) - 1)

    def constant(self, layer, consts, in_shapes, out_shapes):
        # Pooling (also 'same': max pads with -inf, average leaves padding out),
        # upsampling, cropping and dropout keep a constant channel constant.
        return [consts[0]]


class ZeroPaddingHandler(PassThroughHandler):
    """ZeroPadding: a constant channel becomes constant inside, 0 on the border."""

    def border_effect(self, layer) -> bool:
        return True


class ResamplingHandler(PassThroughHandler):
    """Resizing, CenterCrop: each channel resampled on its own.

    Every interpolation Keras offers weighs its taps to a sum of 1, so a
    constant channel stays constant (within float rounding) and a zero one
    zero. `Resizing(pad_to_aspect_ratio=True)` pads with its `fill_value`: a
    constant c holds only inside (a border fold, as after ZeroPadding), and
    with a fill other than 0 a zero channel is neither zero nor constant (a
    constant 0 inside would pass for a zero channel, removed without a fold).
    """

    def flow(self, ctx, ins):
        out = super().flow(ctx, ins)
        if out[0] is not None and self._fill(ctx.layer):
            out[0] = out[0].not_zero()
        return out

    def constant(self, layer, consts, in_shapes, out_shapes):
        c = np.asarray(consts[0], np.float64)
        return [np.where(c == 0, np.nan, c) if self._fill(layer) else c]

    def border_effect(self, layer) -> bool:
        return self._pads(layer)

    @staticmethod
    def _pads(layer) -> bool:
        return bool(getattr(layer, "pad_to_aspect_ratio", False))

    def _fill(self, layer) -> bool:
        """Pads with a value other than 0."""
        return self._pads(layer) and getattr(layer, "fill_value", 0.0) != 0


class FlattenHandler(Handler):
    """Flatten of (batch, d1..dk, C): position p*C + c carries channel c."""

    def flow(self, ctx, ins):
        x = ins[0] if ins else None
        if x is None or not channels_last(ctx.layer):
            return ctx.barrier(ins, "channels_first or no channel axis")
        in_shape = ctx.in_shapes[0]
        if any(d is None for d in in_shape[1:]):
            return ctx.barrier(ins, "Flatten of a tensor with unknown dimensions")
        repeats = int(np.prod(in_shape[1:-1], dtype=np.int64)) if len(in_shape) > 2 else 1
        return [_tiled(x, repeats)]

    def constant(self, layer, consts, in_shapes, out_shapes):
        return [np.resize(consts[0], out_shapes[0][-1])]


def _tiled(x: ChannelInfo, repeats: int) -> ChannelInfo:
    """`x` repeated: position p * C + c carries channel c (a channels-last merge)."""
    return ChannelInfo(np.tile(x.ids, repeats), np.tile(x.zero, repeats), np.tile(x.const, repeats))


def _merged_from(in_shape, out_shape) -> int | None:
    """k > 1 if the reshape keeps axes 1..k-1 and merges axes k..-1 into the last one."""
    if out_shape[-1] is None:
        return None
    k = len(out_shape) - 1
    if k < 2 or k >= len(in_shape) - 1 or tuple(out_shape[1:k]) != tuple(in_shape[1:k]):
        return None
    return k if out_shape[-1] == int(np.prod(in_shape[k:], dtype=np.int64)) else None


class ReshapeHandler(Handler):
    """Reshape keeps channels where the last axis survives, is flattened, or is merged
    with the axes before it ((B, H, W, C) -> (B, H, W*C), as before an RNN)."""

    def flow(self, ctx, ins):
        x = ins[0] if ins else None
        in_shape, out_shape = ctx.in_shapes[0], ctx.out_shapes[0]
        if x is None or len(out_shape) < 2 or any(d is None for d in in_shape[1:]):
            return ctx.barrier(ins, "reshape with unknown dimensions")
        if out_shape[-1] == in_shape[-1]:
            return [x]
        if len(out_shape) == 2 and out_shape[-1] == int(np.prod(in_shape[1:], dtype=np.int64)):
            return FlattenHandler().flow(ctx, ins)
        k = _merged_from(in_shape, out_shape)
        if k is not None:  # (B, H, W, C) -> (B, H, W*C): channel c at w*C + c, as Flatten
            return [_tiled(x, int(np.prod(in_shape[k:-1], dtype=np.int64)))]
        return ctx.barrier(ins, f"reshape {tuple(in_shape)} -> {tuple(out_shape)} moves the channel axis")

    def constant(self, layer, consts, in_shapes, out_shapes):
        return [np.resize(consts[0], out_shapes[0][-1])]

    def rebuild(self, layer, in_keep, out_keep):
        config = layer.get_config()
        target = list(config["target_shape"])
        if out_keep[0] is not None:
            # Either the channel axis survived (same last dim) or the tensor was
            # flattened to one axis; both just take the new length.
            target[-1] = len(out_keep[0])
        config["target_shape"] = tuple(target)
        return config, []


class PermuteHandler(Handler):
    """Permute of the other axes (the channel axis stays last): channels pass."""

    def flow(self, ctx, ins):
        dims = tuple(ctx.layer.dims)
        if ins and ins[0] is not None and dims and dims[-1] == len(dims):
            return [ins[0]]
        return ctx.barrier(ins, "permute moves the channel axis")

    def constant(self, layer, consts, in_shapes, out_shapes):
        return [consts[0]]  # the channel axis stays last: each channel keeps its value


class ReduceHandler(Handler):
    """`keras.ops` mean/max/min/sum over axes other than the channel axis: channels pass.

    (squeeze-excitation written as `ops.mean(x, axis=(1, 2), keepdims=True)`).
    Reducing the channel axis itself is a barrier.
    """

    def flow(self, ctx, ins):
        x = ins[0] if ins else None
        axes = _reduced_axes(ctx.layer, ctx.in_shapes)
        if x is None or axes is None or len(ctx.in_shapes[0]) - 1 in axes:
            return ctx.barrier(ins, "reduction over the channel axis")
        if 0 in axes:  # the output's axes are no longer the input's (no batch axis)
            return ctx.barrier(ins, "reduction over the batch axis")
        return [x]  # zeros stay zero; constants stay constant (Sum: scaled, see constant)

    def constant(self, layer, consts, in_shapes, out_shapes):
        if type(layer).__name__ != "Sum":
            return [consts[0]]
        dims = [in_shapes[0][a] for a in _reduced_axes(layer, in_shapes)]
        if any(d is None for d in dims):
            return None  # c times an unknown count
        return [consts[0] * float(np.prod(dims))]


class AnyHandler(ReduceHandler):
    """`ops.any`: over other axes channel-wise; over the channel axis (Masking's mask,
    `any(x != 0, axis=-1)`) a False channel changes nothing, so zero channels may go."""

    def flow(self, ctx, ins):
        x = ins[0] if ins else None
        axes = _reduced_axes(ctx.layer, ctx.in_shapes)
        if x is None or axes is None or 0 in axes or len(ctx.in_shapes[0]) - 1 not in axes:
            return super().flow(ctx, ins)
        ctx.use(x)  # a False (zero) channel never makes the result True
        return [ctx.fresh(0, frozen=True)]

    def constant(self, layer, consts, in_shapes, out_shapes):
        return None  # booleans: no constant to fold


def _reduced_axes(op, in_shapes):
    axis = getattr(op, "axis", None)
    if axis is None or not in_shapes or in_shapes[0] is None:
        return None
    rank = len(in_shapes[0])
    axes = axis if isinstance(axis, (list, tuple)) else (axis,)
    return {int(a) % rank for a in axes}


class PadHandler(ZeroPaddingHandler):
    """`keras.ops.pad` of the spatial axes: zero ("constant" 0) padding, or reflect/symmetric.

    Padding with -inf is the 'same' max-pooling of keras-hub's ResNet/CSPNet stems
    (`ops.pad(x, ..., constant_values=-inf)` then `MaxPooling2D`): when every
    reader is a 'valid' max pool whose windows each hold a real value (each pad
    narrower than the pool), max(c, -inf) = c, so the pool's output is 0 where the
    channel is 0 and c where it is the constant c, at the borders too. The padded
    tensor itself (-inf at its borders) is read by nothing else. Padding the
    channel axis, or with any other value, is a barrier.
    """

    def __init__(self):
        self._max_pooled = weakref.WeakSet()  # -inf pads that only max pools read

    def flow(self, ctx, ins):
        x = ins[0] if ins else None
        widths = np.asarray(ctx.layer.pad_width, dtype=object)
        value = _pad_value(ctx.call.call)
        last = tuple(np.ravel(widths[-1])) if widths.ndim == 2 else None
        if x is None or last != (0, 0) or ctx.layer.mode != "constant" and value is not None:
            return ctx.barrier(ins, "pad of the channel axis")
        if value in (None, 0, 0.0):
            return [x]
        if _is_neg_inf(value) and all(_max_pool_covers(r, widths) for r in ctx.output_readers()):
            self._max_pooled.add(ctx.layer)
            return [x]
        self._max_pooled.discard(ctx.layer)
        return ctx.barrier(ins, f"pad with {value!r} (only 0, or -inf read by max pooling, "
                                "keeps removed channels exact)")

    def border_effect(self, layer) -> bool:
        if layer in self._max_pooled:
            return False  # the max pool reads real values only
        return layer.mode == "constant"  # reflect/symmetric keep a constant constant


def _is_neg_inf(value) -> bool:
    try:
        return bool(np.ndim(value) == 0 and np.isneginf(float(value)))
    except (TypeError, ValueError):
        return False


def _max_pool_covers(reader, widths) -> bool:
    """`reader` is a 'valid' channels-last max pool whose every window holds a real value."""
    if reader is None or "max" not in type(reader).__name__.lower() \
            or not hasattr(reader, "pool_size") or getattr(reader, "padding", None) != "valid" \
            or not channels_last(reader):
        return False
    pool = reader.pool_size
    pool = tuple(pool) if isinstance(pool, (tuple, list)) else (pool,)
    spatial = [tuple(w) for w in widths[1:-1]]
    if len(pool) == 1:
        pool = pool * len(spatial)
    # a window (length p) lies wholly in the padding only if a pad is p wide or more
    return len(pool) == len(spatial) and all(b < p and a < p for (b, a), p in zip(spatial, pool))


def _pad_value(call):
    if len(call.args) > 1:
        return call.args[1]
    return call.kwargs.get("constant_values")
