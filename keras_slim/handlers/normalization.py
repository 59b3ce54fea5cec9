"""Normalization layers: BatchNormalization (the scaling factors Network Slimming ranks), GroupNormalization."""
from __future__ import annotations

import numpy as np

from keras_slim import _keras
from keras_slim.handlers.context import ChannelInfo
from keras_slim.handlers.base import Handler, slice_weights


def _last_axis(layer, in_shapes) -> bool:
    """Whether a BN's `axis` is the last axis of its input (the channel axis)."""
    rank = len(in_shapes[0]) if in_shapes and in_shapes[0] is not None else 0
    axis = layer.axis if isinstance(layer.axis, int) else (
        layer.axis[0] if len(layer.axis) == 1 else None)
    return axis is not None and rank > 0 and axis % rank == rank - 1


class BatchNormHandler(Handler):
    """BN on the channel axis; with scale=True its |gamma| scores its channels.

    After BN with gamma = 0 a channel emits beta: BN sets the `zero` bit where
    beta = 0 and the `const` bit everywhere (the constant is beta). Channel selection: when the BN's input is also read by
    other layers (after an Add or a Concatenate), removing a channel from
    that shared tensor would touch the other readers; instead the BN reads
    its own selection of channels (fresh ids, each requiring the input
    channel it comes from) and the rebuilt model gathers them with a
    `ChannelSelection` layer in front of the BN.
    """

    shares_channels = True
    emits_constants = True
    scores_gamma = True  # False under a filter criterion (AffineBatchNormHandler)

    @staticmethod
    def on_channel_axis(ctx, ins) -> bool:
        """Whether the BN normalises the last axis, the channel axis (else it is a barrier)."""
        return bool(ins) and ins[0] is not None and _last_axis(ctx.layer, ctx.in_shapes)

    def flow(self, ctx, ins):
        if not self.on_channel_axis(ctx, ins):
            return ctx.barrier(ins, "BatchNormalization not on the last axis")
        x, layer = ins[0], ctx.layer
        if not layer.scale or not self.scores_gamma:
            # gamma * (x - mean) / std + beta: per-channel affine, nothing to score.
            return [x.not_zero()]
        if ctx.options.channel_selection and ctx.input_fanout(0) > 1:
            selected = ChannelInfo(ctx.new(len(x)), x.zero.copy(), x.const.copy())
            ctx.require(selected.ids, x.ids)
            ctx.produce(selected)
            ctx.mark("select")
            x = selected
        gamma = _keras.weight(layer, "gamma")
        ctx.score(x, np.abs(gamma))
        # With gamma = 0 the BN emits beta: zero where beta is 0, else a constant.
        beta = _keras.weight(layer, "beta")
        zero = np.ones(len(x), bool) if beta is None else (beta == 0)
        return [ChannelInfo(x.ids, zero, np.ones(len(x), bool))]

    def constant(self, layer, consts, in_shapes, out_shapes):
        n = len(consts[0])
        if not _last_axis(layer, in_shapes):  # a barrier: its statistics are not per channel
            return [np.full(n, np.nan)]
        beta = _keras.weight(layer, "beta")
        beta = np.zeros(n) if beta is None else beta
        if layer.scale and self.scores_gamma:
            # The value once this BN's gamma is 0, whatever its input: beta.
            return [beta.astype(np.float64)]
        w = dict(_keras.get_weights(layer))
        # Not scored here: a per-channel affine map of a constant input.
        scale = w.get("gamma", 1.0) / np.sqrt(w["moving_variance"] + layer.epsilon)
        return [scale * (consts[0] - w["moving_mean"]) + beta]

    def under_filter_scores(self) -> Handler:
        return _AFFINE

    def weight_rules(self, layer, in_keep, out_keep):
        keep = out_keep[0]
        spec = getattr(layer, "input_spec", None)
        rank = getattr(spec, "ndim", None) if not isinstance(spec, (list, tuple)) else None
        if keep is None or (rank and not _last_axis(layer, [(None,) * rank])):
            # a BN off the channel axis is a barrier: every channel stays, and its
            # statistics have the length of its own axis, not of the channels
            return {}
        return {n: [(0, keep)] for n in _PER_CHANNEL}

    def rebuild(self, layer, in_keep, out_keep):
        return layer.get_config(), slice_weights(layer, self.weight_rules(layer, in_keep, out_keep))


