"""The latency model's second term: elementwise and data-movement ops, which have no MACs.

The conv/dense probes (latency_model.py) left out every op without MACs,
and the estimates came out 21-40% under the measured time of whole files
(benchmarks/results/latency_allocation.md, before this term). The exported
PreAct-ResNet-56 has 37 ADD and 19 MUL beside its 58 CONV_2D: the residual
adds, and the pre-activation BatchNormalizations that follow an Add rather
than a conv, so export cannot fold them. Their time does not fall with the
conv widths (the residual stream is not pruned), so a plan made without
them removes too little.

A Keras layer counts here when the exported file runs it as ops of its own
(checked against the op histograms of the benchmark models' files):

- BatchNormalization that `export.fold` does not fold into the layer
  before it: MUL and ADD by per-channel constants;
- Add, Subtract, Multiply, Maximum, Minimum of n inputs: n - 1 binary ops
  (Average: n - 1 ADD and a MUL);
- Concatenate: one CONCATENATION; MaxPooling/AveragePooling 1D/2D: the
  pool op; GlobalAveragePooling 1D/2D: MEAN.

ReLU and ReLU6 fuse into the op before them, ZeroPadding merges into the
conv after it, and Flatten, Reshape and Dropout are free, so they count 0.
Each counted layer is timed as a one-op file (two for BN) at its own
spatial size and at 1/4, 1/2, 3/4 and all of its channels, and fitted as
ms(c) = a + b * c (b >= 0): these ops stream memory, linear in the width.
"""
from __future__ import annotations

import dataclasses
import numpy as np

from keras_slim.export._latency_probes import _Builder, width_grid

_BINARY = {"Add": "add", "Subtract": "sub", "Multiply": "mul", "Maximum": "max",
           "Minimum": "min", "Average": "add"}
_POOLS = {"MaxPooling1D": "max", "MaxPooling2D": "max", "AveragePooling1D": "avg",
          "AveragePooling2D": "avg"}
_MEANS = ("GlobalAveragePooling1D", "GlobalAveragePooling2D")


@dataclasses.dataclass(frozen=True)
class OpSpec:
    """One layer's standalone ops, as the probe builds them (channels-last, batch 1).

    op: "bn" (MUL + ADD by constants), "add"/"sub"/"mul"/"max"/"min"
    (`inputs` - 1 binary ops; `average` adds a MUL), "concat", "pool_max",
    "pool_avg" or "mean". hw: the input's (H, W) ((1, L) for 1D layers);
    shares: each input's share of the output channels (Concatenate).
    """

    op: str
    hw: tuple
    inputs: int = 1
    shares: tuple = (1.0,)
    pool: tuple = (1, 1)
    strides: tuple = (1, 1)
    same: bool = False
    average: bool = False

    def key(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}


@dataclasses.dataclass
class OpCost:
    """One counted layer call: its probe, full width and fitted ms(c) = a + b * c."""

    name: str  # as in Plan.layers
    occurrence: int
    class_name: str
    spec: OpSpec
    channels: int  # the layer's output channels
    coef: tuple  # (a, b)
    points: list  # [[c, ms], ...] as measured

    def ms(self, channels: float) -> float:
        a, b = self.coef
        return a + b * channels


def op_spec(graph, call, shapes) -> tuple[OpSpec, int] | None:
    """(OpSpec, output channels) of a call the exported file runs as ops of its own, else None.

    graph: a keras_slim FlatGraph; shapes: its tensor shapes (batch first).
    """
    layer = call.layer
    name = type(layer).__name__
    if not call.inputs or not call.outputs:
        return None
    in_shape, out_shape = shapes.get(call.inputs[0]), shapes.get(call.outputs[0])
    if in_shape is None or out_shape is None or len(in_shape) not in (3, 4):
        return None
    if any(d is None for d in tuple(in_shape[1:]) + tuple(out_shape[1:])):
        return None
    hw = tuple(int(d) for d in in_shape[1:-1]) if len(in_shape) == 4 else (1, int(in_shape[1]))
    channels = int(out_shape[-1])
    if getattr(layer, "data_format", "channels_last") not in (None, "channels_last"):
        return None
    if name == "BatchNormalization":
        if getattr(layer, "axis", -1) not in (-1, len(in_shape) - 1) or _folded(graph, call):
            return None
        return OpSpec("bn", hw), channels
    if name in _BINARY:
        n = len(call.inputs)
        if n < 2 or any(tuple(shapes.get(k) or ()) != tuple(in_shape) for k in call.inputs):
            return None  # broadcasting merges: not modelled
        return OpSpec(_BINARY[name], hw, inputs=n, average=name == "Average"), channels
    if name == "Concatenate":
        axis = getattr(layer, "axis", -1)
        if axis not in (-1, len(in_shape) - 1):
            return None
        widths = [int((shapes.get(k) or (0,))[-1] or 0) for k in call.inputs]
        if not all(widths) or sum(widths) != channels:
            return None
        shares = tuple(round(w / channels, 6) for w in widths)
        return OpSpec("concat", hw, inputs=len(widths), shares=shares), channels
    if name in _POOLS:
        two = len(in_shape) == 4
        pair = lambda v: (tuple(int(i) for i in v) if two else (1, int(v[0])))  # noqa: E731
        pool = pair(_tuple(layer.pool_size))
        strides = pair(_tuple(layer.strides if layer.strides is not None else layer.pool_size))
        return OpSpec("pool_" + _POOLS[name], hw, pool=pool, strides=strides,
                      same=getattr(layer, "padding", "valid") == "same"), channels
    if name in _MEANS:
        return OpSpec("mean", hw), channels
    return None


def _tuple(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,)


