"""The handler interface: how one layer family takes part in pruning."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from keras_slim import _keras
from keras_slim.handlers.context import ChannelInfo, FlowContext


class Handler:
    """Describes one layer family to the pruner.

    A handler answers three questions:

    * `flow`: how channels go through the layer (coupling). Given the
      `ChannelInfo` of each tensor argument (None where it has no channel
      axis), return one for each output: fresh ids for channels the layer
      creates, the input's ids for channels it passes through, united ids
      where it ties channels together. Use `ctx.use(info)` for every input
      whose channels the layer mixes (so only dead channels may go) and
      `ctx.barrier(ins, reason)` for anything it cannot follow.
    * `rebuild`: the new config and weights, given for each input and output
      the positions (np.ndarray of int) of the channels that stay. A handler
      whose weights are only sliced says how in `weight_rules`; planning then
      counts the new parameters from shapes and only surgery slices values.
    * `macs`: multiply-accumulates for given input/output shapes.

    `shares_channels` says that all calls of one layer object must keep the
    same channels (true for anything with per-channel weights).

    Constants (removed channels with gamma = 0 but beta != 0 carry act(beta)):
    `constant` says what a layer makes of constant inputs; a handler that does
    not implement it passes no constants on. A layer that mixes channels keeps
    the constant channels it reads unless it sets `absorbs_constants` and its
    `fold_delta` puts their contribution into a bias. Both defaults are the
    safe ones: a new handler can only keep too much, never drop a constant.
    """

    shares_channels = False
    emits_constants = False  # a source of constants for folding (BN: beta)
    absorbs_constants = False  # fold_delta folds constant inputs exactly (see border_effect)

    def flow(self, ctx: FlowContext, ins: list) -> list:
        raise NotImplementedError

    def rebuild(self, layer, in_keep: Sequence, out_keep: Sequence) -> tuple[dict, list]:
        """Return (config, weights in `layer.weights` order) for the smaller layer."""
        return layer.get_config(), [w for _, w in _keras.get_weights(layer)]

    def under_filter_scores(self) -> "Handler":
        """The handler to use when a filter criterion (l1, l2, fpgm) scores channels.

        Itself, unless the layer's role depends on the criterion (a BN scores
        its gammas under "bn_scale" but is only an affine map otherwise).
        """
        return self

    def under_mean_fill(self) -> "Handler":
        """The handler under a filter criterion with plan(filter_removal="mean").

        Itself, unless the layer knows a removed channel's mean (a BN: its
        moving mean), whose value it then emits instead of mapping the
        removed filter's constant.
        """
        return self

    def weight_rules(self, layer, in_keep: Sequence, out_keep: Sequence) -> dict | None:
        """How the weights are sliced, `{name: [(axis, positions), ...]}` (see
        `slice_weights`), or None when `rebuild` computes them another way."""
        return None

    def params(self, layer, in_keep: Sequence, out_keep: Sequence) -> int:
        """Parameter count of the rebuilt layer (what the plan reports).

        From `weight_rules` when given (no weight is read); otherwise it
        rebuilds and counts, which is exact for any handler.
        """
        if type(self).rebuild is Handler.rebuild:  # unchanged weights: no config needed
            return sum(int(np.prod(w.shape)) for w in layer.weights)
        rules = self.weight_rules(layer, in_keep, out_keep)
        if rules is None:
            return sum(int(np.size(w)) for w in self.rebuild(layer, in_keep, out_keep)[1])
        return sliced_size(layer, rules)

    def macs(self, layer, in_shapes: Sequence[tuple], out_shapes: Sequence[tuple]) -> int:
        return 0

    def op_config(self, op, in_keep: Sequence, out_keep: Sequence) -> dict:
        """The config of the rebuilt `keras.ops` operation (weightless; `rebuild` is for layers)."""
        return op.get_config()

    def call_args(self, call, args: tuple, kwargs: dict, in_keep: Sequence, out_keep: Sequence):
        """The rebuilt call's (args, kwargs); override where a non-tensor argument names channels."""
        return args, kwargs

    def constant(self, layer, consts: list, in_shapes, out_shapes) -> list | None:
        """Per-channel constants of the outputs given constant inputs (NaN: not constant).

        Used to fold the constant act(beta) of removed channels into the next
        layer. None means the layer does not pass constants on.
        """
        return None

    def border_effect(self, layer) -> bool:
        """True if padding makes a constant input non-constant near the borders.

        ('same'/'causal' convs with a kernel larger than 1, ZeroPadding.) Such a
        layer's constants and folds are exact only away from the borders; the
        plan option `border_folds=False` keeps those channels instead.
        """
        return False

    def constant_of_call(self, call, consts, in_shapes, out_shapes) -> list | None:
        """`constant` for one call; override it if the call's other arguments matter."""
        return self.constant(call.layer, consts, in_shapes, out_shapes)

    def misstates_shapes(self, layer, in_shapes, out_shapes) -> str | None:
        """Why the graph's shapes after this call are not those at inference (None: they are).

        Then no constant is folded anywhere in the model (a fold may count
        positions: a sum, a spatial softmax); zero channels still go.
        """
        return None

    def absorbs(self, layer) -> bool:
        """Whether this layer folds the constant channels it reads (`absorbs_constants`;
        a handler whose layers differ, e.g. by `use_bias`, decides per layer)."""
        return self.absorbs_constants

    def fold_delta(self, layer, const, in_keep, out_keep):
        """What removed constant input channels add to each kept output (None: cannot tell).

        `const[i]` is the constant carried by input channel i (NaN if none).
        The caller puts the result into this layer's bias, or into the moving
        mean of the BatchNormalization that follows a bias-free layer.
        """
        return None


