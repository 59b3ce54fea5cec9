"""Single-layer .tflite files, written directly as flatbuffers; their LiteRT timing; width curves.

The latency model (latency_model.py) times each prunable layer at a few
widths. Converting a Keras model per width would cost about a second each
(the TensorFlow converter); writing the one-op file with LiteRT's own
flatbuffer schema takes milliseconds and needs no TensorFlow. The ops and
options are those the converter emits for the layer once BN is folded
(bias added, relu/relu6 fused): CONV_2D, DEPTHWISE_CONV_2D,
FULLY_CONNECTED, and for SeparableConv2D a depthwise followed by a 1x1 conv.

Width curves: LiteRT's XNNPACK kernels compute output channels in blocks
whose size depends on the CPU and on the width itself (measured on an
AVX512 Xeon: a 3x3 conv costs the same at 1..16 outputs, about twice that at
17..31, less at exactly 32, then steps every 32), so a layer's latency is a
step function of its output width, not a line. `measure_curve` times one
reference layer at every width to 64 and every 8th to 512; a layer's fit
then uses that curve's value at its width instead of the width itself.
`preferred_multiple` reads the step off the curves (for round_to="auto").
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from keras_slim.export import _deps

ACTIVATIONS = {"relu": 1, "relu6": 3}  # TFLite ActivationFunctionType; others: NONE (0)


@dataclasses.dataclass(frozen=True)
class ProbeSpec:
    """One layer as the probe builds it (channels-last, batch 1).

    kind: "conv", "depthwise", "separable" or "dense". `in_hw`/`out_hw` are
    the spatial sizes (H, W); for "dense", in_hw = (rows, 1): the positions
    the same weights are applied to.
    """

    kind: str
    in_hw: tuple
    out_hw: tuple
    kernel: tuple = (1, 1)
    strides: tuple = (1, 1)
    dilation: tuple = (1, 1)
    same: bool = True
    activation: str = "linear"
    multiplier: int = 1

    def key(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}


class _Builder:
    """A one-subgraph TFLite model, op by op (float32)."""

    def __init__(self):
        self.s = _deps.litert_schema()
        self.tensors, self.buffers, self.operators, self.codes = [], [self.s.BufferT()], [], []
        self.rng = np.random.default_rng(0)

    def tensor(self, shape, constant: bool = False) -> int:
        t = self.s.TensorT()
        t.shape = np.asarray(shape, np.int32)
        t.type = self.s.TensorType.FLOAT32
        t.name = f"t{len(self.tensors)}"
        buf = self.s.BufferT()
        if constant:
            data = self.rng.uniform(-0.1, 0.1, size=shape).astype(np.float32)
            buf.data = np.frombuffer(data.tobytes(), np.uint8)
        t.buffer = len(self.buffers)
        self.buffers.append(buf)
        self.tensors.append(t)
        return len(self.tensors) - 1

    def op(self, code: int, inputs, outputs, options_type: int, options) -> None:
        if code not in self.codes:
            self.codes.append(code)
        op = self.s.OperatorT()
        op.opcodeIndex = self.codes.index(code)
        op.inputs = np.asarray(inputs, np.int32)
        op.outputs = np.asarray(outputs, np.int32)
        op.builtinOptionsType = options_type
        op.builtinOptions = options
        self.operators.append(op)

    def finish(self, inputs, outputs) -> bytes:
        import flatbuffers

        s = self.s
        graph = s.SubGraphT()
        graph.tensors, graph.operators, graph.name = self.tensors, self.operators, "main"
        graph.inputs = np.asarray(inputs, np.int32)
        graph.outputs = np.asarray(outputs, np.int32)
        model = s.ModelT()
        model.version, model.description = 3, "keras_slim latency probe"
        model.subgraphs, model.buffers = [graph], self.buffers
        codes = []
        for code in self.codes:
            c = s.OperatorCodeT()
            c.builtinCode, c.deprecatedBuiltinCode, c.version = code, min(code, 127), 1
            codes.append(c)
        model.operatorCodes = codes
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())

    # ---------------------------------------------------------------- ops
    def conv(self, x: int, spec: ProbeSpec, cin: int, cout: int, pointwise: bool,
             activation: str) -> int:
        """spec's conv, or (pointwise) the 1x1 stride-1 conv of a separable conv."""
        s = self.s
        kernel = (1, 1) if pointwise else spec.kernel
        w = self.tensor((cout, *kernel, cin), constant=True)
        b = self.tensor((cout,), constant=True)
        y = self.tensor((1, *spec.out_hw, cout))
        o = s.Conv2DOptionsT()
        o.padding = s.Padding.SAME if spec.same else s.Padding.VALID
        o.strideH, o.strideW = (1, 1) if pointwise else spec.strides
        o.dilationHFactor, o.dilationWFactor = (1, 1) if pointwise else spec.dilation
        o.fusedActivationFunction = ACTIVATIONS.get(activation, 0)
        self.op(s.BuiltinOperator.CONV_2D, [x, w, b], [y], s.BuiltinOptions.Conv2DOptions, o)
        return y

    def depthwise(self, x: int, spec: ProbeSpec, c: int, activation: str) -> int:
        s = self.s
        m = spec.multiplier
        w = self.tensor((1, *spec.kernel, c * m), constant=True)
        b = self.tensor((c * m,), constant=True)
        y = self.tensor((1, *spec.out_hw, c * m))
        o = s.DepthwiseConv2DOptionsT()
        o.padding = s.Padding.SAME if spec.same else s.Padding.VALID
        o.strideH, o.strideW = spec.strides
        o.dilationHFactor, o.dilationWFactor = spec.dilation
        o.depthMultiplier = m
        o.fusedActivationFunction = ACTIVATIONS.get(activation, 0)
        self.op(s.BuiltinOperator.DEPTHWISE_CONV_2D, [x, w, b], [y],
                s.BuiltinOptions.DepthwiseConv2DOptions, o)
        return y

    def dense(self, x: int, rows: int, cin: int, cout: int, activation: str) -> int:
        s = self.s
        w = self.tensor((cout, cin), constant=True)
        b = self.tensor((cout,), constant=True)
        y = self.tensor((rows, cout))
        o = s.FullyConnectedOptionsT()
        o.fusedActivationFunction = ACTIVATIONS.get(activation, 0)
        self.op(s.BuiltinOperator.FULLY_CONNECTED, [x, w, b], [y],
                s.BuiltinOptions.FullyConnectedOptions, o)
        return y


