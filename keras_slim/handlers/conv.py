"""Convolutions: regular, transposed, depthwise and separable."""
from __future__ import annotations

import numpy as np

from keras_slim import _keras
from keras_slim.errors import PruneError
from keras_slim.handlers.context import ChannelInfo
from keras_slim.handlers.activations import apply_activation, mixes_channels, preserves_zero
from keras_slim.handlers.base import (Handler, channels_last, constant_delta, padded_kernel,
                                      slice_weights, spatial, unsliceable_state)
from keras_slim.handlers.dense import DenseHandler


class ConvHandler(DenseHandler):
    """Conv1D/2D/3D: mixes its input channels, creates `filters` new ones.

    A grouped conv with one input channel per group (`groups` = input
    channels, as keras-hub writes depthwise convs) is a depthwise conv and is
    handled as one. Other grouped convs and channels_first are barriers
    (their channel layout is not independent per filter / not the last axis).
    """

    width_key = "filters"
    in_axis, out_axis = -2, -1

    def barrier_reason(self, layer):
        if getattr(layer, "groups", 1) != 1:
            return "grouped conv"
        if not channels_last(layer):
            return "channels_first"
        return None

    def flow(self, ctx, ins):
        if _is_depthwise_groups(ctx.layer):
            return _GROUPED_DEPTHWISE.flow(ctx, ins)
        return super().flow(ctx, ins)

    def constant(self, layer, consts, in_shapes, out_shapes):
        if _is_depthwise_groups(layer):
            return _GROUPED_DEPTHWISE.constant(layer, consts, in_shapes, out_shapes)
        return None

    def weight_rules(self, layer, in_keep, out_keep):
        if _one_channel_per_group(layer):
            return {"kernel": [(-1, out_keep[0])], "bias": [(0, out_keep[0])]}
        if getattr(layer, "groups", 1) > 1:  # other groups are a barrier: nothing is cut
            kernel = _keras.weight(layer, "kernel")
            cin = kernel.shape[-2] * layer.groups
            if ((in_keep[0] is not None and len(in_keep[0]) != cin)
                    or (out_keep[0] is not None and len(out_keep[0]) != layer.filters)):
                raise PruneError(f"grouped conv '{layer.name}' (groups={layer.groups}) is a "
                                 "barrier, but channels of it were cut: a handler broke the "
                                 "barrier rule")
            return {}
        return super().weight_rules(layer, in_keep, out_keep)

    def rebuild(self, layer, in_keep, out_keep):
        config, weights = super().rebuild(layer, in_keep, out_keep)
        if _one_channel_per_group(layer):
            config["groups"] = len(in_keep[0])
        return config, weights

    def fold_delta(self, layer, const, in_keep, out_keep):
        if getattr(layer, "groups", 1) > 1:
            return None  # it does not mix channels: its constants pass on (see constant)
        return self._fold_delta(layer, const, in_keep, out_keep)

    def macs(self, layer, in_shapes, out_shapes):
        k = int(np.prod(layer.kernel_size))
        groups = getattr(layer, "groups", 1)
        if groups > 1:  # each filter reads in/groups channels: one where groups = inputs
            per_filter = 1 if _one_channel_per_group(layer) else in_shapes[0][-1] // groups
            return spatial(out_shapes[0]) * k * per_filter * out_shapes[0][-1]
        return spatial(out_shapes[0]) * k * in_shapes[0][-1] * out_shapes[0][-1]

    def border_effect(self, layer) -> bool:
        return padded_kernel(layer)

    def _fold_delta(self, layer, const, in_keep, out_keep):
        # sum over the kernel's spatial taps: exact for 1x1 and 'valid' convs,
        # exact away from the borders for 'same' padding.
        kernel = _keras.weight(layer, "kernel")
        taps = kernel.sum(axis=tuple(range(kernel.ndim - 2)))
        return constant_delta(const, in_keep, out_keep, taps)


class ConvTransposeHandler(ConvHandler):
    """Conv*Transpose: kernel is (..., out, in).

    A constant input does not give a constant output: each output position
    sums a different set of taps (border-dependent at stride 1, periodic at
    stride > 1), which no bias reproduces. So constant channels it reads stay;
    truly zero ones go.
    """

    in_axis, out_axis = -1, -2
    absorbs_constants = False

    def fold_delta(self, layer, const, in_keep, out_keep):
        return None

    def flow(self, ctx, ins):
        return DenseHandler.flow(self, ctx, ins)

    def rebuild(self, layer, in_keep, out_keep):
        return DenseHandler.rebuild(self, layer, in_keep, out_keep)

    def macs(self, layer, in_shapes, out_shapes):
        k = int(np.prod(layer.kernel_size))
        return spatial(in_shapes[0]) * k * in_shapes[0][-1] * out_shapes[0][-1]


