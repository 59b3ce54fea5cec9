"""Channel splits: `x[..., a:b]` (GetItem) and `keras.ops.split` on the channel axis.

GetItem that indexes only the axes before the channel axis (`x[:, 2:14]`)
passes every channel through; any other key is a barrier.

The inverse of Concatenate: each output carries a contiguous run of the
input's channel ids. After pruning the kept channels of a run are still
contiguous, so the rebuilt op slices [kept before a, kept before b).
"""
from __future__ import annotations

import numpy as np

from keras_slim.errors import PruneError
from keras_slim.handlers.base import Handler


def _channel_slice(key, rank: int, channels: int):
    """(start, stop) if `key` slices only the last axis (step 1), else None."""
    key = key if isinstance(key, tuple) else (key,)
    if Ellipsis in key:
        if key.count(Ellipsis) > 1 or key[-1] is Ellipsis:
            return None
        rest = key[key.index(Ellipsis) + 1:]
        if len(rest) != 1:
            return None
        leading = key[:key.index(Ellipsis)]
    else:
        if len(key) != rank:
            return None
        leading, rest = key[:-1], key[-1:]
    if any(not (isinstance(k, slice) and k == slice(None)) for k in leading):
        return None
    last = rest[0]
    if not isinstance(last, slice) or last.step not in (None, 1):
        return None
    start, stop, _ = last.indices(channels)
    return (start, stop) if stop > start else None


def _keeps_channels(key, rank: int) -> bool:
    """True if `key` indexes only axes before the channel axis (x[:, 2:14], x[:, ::2])."""
    key = key if isinstance(key, tuple) else (key,)
    if any(k is None for k in key) or key.count(Ellipsis) > 1:
        return False  # a new axis moves the channel axis' position from the end
    if any(not isinstance(k, (slice, int, type(Ellipsis))) or isinstance(k, bool)
           for k in key):
        return False  # tensors, lists, masks: not a plain view
    if Ellipsis in key:
        return key[-1] is Ellipsis
    return len(key) < rank or (len(key) == rank and key[-1] == slice(None))


def _new_slice(in_keep, start: int, stop: int) -> slice:
    keep = np.asarray(in_keep)
    return slice(int(np.searchsorted(keep, start)), int(np.searchsorted(keep, stop)))


class GetItemHandler(Handler):
    """`x[..., a:b]`: output channels are input channels a..b-1."""

    def _range(self, ctx_or_call, in_shapes):
        args = ctx_or_call.args
        if len(args) != 2 or in_shapes[0] is None or in_shapes[0][-1] is None:
            return None
        return _channel_slice(args[1], len(in_shapes[0]), int(in_shapes[0][-1]))

    def _passes(self, call, in_shapes):
        args = call.args
        return (len(args) == 2 and in_shapes[0] is not None
                and _keeps_channels(args[1], len(in_shapes[0])))

    def flow(self, ctx, ins):
        x = ins[0] if ins else None
        if x is not None and self._passes(ctx.call.call, ctx.in_shapes):
            return [x]  # other axes indexed: every channel passes through as it is
        bounds = self._range(ctx.call.call, ctx.in_shapes)
        if x is None or bounds is None:
            return ctx.barrier(ins, "indexing that is not a slice of the channel axis")
        out = x.take(np.arange(*bounds))
        ctx.produce(out)  # min_channels: a slice never becomes empty
        return [out]

    def constant_of_call(self, call, consts, in_shapes, out_shapes):
        if self._passes(call.call, in_shapes):
            return [consts[0]]
        bounds = self._range(call.call, in_shapes)
        return None if bounds is None else [consts[0][bounds[0]:bounds[1]]]

    def call_args(self, call, args, kwargs, in_keep, out_keep):
        if in_keep[0] is None:
            return args, kwargs
        shape = tuple(call.args[0].shape)
        if self._passes(call, [shape]):
            return args, kwargs  # the key does not index the channel axis
        bounds = self._range(call, [shape])
        if bounds is None:  # any other indexing is a barrier: its input keeps every channel
            channels = int(shape[-1])
            if len(in_keep[0]) != channels:
                raise PruneError(f"indexing {args[1]!r} is not a slice of the channel axis, "
                                 f"but its input lost channels ({len(in_keep[0])} of "
                                 f"{channels} kept): a handler broke the barrier rule")
            return args, kwargs
        key = args[1] if isinstance(args[1], tuple) else (args[1],)
        return (args[0], key[:-1] + (_new_slice(in_keep[0], *bounds),)), kwargs


class SplitHandler(Handler):
    """`ops.split(x, indices_or_sections, axis=-1)`: each output is a run of channels."""

    def _bounds(self, op, in_shapes):
        shape = in_shapes[0]
        if shape is None or shape[-1] is None or op.axis % len(shape) != len(shape) - 1:
            return None
        c = int(shape[-1])
        sections = op.indices_or_sections
        if isinstance(sections, int):
            if c % sections:
                return None
            cuts = list(range(c // sections, c, c // sections))
        else:
            cuts = [int(i) for i in sections]
        edges = [0] + cuts + [c]
        return list(zip(edges[:-1], edges[1:]))

    def flow(self, ctx, ins):
        x = ins[0] if ins else None
        op = ctx.layer
        rank = len(ctx.in_shapes[0]) if ctx.in_shapes and ctx.in_shapes[0] else 0
        if x is not None and rank and op.axis % rank != rank - 1:
            return [x] * len(ctx.call.outputs)  # a split of another axis keeps the channels
        bounds = self._bounds(op, ctx.in_shapes)
        if x is None or bounds is None or any(b <= a for a, b in bounds):
            return ctx.barrier(ins, "split of the channel axis into unequal or empty parts")
        outs = [x.take(np.arange(a, b)) for a, b in bounds]
        for out in outs:
            ctx.produce(out)  # min_channels: no part becomes empty
        return outs

    def constant(self, layer, consts, in_shapes, out_shapes):
        rank = len(in_shapes[0])
        if layer.axis % rank != rank - 1:
            return [consts[0]] * len(out_shapes)
        bounds = self._bounds(layer, in_shapes)
        return None if bounds is None else [consts[0][a:b] for a, b in bounds]

    def op_config(self, op, in_keep, out_keep):
        config = op.get_config()
        if in_keep[0] is not None and all(k is not None for k in out_keep):
            sizes = [len(k) for k in out_keep]
            # a split of the channels: its parts add up to its input; a split of another
            # axis gives every part all the channels, and its sections stay as they are
            # (as does a split into one part, whichever its axis)
            if len(sizes) > 1 and sum(sizes) == len(in_keep[0]):
                config["indices_or_sections"] = [int(i) for i in np.cumsum(sizes)[:-1]]
        return config