def probe_file(spec: ProbeSpec, cin: int, cout: int) -> bytes:
    """The .tflite bytes of `spec` with `cin` input and `cout` output channels."""
    b = _Builder()
    x, y = add_probe(b, spec, cin, cout)
    return b.finish([x], [y])


def add_probe(b: _Builder, spec: ProbeSpec, cin: int, cout: int) -> tuple[int, int]:
    """Add `spec`'s op(s) to `b`, reading a new graph input: (input, output) tensors."""
    if spec.kind == "dense":
        x = b.tensor((spec.in_hw[0], cin))
        return x, b.dense(x, spec.in_hw[0], cin, cout, spec.activation)
    x = b.tensor((1, *spec.in_hw, cin))
    if spec.kind == "conv":
        y = b.conv(x, spec, cin, cout, False, spec.activation)
    elif spec.kind == "depthwise":
        y = b.depthwise(x, spec, cin, spec.activation)
    elif spec.kind == "separable":
        mid = b.depthwise(x, spec, cin, "linear")
        y = b.conv(mid, spec, cin * spec.multiplier, cout, True, spec.activation)
    else:
        raise ValueError(f"no probe for layer kind {spec.kind!r}")
    return x, y


def time_file(content: bytes, threads: int, runs: int, warmup: int) -> float:
    """Fastest ms of `runs` invokes of the file in LiteRT with XNNPACK (as benchmark_tflite).

    The fastest, not the median: other load on the machine only ever adds
    time, and a probe takes well under a second, so its minimum is the
    layer's own cost (`check_latency` reports the whole file's median and
    minimum).
    """
    Interpreter, OpResolverType = _deps.litert_interpreter_cls()
    interp = Interpreter(model_content=content, num_threads=threads,
                         experimental_op_resolver_type=OpResolverType.AUTO)
    interp.allocate_tensors()
    rng = np.random.default_rng(0)
    for detail in interp.get_input_details():  # every input: no uninitialized floats
        interp.set_tensor(detail["index"], rng.uniform(-1, 1, detail["shape"]).astype(np.float32))
    for _ in range(warmup):
        interp.invoke()
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        interp.invoke()
        times[i] = time.perf_counter() - start
    return float(times.min() * 1e3)


CURVE_WIDTHS = tuple(range(1, 65)) + tuple(range(72, 513, 8))
WIDTHS = (0.25, 0.5, 0.75, 1.0)  # shares of each layer's (and op's) channels it is timed at


