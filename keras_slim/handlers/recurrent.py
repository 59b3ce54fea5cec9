"""Recurrent layers reading pruned channels: SimpleRNN, GRU, LSTM and Bidirectional of them,
and the Masking layer that often feeds them."""
from __future__ import annotations

import numpy as np

from keras_slim import _keras
from keras_slim.handlers.context import ChannelInfo
from keras_slim.handlers.base import Handler, constant_delta, slice_weights, unsliceable_state

CELLS = ("SimpleRNN", "GRU", "LSTM")


class RecurrentHandler(Handler):
    """Reads the features of a (batch, time, features) sequence through its input kernel.

    The kernel's rows are the input features, so a feature that is zero at
    every step multiplies nothing: its rows go and the layer computes the same
    thing (a CNN feeding an RNN, as in CRNN text and audio models). A constant
    feature adds c x its rows to the input pre-activation at every step, which
    the input bias absorbs (GRU's `reset_after` bias is (2, 3 units): its input
    row). Constant features stay where there is no single input bias to take
    them: a bias-free RNN, Bidirectional (two biases), `return_state` (several
    outputs). The units are kept whole: the recurrence mixes them with the state.
    """

    shares_channels = True
    absorbs_constants = True  # where `absorbs` says so

    def absorbs(self, layer) -> bool:
        return (bool(getattr(layer, "use_bias", False)) and not hasattr(layer, "forward_layer")
                and not getattr(layer, "return_state", False))

    def fold_delta(self, layer, const, in_keep, out_keep):
        kernel, bias = _keras.weight(layer, "kernel"), _keras.weight(layer, "bias")
        delta = constant_delta(const, in_keep, np.arange(kernel.shape[1]), kernel)
        if delta is None or bias is None or bias.ndim == 1:
            return delta
        return np.stack([delta] + [np.zeros_like(delta)] * (bias.shape[0] - 1))  # input row

    def flow(self, ctx, ins):
        x = ins[0] if ins else None
        layer = ctx.layer
        reason = ("no (batch, time, features) input" if x is None or len(ctx.in_shapes[0]) != 3
                  else unsliceable_state(layer) or _unsupported(layer))
        if reason:
            return ctx.barrier(ins, reason)
        ctx.use(x)  # zero features go, constant ones fold into the input bias (`absorbs`)
        for t in ins[1:]:  # initial states: the units' own width
            ctx.freeze(t)
        return [ctx.fresh(i, frozen=True) for i in range(len(ctx.call.outputs))]

    def weight_rules(self, layer, in_keep, out_keep):
        return {"kernel": [(0, in_keep[0])]}  # forward and backward kernels alike

    def rebuild(self, layer, in_keep, out_keep):
        config = layer.get_config()
        for key in ("layer", "backward_layer"):  # Bidirectional's RNNs: built anew at the
            sub = config.get(key)                 # pruned width, not at the recorded one
            if isinstance(sub, dict):
                config[key] = {k: v for k, v in sub.items() if k != "build_config"}
        return config, slice_weights(layer, self.weight_rules(layer, in_keep, out_keep))

    def macs(self, layer, in_shapes, out_shapes):
        steps = in_shapes[0][1] or 1
        per_step = 0
        for w in layer.weights:
            name = _keras.weight_name(w)
            if name == "kernel":
                per_step += in_shapes[0][-1] * w.shape[-1]
            elif name == "recurrent_kernel":
                per_step += w.shape[0] * w.shape[-1]
        return int(steps) * int(per_step)


def _unsupported(layer) -> str | None:
    inner = getattr(layer, "forward_layer", None)  # Bidirectional
    for rnn in (layer,) if inner is None else (inner, layer.backward_layer):
        if type(rnn).__name__ not in CELLS or not type(rnn).__module__.startswith("keras."):
            where = "" if inner is None else " inside Bidirectional"
            return f"{type(rnn).__name__}{where} (only Keras' own {', '.join(CELLS)})"
    return None


class MaskingHandler(Handler):
    """Masking: a step whose features all equal `mask_value` is masked (and zeroed).

    The test reads every channel. A zero channel equals a `mask_value` of 0 at
    every step, so it never changes the outcome: it may go (and stays zero).
    Any other channel stays; with another `mask_value` every channel stays.
    """

    shares_channels = True

    def flow(self, ctx, ins):
        x = ins[0] if ins else None
        if x is None:
            return ctx.barrier(ins, "no channel axis")
        if float(getattr(ctx.layer, "mask_value", 0.0)) != 0.0:
            return ctx.barrier(ins, f"Masking(mask_value={ctx.layer.mask_value}): every "
                                    "channel takes part in the mask")
        ctx.use(x)
        return [ChannelInfo(x.ids, x.zero, x.zero.copy())]  # masked steps: not constant
