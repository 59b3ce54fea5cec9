"""Dense, and the shape every channel-creating layer shares."""
from __future__ import annotations

import numpy as np

from keras_slim import _keras
from keras_slim.handlers.activations import apply_activation, mixes_channels
from keras_slim.handlers.base import (Handler, constant_delta, slice_weights, spatial,
                                      unsliceable_state)


class DenseHandler(Handler):
    """Mixes the last axis of its input and creates `units` new channels.

    Subclasses (convolutions) change the config key of the width, the kernel
    axes and what makes them a barrier.
    """

    shares_channels = True
    absorbs_constants = True
    width_key = "units"
    kernel_name = "kernel"
    in_axis, out_axis = 0, 1

    def barrier_reason(self, layer) -> str | None:
        return None

    def flow(self, ctx, ins):
        x = ins[0] if ins else None
        reason = "no channel axis" if x is None else (self.barrier_reason(ctx.layer)
                                                      or unsliceable_state(ctx.layer))
        if reason:
            return ctx.barrier(ins, reason)
        ctx.use(x)
        if mixes_channels(getattr(ctx.layer, "activation", None)):
            # softmax(activation=) over its own outputs: those stay whole (its inputs
            # may still go: a dead or folded input changes the pre-activation only)
            return [ctx.fresh(0, frozen=True)]
        out = ctx.fresh(0)
        ctx.produce(out)
        if ctx.scores_filters:
            ctx.score_filters(out, self.filters(ctx.layer))
            out = ctx.filter_zeroed(out, self.zeroed_value(ctx.layer, len(out)))
        return [out]

    def filters(self, layer) -> np.ndarray:
        """The kernel as one row per output channel (what a filter criterion scores)."""
        kernel = _keras.weight(layer, self.kernel_name)
        return np.moveaxis(kernel, self.out_axis, 0).reshape(kernel.shape[self.out_axis], -1)

    def zeroed_value(self, layer, n: int) -> np.ndarray:
        """What each output channel carries once its filter is zero: act(bias)."""
        bias = _keras.weight(layer, "bias") if getattr(layer, "use_bias", False) else None
        return apply_activation(getattr(layer, "activation", None),
                                np.zeros(n) if bias is None else np.asarray(bias, np.float64))

    def weight_rules(self, layer, in_keep, out_keep):
        return {"kernel": [(self.in_axis, in_keep[0]), (self.out_axis, out_keep[0])],
                "bias": [(0, out_keep[0])]}

    def rebuild(self, layer, in_keep, out_keep):
        config = layer.get_config()
        config[self.width_key] = len(out_keep[0])
        return config, slice_weights(layer, self.weight_rules(layer, in_keep, out_keep))

    def fold_delta(self, layer, const, in_keep, out_keep):
        return constant_delta(const, in_keep, out_keep, _keras.weight(layer, "kernel"))

    def macs(self, layer, in_shapes, out_shapes):
        return spatial(out_shapes[0]) * in_shapes[0][-1] * out_shapes[0][-1]