def _folded(graph, call) -> bool:
    """Whether export.fold merges this BatchNormalization into the layer before it."""
    from keras_slim.export.fold import _conv_ok

    if len(call.inputs) != 1 or call.call.kwargs.get("training") is True:
        return False
    x = call.inputs[0]
    j = graph.producer.get(x)
    if j is None:
        return False
    before = graph.calls[j]
    uses = sum(1 for c in graph.calls if c.layer is call.layer)
    return (_conv_ok(before.layer) and before.scope == call.scope
            and graph.consumers.get(x, []) == [call.index] and len(before.outputs) == 1
            and uses == 1 and sum(1 for c in graph.calls if c.layer is before.layer) == 1)


def grid(spec: OpSpec, channels: int) -> list[int]:
    """The widths `spec` is timed at; a concatenation never below one channel per input."""
    return width_grid(channels, spec.inputs if spec.op == "concat" else 1)


def probe_file(spec: OpSpec, channels: int) -> bytes:
    """The .tflite bytes of `spec`'s ops at `channels` output channels."""
    b = _Builder()
    s = b.s
    shape = (1, *spec.hw, channels)
    if spec.op == "bn":
        x = b.tensor(shape)
        y = _binary(b, "mul", x, b.tensor((channels,), constant=True), shape)
        return b.finish([x], [_binary(b, "add", y, b.tensor((channels,), constant=True), shape)])
    if spec.op in ("add", "sub", "mul", "max", "min"):
        xs = [b.tensor(shape) for _ in range(spec.inputs)]
        y = xs[0]
        for other in xs[1:]:
            y = _binary(b, spec.op, y, other, shape)
        if spec.average:
            y = _binary(b, "mul", y, b.tensor((1,), constant=True), shape)
        return b.finish(xs, [y])
    if spec.op == "concat":
        widths = _split(channels, spec.shares)
        xs = [b.tensor((1, *spec.hw, w)) for w in widths]
        y = b.tensor(shape)
        o = s.ConcatenationOptionsT()
        o.axis = 3
        b.op(s.BuiltinOperator.CONCATENATION, xs, [y], s.BuiltinOptions.ConcatenationOptions, o)
        return b.finish(xs, [y])
    if spec.op in ("pool_max", "pool_avg"):
        x = b.tensor(shape)
        out_hw = tuple(_pooled(n, p, st, spec.same)
                       for n, p, st in zip(spec.hw, spec.pool, spec.strides))
        y = b.tensor((1, *out_hw, channels))
        o = s.Pool2DOptionsT()
        o.padding = s.Padding.SAME if spec.same else s.Padding.VALID
        o.strideH, o.strideW = spec.strides
        o.filterHeight, o.filterWidth = spec.pool
        code = (s.BuiltinOperator.MAX_POOL_2D if spec.op == "pool_max"
                else s.BuiltinOperator.AVERAGE_POOL_2D)
        b.op(code, [x], [y], s.BuiltinOptions.Pool2DOptions, o)
        return b.finish([x], [y])
    if spec.op == "mean":
        x = b.tensor(shape)
        axes = b.tensor((2,), constant=True)
        b.tensors[axes].type = s.TensorType.INT32
        b.buffers[b.tensors[axes].buffer].data = np.frombuffer(
            np.array([1, 2], np.int32).tobytes(), np.uint8)
        y = b.tensor((1, channels))
        o = s.ReducerOptionsT()
        o.keepDims = False
        b.op(s.BuiltinOperator.MEAN, [x, axes], [y], s.BuiltinOptions.ReducerOptions, o)
        return b.finish([x], [y])
    raise ValueError(f"no probe for op {spec.op!r}")


def _binary(b: _Builder, op: str, x: int, y: int, shape) -> int:
    s = b.s
    code, options, kind = {
        "add": (s.BuiltinOperator.ADD, s.AddOptionsT, s.BuiltinOptions.AddOptions),
        "sub": (s.BuiltinOperator.SUB, s.SubOptionsT, s.BuiltinOptions.SubOptions),
        "mul": (s.BuiltinOperator.MUL, s.MulOptionsT, s.BuiltinOptions.MulOptions),
        "max": (s.BuiltinOperator.MAXIMUM, s.MaximumMinimumOptionsT,
                s.BuiltinOptions.MaximumMinimumOptions),
        "min": (s.BuiltinOperator.MINIMUM, s.MaximumMinimumOptionsT,
                s.BuiltinOptions.MaximumMinimumOptions),
    }[op]
    out = b.tensor(shape)
    b.op(code, [x, y], [out], kind, options())
    return out


def _split(channels: int, shares: tuple) -> list[int]:
    """`channels` split by `shares` (each input >= 1), summing to `channels`."""
    widths = [max(1, int(round(f * channels))) for f in shares]
    widths[int(np.argmax(widths))] += channels - sum(widths)
    return [max(1, w) for w in widths]


def _pooled(n: int, pool: int, stride: int, same: bool) -> int:
    return -(-n // stride) if same else max(1, (n - pool) // stride + 1)


def fit(points) -> tuple[float, float]:
    """(a, b) of ms = a + b * c, least squares with b >= 0 (else the mean)."""
    p = np.asarray(points, np.float64)
    c, ms = p[:, 0], p[:, 1]
    if len(p) > 1 and np.ptp(c) > 0:
        b, a = np.polyfit(c, ms, 1)
        if b >= 0:
            return float(a), float(b)
    return float(ms.mean()), 0.0


def describe(spec: OpSpec) -> str:
    names = {"bn": "MUL+ADD", "concat": "CONCATENATION", "pool_max": "MAX_POOL_2D",
             "pool_avg": "AVERAGE_POOL_2D", "mean": "MEAN"}
    if spec.op in names:
        return names[spec.op]
    return f"{spec.inputs - 1}x {spec.op.upper()}" + (" + MUL" if spec.average else "")