# every per-channel variable a BatchNormalization may have (renorm=True adds the last three)
_PER_CHANNEL = ("gamma", "beta", "moving_mean", "moving_variance", "moving_stddev",
                "renorm_mean", "renorm_stddev")


class AffineBatchNormHandler(BatchNormHandler):
    """BatchNormalization when a filter criterion (l1, l2, fpgm) scores channels.

    The removal hypothesis is then "the producing filters are zero", so the
    BN emits nothing of its own: it maps the constant its input carries
    through gamma * (c - mean) / std + beta. Under "bn_scale_readers" its
    |gamma| scores the channels it reads (its input's ids: no selection).
    """

    emits_constants = False
    scores_gamma = False

    def flow(self, ctx, ins):
        _score_read(ctx, ins)
        return super().flow(ctx, ins)

    def under_filter_scores(self) -> Handler:
        return self

    def under_mean_fill(self) -> Handler:
        return _MEAN_FILL


class MeanFillBatchNormHandler(AffineBatchNormHandler):
    """BatchNormalization under a filter criterion with plan(filter_removal="mean"),
    and under criterion="bn_scale_readers" (which always removes this way).

    The removal hypothesis is then "the removed filter's output is replaced
    by its mean", which the BN's moving mean records: the BN emits beta for
    that channel, as it does under "bn_scale" once gamma is 0. The pruned
    model equals the original with those channels' BN gamma set to 0: exact
    where gamma is 0, or where the channel is constant at the BN's moving
    mean (a zero filter whose BN statistics saw it zero). For a removed
    filter that is not zero it approximates the channel by its mean, not by
    the value a zero filter would give (BN(0) = beta - gamma * mean / std,
    which after a trained BN can be far from anything the channel took).
    """

    def flow(self, ctx, ins):
        if not self.on_channel_axis(ctx, ins):
            return super().flow(ctx, ins)  # the barrier
        _score_read(ctx, ins)
        x = ins[0]
        beta = _keras.weight(ctx.layer, "beta")
        zero = x.const & (True if beta is None else beta == 0)
        return [ChannelInfo(x.ids, zero, x.const.copy())]

    def constant(self, layer, consts, in_shapes, out_shapes):
        c = np.asarray(consts[0], np.float64)
        if not _last_axis(layer, in_shapes):
            return super().constant(layer, consts, in_shapes, out_shapes)
        beta = _keras.weight(layer, "beta")
        beta = np.zeros(len(c)) if beta is None else beta.astype(np.float64)
        return [np.where(np.isfinite(c), beta, np.nan)]

    def under_mean_fill(self) -> Handler:
        return self


def _score_read(ctx, ins) -> None:
    """Under "bn_scale_readers": this BN's |gamma| scores the channels it reads."""
    if ctx.scores_readers and ctx.layer.scale and BatchNormHandler.on_channel_axis(ctx, ins):
        ctx.score(ins[0], np.abs(_keras.weight(ctx.layer, "gamma")))


_AFFINE = AffineBatchNormHandler()
_MEAN_FILL = MeanFillBatchNormHandler()


