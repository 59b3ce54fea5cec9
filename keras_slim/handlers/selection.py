"""ChannelSelection (in already-pruned models): a gather that opens its own channels."""
from __future__ import annotations

import numpy as np

from keras_slim.handlers.context import ChannelInfo
from keras_slim.handlers.base import Handler


class ChannelSelectionHandler(Handler):
    """Output p is input channel indices[p]; keeping it requires that input.

    Treated like the implicit selection in front of a shared-input BN, so a
    second pruning pass keeps pruning the BN behind it on its own.
    """

    def flow(self, ctx, ins):
        x = ins[0] if ins else None
        if x is None:
            return ctx.barrier(ins, "no channel axis")
        idx = np.asarray(ctx.layer.indices)
        out = ChannelInfo(ctx.new(len(idx)), x.zero[idx].copy(), x.const[idx].copy())
        ctx.require(out.ids, x.ids[idx])
        ctx.produce(out)
        return [out]

    def constant(self, layer, consts, in_shapes, out_shapes):
        return [consts[0][np.asarray(layer.indices)]]

    def rebuild(self, layer, in_keep, out_keep):
        source = np.asarray(layer.indices)[np.asarray(out_keep[0], dtype=np.int64)]
        new_positions = np.searchsorted(np.asarray(in_keep[0]), source)
        config = layer.get_config()
        config["indices"] = [int(i) for i in new_positions]
        return config, []
