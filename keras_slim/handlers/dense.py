"""Dense: mixes the last axis, creates `units` new channels."""
from __future__ import annotations

from keras_slim import _keras
from keras_slim.handlers.base import Handler, constant_delta, slice_weights, spatial


class DenseHandler(Handler):
    shares_channels = True

    def flow(self, ctx, ins):
        x = ins[0] if ins else None
        if x is None:
            return ctx.barrier(ins, "no channel axis")
        ctx.use(x)
        out = ctx.fresh(0)
        ctx.produce(out)
        return [out]

    def rebuild(self, layer, in_keep, out_keep):
        config = layer.get_config()
        config["units"] = len(out_keep[0])
        weights = slice_weights(layer, {
            "kernel": [(0, in_keep[0]), (1, out_keep[0])],
            "bias": [(0, out_keep[0])],
        })
        return config, weights

    def fold_delta(self, layer, const, in_keep, out_keep):
        return constant_delta(const, in_keep, out_keep, _keras.weight(layer, "kernel"))

    def macs(self, layer, in_shapes, out_shapes):
        return spatial(out_shapes[0]) * in_shapes[0][-1] * out_shapes[0][-1]