def width_grid(n: int, low: int = 1) -> list[int]:
    """The channel counts a layer (or op) of `n` channels is timed at, never below `low`."""
    return sorted({max(low, int(round(f * n))) for f in WIDTHS})


_CURVE_PROBES = {  # kind -> (reference layer, its input channels; None: = the width)
    "conv": (ProbeSpec("conv", (16, 16), (16, 16), (3, 3), activation="relu"), 32),
    "depthwise": (ProbeSpec("depthwise", (16, 16), (16, 16), (3, 3), activation="relu"), None),
}


@dataclasses.dataclass
class WidthCurve:
    """ms of a reference layer at each output width; between widths, the next one up."""

    widths: list
    ms: list

    def __call__(self, width: float) -> float:
        i = int(np.searchsorted(self.widths, width, side="left"))
        if i < len(self.widths):
            return float(self.ms[i])
        return float(self.ms[-1]) * width / self.widths[-1]  # beyond: proportional


MULTIPLES = (1, 2, 4, 8, 16, 32, 64)  # channel steps preferred_multiple chooses from
# rounding_cost is about 0 at the curve's step and its divisors and about 1 beyond
# (and on a line): a multiple up to this costs "nothing".
FREE_ROUNDING = 0.5


def rounding_cost(curve: WidthCurve, multiple: int) -> float | None:
    """What rounding half a step up costs on the curve, against a linear runtime.

    For each measured multiple W of `multiple` whose W - multiple/2 is
    measured too: (curve(W) - curve(W - multiple/2)) over what a line
    through the curve adds for those channels, slope * multiple/2. The
    median over all such W, clipped to [0, 1]: 0 when the curve is flat
    within steps of `multiple` (XNNPACK's blocks: the time of a block is
    paid at its first channel), 1 when it rises with every channel. The
    median ignores a probe slowed by other load. None when the curve cannot
    tell: it does not rise with the width, or the half step adds less time
    than twice the timing noise (the lower quartile of the changes between
    neighbouring widths, mostly flat within steps).
    """
    if multiple <= 1:
        return 0.0
    widths = np.asarray(curve.widths, np.float64)
    ms = np.asarray(curve.ms, np.float64)
    slope = float(np.polyfit(widths, ms, 1)[0]) if len(widths) > 1 else 0.0
    neighbours = np.abs(np.diff(ms))[np.diff(widths) == 1]
    noise = float(np.percentile(neighbours, 25)) if len(neighbours) else 0.0
    half = multiple // 2
    if not slope * half > 2 * noise:
        return None
    at = {int(w): float(t) for w, t in zip(curve.widths, curve.ms)}
    rises = [(at[w] - at[w - half]) / (slope * half) for w in at
             if w % multiple == 0 and w - half in at]
    return min(max(float(np.median(rises)), 0.0), 1.0) if rises else None


def preferred_multiple(curves: dict, weights: dict | None = None) -> int:
    """The largest of MULTIPLES that rounding widths up to costs (nearly) nothing.

    `curves`: kind -> WidthCurve; `weights`: kind -> the model's time in
    layers following that curve (default: equal; kinds not in it count 0).
    A multiple's cost is the weighted mean of `rounding_cost` over the
    curves that can tell; it is free when that is at most FREE_ROUNDING.
    So a model mostly in convs rounds to the conv step (32 on an AVX512
    Xeon, where depthwise convs prefer 16: both are aligned at 32). 1 when
    no multiple is free (cost grows with every channel) or nothing tells.
    """
    share = {k: 1.0 if weights is None else float(weights.get(k, 0.0)) for k in curves}
    share = {k: v for k, v in share.items() if v > 0}
    best = 1
    for m in MULTIPLES[1:]:
        costs = {k: rounding_cost(curves[k], m) for k in share}
        known = {k: c for k, c in costs.items() if c is not None}
        if known and sum(share[k] * c for k, c in known.items()) <= FREE_ROUNDING * sum(
                share[k] for k in known):
            best = m
    return best


def curve_kind(kind: str) -> str:
    """Which curve a layer kind's output width follows (conv for the GEMM-based ones)."""
    return "depthwise" if kind == "depthwise" else "conv"


def measure_curve(kind: str, threads: int, runs: int, warmup: int) -> WidthCurve:
    """The reference layer of `kind` timed at every width of CURVE_WIDTHS."""
    spec, cin = _CURVE_PROBES[kind]
    ms = [time_file(probe_file(spec, cin or c, c), threads, runs, warmup) for c in CURVE_WIDTHS]
    return WidthCurve(list(CURVE_WIDTHS), ms)
