"""Element-wise merges (Add, Multiply, ...) and Concatenate."""
from __future__ import annotations

import keras
import numpy as np

from keras_slim import _keras

from keras_slim.handlers.context import ChannelInfo
from keras_slim.handlers.base import Handler

# How the `zero` bit combines: Add(0, 0) = 0 needs all inputs dead,
# Multiply(0, s) = 0 needs any.
ALL, ANY = "all", "any"


class MergeHandler(Handler):
    """Element-wise merge of tensors: the same channel of every input is one unit.

    Inputs whose channel axis has length 1 broadcast and are not coupled.
    """

    def __init__(self, zero_rule: str = ALL):
        self.zero_rule = zero_rule

    def flow(self, ctx, ins):
        tensors = [x for x in ins if x is not None]
        if not tensors or len(tensors) != len(ins):
            return ctx.barrier(ins, "merge of tensors without a channel axis")
        n = max(len(x) for x in tensors)
        full = [x for x in tensors if len(x) == n]
        broadcast = [x for x in tensors if len(x) != n]
        if any(len(x) != 1 for x in broadcast):
            return ctx.barrier(ins, "merge of tensors with different channel counts")
        for other in full[1:]:
            ctx.union(full[0], other)
        zeros = np.stack([x.zero for x in full] + [np.full(n, x.zero[0]) for x in broadcast])
        consts = np.stack([x.const for x in full] + [np.full(n, x.const[0]) for x in broadcast])
        zero = zeros.all(0) if self.zero_rule == ALL else zeros.any(0)
        return [ChannelInfo(full[0].ids, zero, consts.all(0))]

    def constant(self, layer, consts, in_shapes, out_shapes):
        return merge_constant(type(layer).__name__, consts)


def merge_constant(name: str, consts: list) -> list | None:
    """Element-wise merge `name` (Add, Multiply, ...) of per-channel constants."""
    n = max(len(c) for c in consts)
    stacked = np.stack([np.resize(c, n) for c in consts])
    if name == "Add":
        return [stacked.sum(0)]
    if name == "Subtract":
        return [stacked[0] - stacked[1]]
    if name == "Average":
        return [stacked.mean(0)]
    if name == "Multiply":  # 0 times anything (even unknown) is 0
        return [np.where((stacked == 0).any(0), 0.0, stacked.prod(0))]
    if name == "Maximum":
        return [stacked.max(0)]
    if name == "Minimum":
        return [stacked.min(0)]
    if name in ("Divide", "TrueDivide"):
        return [stacked[0] / stacked[1]]
    return None


class ConcatenateHandler(Handler):
    """Concatenate on the channel axis joins channel ids end to end.

    On any other axis the inputs share channels position by position.
    """

    def flow(self, ctx, ins):
        if any(x is None for x in ins) or not ins:
            return ctx.barrier(ins, "concatenation of tensors without a channel axis")
        rank = len(ctx.out_shapes[0])
        if ctx.layer.axis % rank == rank - 1:
            return [ChannelInfo(np.concatenate([x.ids for x in ins]),
                                np.concatenate([x.zero for x in ins]),
                                np.concatenate([x.const for x in ins]))]
        return MergeHandler(ALL).flow(ctx, ins)

    def constant(self, layer, consts, in_shapes, out_shapes):
        rank = len(out_shapes[0])
        if layer.axis % rank == rank - 1:
            return [np.concatenate(consts)]
        return None


class ScalarOpHandler(Handler):
    """A `keras.ops` binary op in a graph (`x + 3.0`, `x * s`, `ops.maximum(a, b)`).

    With two tensors it is a merge; with one tensor and a scalar it is
    element-wise, and a fresh copy of the op evaluated on zeros tells whether
    a dead channel stays zero. A non-scalar constant is a barrier.
    """

    def __init__(self, zero_rule: str = ALL):
        self.merge = MergeHandler(zero_rule)

    def flow(self, ctx, ins):
        if len(ins) == 2:
            return self.merge.flow(ctx, ins)
        args = ctx.call.call.args
        tensor_pos = [i for i, a in enumerate(args) if _keras.is_tensor(a)]
        scalars_ok = all(np.ndim(a) == 0 for i, a in enumerate(args) if i not in tensor_pos)
        if len(ins) != 1 or ins[0] is None or len(tensor_pos) != 1 or not scalars_ok:
            return ctx.barrier(ins, "op with a non-scalar constant")
        x = ins[0]
        probe = [np.zeros((1, 1), "float32") if i in tensor_pos else a for i, a in enumerate(args)]
        try:
            value = keras.ops.convert_to_numpy(_keras.new_layer(ctx.layer)(*probe))
            keeps = bool(np.all(np.asarray(value) == 0))
        except Exception:
            keeps = False
        return [ChannelInfo(x.ids, x.zero & keeps, x.const)]

    def constant_of_call(self, call, consts, in_shapes, out_shapes):
        if len(consts) == 2:
            return merge_constant(type(call.layer).__name__, consts)
        # one tensor and scalars: run a fresh copy of the op on the constants
        const = consts[0]
        values = np.where(np.isfinite(const), const, 0.0).astype("float32")[None, :]
        probe = [values if _keras.is_tensor(a) else a for a in call.call.args]
        try:
            out = np.asarray(keras.ops.convert_to_numpy(_keras.new_layer(call.layer)(*probe)),
                             np.float64).reshape(-1)
        except Exception:  # an op that needs more than a (1, C) array: no constant
            return None
        if len(out) != len(const):
            return None
        out[~np.isfinite(const)] = np.nan
        return [out]