class DepthwiseHandler(Handler):
    """DepthwiseConv1D/2D: output channel c*m+k belongs to input channel c.

    Input channel c and its `depth_multiplier` outputs are one unit: the
    output ids repeat the input ids, so they are kept or removed together.
    """

    shares_channels = True

    def flow(self, ctx, ins):
        x = ins[0] if ins else None
        layer = ctx.layer
        if x is None or not channels_last(layer):
            return ctx.barrier(ins, "channels_first or no channel axis")
        reason = unsliceable_state(layer)
        if reason or mixes_channels(layer.activation):
            return ctx.barrier(ins, reason or "softmax activation over its channels")
        m = self.multiplier(layer)
        keeps_zero = not layer.use_bias and preserves_zero(layer.activation)
        zero = np.repeat(x.zero, m) & keeps_zero
        out = ChannelInfo(np.repeat(x.ids, m), zero, np.repeat(x.const, m))
        if ctx.scores_filters:  # each output's taps are a member of its input's class
            kernel = _keras.weight(layer, "depthwise_kernel")
            kernel = _keras.weight(layer, "kernel") if kernel is None else kernel
            ctx.score_filters(out, kernel.reshape(-1, len(out)).T)
        return [out]

    def multiplier(self, layer) -> int:
        """Outputs per input channel (output c*m+k reads input channel c)."""
        return int(layer.depth_multiplier)

    def constant(self, layer, consts, in_shapes, out_shapes):
        kernel = _keras.weight(layer, "kernel")
        if kernel is None:
            kernel = _keras.weight(layer, "depthwise_kernel")
        m = self.multiplier(layer)
        # (kh, kw, C, m) for depthwise, (kh, kw, 1, C*m) for groups = C: the same taps
        taps = kernel.reshape(-1, len(consts[0]), m).sum(axis=0)  # (C, m)
        out = (consts[0][:, None] * taps).ravel()
        bias = _keras.weight(layer, "bias")
        if bias is not None:
            out = out + bias
        return [apply_activation(layer.activation, out)]

    def border_effect(self, layer) -> bool:
        return padded_kernel(layer)

    def weight_rules(self, layer, in_keep, out_keep):
        return {"kernel": [(-2, in_keep[0])], "depthwise_kernel": [(-2, in_keep[0])],
                "bias": [(0, out_keep[0])]}

    def rebuild(self, layer, in_keep, out_keep):
        return layer.get_config(), slice_weights(layer, self.weight_rules(layer, in_keep, out_keep))

    def macs(self, layer, in_shapes, out_shapes):
        k = int(np.prod(layer.kernel_size))
        return spatial(out_shapes[0]) * k * out_shapes[0][-1]


def _one_channel_per_group(layer) -> bool:
    """A built grouped conv whose every filter reads one input channel (groups = inputs)."""
    kernel = _keras.weight(layer, "kernel") if getattr(layer, "groups", 1) > 1 else None
    return kernel is not None and kernel.shape[-2] == 1


def _is_depthwise_groups(layer) -> bool:
    """A channels-last conv with groups == input channels: handled as a depthwise conv."""
    return channels_last(layer) and _one_channel_per_group(layer)


class GroupedDepthwiseHandler(DepthwiseHandler):
    """Conv(groups = C): output j reads input channel j // (filters / C), like depthwise."""

    def multiplier(self, layer) -> int:
        return layer.filters // layer.groups


_GROUPED_DEPTHWISE = GroupedDepthwiseHandler()


class SeparableHandler(ConvHandler):
    """SeparableConv1D/2D: depthwise (input-coupled) then pointwise (new channels)."""

    kernel_name = "pointwise_kernel"  # what creates the output channels

    def weight_rules(self, layer, in_keep, out_keep):
        m = int(layer.depth_multiplier)
        keep_in = np.asarray(in_keep[0])
        expanded = (keep_in[:, None] * m + np.arange(m)[None, :]).ravel()
        return {"depthwise_kernel": [(-2, keep_in)],
                "pointwise_kernel": [(-2, expanded), (-1, out_keep[0])],
                "bias": [(0, out_keep[0])]}

    def fold_delta(self, layer, const, in_keep, out_keep):
        # A constant c on input channel i gives c * sum(depthwise taps of (i, k)) on
        # depthwise output i*m+k (exact for 'valid', interior for 'same'), which
        # the pointwise kernel then mixes: fold both steps into the bias.
        m = int(layer.depth_multiplier)
        dw = _keras.weight(layer, "depthwise_kernel")
        pw = _keras.weight(layer, "pointwise_kernel")
        cin = dw.shape[-2]
        dw_taps = dw.reshape(-1, cin, m).sum(axis=0)  # (C, m)
        pw = pw.reshape(cin, m, pw.shape[-1])  # (C, m, F)
        taps = np.einsum("cm,cmf->cf", dw_taps, pw)
        return constant_delta(const, in_keep, out_keep, taps)

    def macs(self, layer, in_shapes, out_shapes):
        k = int(np.prod(layer.kernel_size))
        m = int(layer.depth_multiplier)
        cin, cout = in_shapes[0][-1], out_shapes[0][-1]
        return spatial(out_shapes[0]) * (k * cin * m + cin * m * cout)