class GroupNormHandler(Handler):
    """GroupNormalization: channels go only in whole groups.

    A group's statistics mix its channels, so removing part of a group would
    change the others. Each group's channels are united into one class: they
    are removed together or not at all, and removing whole groups leaves the
    remaining groups' statistics (and outputs) exactly as they were. A group
    whose input is all zero comes out as beta (mean and variance 0), so it is
    zero where beta is 0 and a constant otherwise; a group with constant but
    non-zero input is not passed on as constant (its readers keep it).
    GroupNormalization has no moving statistics; its gamma does not score.
    """

    shares_channels = True

    def flow(self, ctx, ins):
        x = ins[0] if ins else None
        layer = ctx.layer
        rank = len(ctx.in_shapes[0]) if ctx.in_shapes else 0
        if x is None or layer.axis % rank != rank - 1:
            return ctx.barrier(ins, "GroupNormalization not on the channel axis")
        size = _group_size(layer, len(x))
        if size is None:
            return ctx.barrier(ins, f"GroupNormalization with {layer.groups} groups of "
                                    f"{len(x)} channels")
        starts = np.repeat(np.arange(0, len(x), size), size)
        ctx.union(x.take(starts), x)  # a group is one removable unit
        dead = x.zero.reshape(-1, size).all(1).repeat(size)
        beta = _keras.weight(layer, "beta")
        zero = dead & (True if beta is None else beta == 0)  # a dead group emits beta
        return [ChannelInfo(x.ids, zero, dead)]

    def constant(self, layer, consts, in_shapes, out_shapes):
        c = consts[0]
        size = _group_size(layer, len(c))
        beta = _keras.weight(layer, "beta")
        beta = np.zeros(len(c)) if beta is None else beta.astype(np.float64)
        dead = (c.reshape(-1, size) == 0).all(1).repeat(size)  # NaN is not 0
        return [np.where(dead, beta, np.nan)]

    def weight_rules(self, layer, in_keep, out_keep):
        return {n: [(0, out_keep[0])] for n in ("gamma", "beta")}

    def rebuild(self, layer, in_keep, out_keep):
        keep = np.asarray(out_keep[0])
        size = _group_size(layer, _channels(layer))
        groups = np.unique(keep // size)
        if len(keep) != len(groups) * size:  # the coupling unites each group: a bug if not
            raise RuntimeError(f"GroupNormalization {layer.name!r}: kept channels "
                               f"{keep.tolist()} are not whole groups of {size}")
        config = dict(layer.get_config(), groups=len(groups))
        return config, slice_weights(layer, self.weight_rules(layer, [keep], [keep]))


def _channels(layer) -> int:
    for name in ("gamma", "beta"):
        w = _keras.weight(layer, name)
        if w is not None:
            return len(w)
    return int(layer.input_spec.axes[layer.axis])  # no weights: the width it was built for


def _group_size(layer, channels: int) -> int | None:
    groups = int(layer.groups) if layer.groups != -1 else channels
    if groups <= 0 or channels % groups:
        return None
    return channels // groups


class UnitNormalizationHandler(Handler):
    """UnitNormalization: x / ||x||_2 over `axis`.

    Over the channel axis the norm mixes the channels, but a zero channel adds
    nothing to it: zero channels go (and stay zero), every other channel is
    kept (removing a constant one would change the norm). Over other axes only
    it is channel-wise: a constant c becomes c / max(|c| sqrt(n), 1e-12) for
    the n values it is normalised over.
    """

    EPSILON = 1e-12  # keras.layers.UnitNormalization's

    def flow(self, ctx, ins):
        x = ins[0] if ins else None
        if x is None:
            return ctx.barrier(ins, "no channel axis")
        if self._over_channels(ctx.layer, ctx.in_shapes[0]):
            ctx.use(x)  # non-zero channels stay
            return [ChannelInfo(x.ids, x.zero, x.zero.copy())]
        return [x]

    def constant(self, layer, consts, in_shapes, out_shapes):
        c = np.asarray(consts[0], np.float64)
        axes = self._axes(layer, in_shapes[0])
        dims = [in_shapes[0][a] for a in axes]
        if len(in_shapes[0]) - 1 in axes or 0 in axes or any(d is None for d in dims):
            # over the channels, the batch or an unknown size: only zero stays known
            return [np.where(c == 0, 0.0, np.nan)]
        n = float(np.prod(dims))
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.minimum(1.0 / np.sqrt(n * c * c), 1.0 / self.EPSILON)
        return [np.where(c == 0, 0.0, c * scale)]

    @staticmethod
    def _axes(layer, shape) -> list:
        axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
        return sorted({a % len(shape) for a in axes})

    def _over_channels(self, layer, shape) -> bool:
        return len(shape) - 1 in self._axes(layer, shape)