def unsliceable_state(layer) -> str | None:
    """Why a layer's weights cannot be sliced by channel rules (None: they can).

    A quantized layer (`layer.quantize("int8")`, ...) stores its kernel with
    scales and a LoRA-enabled one adds low-rank factors; slicing the kernel
    alone, or folding constants through the raw integer kernel, would be wrong.
    """
    mode = getattr(layer, "quantization_mode", None)
    if mode:
        return f"quantized layer ({mode}): its kernel's scales are not sliced or folded"
    if getattr(layer, "lora_enabled", False):
        return "LoRA-enabled layer: its low-rank factors are not sliced or folded"
    return None


def slice_weights(layer, rules: dict) -> list:
    """Slice each weight by `rules[name] = [(axis, positions), ...]`, in order."""
    out = []
    for name, value in _keras.get_weights(layer):
        for axis, positions in rules.get(name, ()):
            if positions is not None:
                value = np.take(value, positions, axis=axis)
        out.append(value)
    return out


def sliced_size(layer, rules: dict) -> int:
    """The number of values `slice_weights(layer, rules)` would return."""
    total = 0
    for w in layer.weights:
        shape = list(w.shape)
        for axis, positions in rules.get(_keras.weight_name(w), ()):
            if positions is not None:
                shape[axis] = len(positions)
        total += int(np.prod(shape, dtype=np.int64))
    return total


def spatial(shape) -> int:
    """Product of the non-batch, non-channel dims (1 for a (batch, C) tensor)."""
    return int(np.prod([d for d in shape[1:-1]], dtype=np.int64)) if len(shape) > 2 else 1


def padded_kernel(layer) -> bool:
    """A conv whose zero padding reaches the output ('same'/'causal' with a kernel > 1)."""
    if getattr(layer, "padding", "valid") not in ("same", "causal"):
        return False
    kernel = getattr(layer, "kernel_size", (1,))
    return any(int(k) > 1 for k in (kernel if isinstance(kernel, (tuple, list)) else (kernel,)))


def first(ins: list) -> ChannelInfo | None:
    return ins[0] if ins else None


def channels_last(layer) -> bool:
    return getattr(layer, "data_format", "channels_last") in (None, "channels_last")


def constant_delta(const, in_keep, out_keep, taps):
    """`const @ taps` over the removed inputs, for the kept outputs (None if nothing to add).

    `taps` is the kernel summed over its spatial axes, shape (in, out).
    """
    removed = np.setdiff1d(np.arange(len(const)), in_keep)
    c = const[removed]
    live = np.isfinite(c) & (c != 0)
    if not live.any():
        return None
    return (c[live] @ taps[removed[live]])[out_keep]
