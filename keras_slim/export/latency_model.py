"""A per-layer LiteRT latency model for `plan(target_latency_ms=...)`.

`LatencyModel.measure(model, threads=1)` times, on this machine, every
Conv1D/Conv2D, DepthwiseConv, SeparableConv and Dense call of `model` as a
one-op .tflite file (LiteRT with XNNPACK, batch 1, as `benchmark_tflite`
runs whole files) at a grid of widths, 1/4, 1/2, 3/4 and all of its input
and output channels, and fits per layer

    ms(cin, cout) = a + b * cin + c * G(cout) + d * cin * G(cout)   (b, c, d >= 0)

where G is the machine's width curve (`_latency_probes.measure_curve`: the
time of a reference layer at each output width, a step function on
XNNPACK), so the d term is the MACs, b the reading of the input and c the
writing of the output. A plan's estimate is the invoke overhead (an empty
probe's time) plus, at the plan's widths, three terms:

1. each layer's fit minus that overhead;
2. the ops without MACs that the exported file runs on their own
   (unfolded BatchNormalization, Add and the other merges, Concatenate,
   pooling), timed the same way (`_latency_elementwise`);
3. what running the layers as one graph adds to their sum, as a function
   of the total weights: the probes run hot, the whole file streams
   weights beyond the cache (`_latency_graph`).

`elementwise=False` / `graph=False` leave terms 2 / 3 out (the model before
they existed). What is still missing (channel-selection slices,
activations other than ReLU/ReLU6, layer types it does not know)
`check_latency` (latency_check.py) measures, by exporting the pruned model
and timing it. `preferred_multiple()` reads the channel step the runtime likes off the
width curves (32 on an AVX512 Xeon), for `plan(..., round_to="auto")`.

Fits are cached as JSON in `$KERAS_SLIM_CACHE` (default
`~/.cache/keras_slim`), one file per machine (OS, CPU, core count, LiteRT
version), keyed by the layer's shape and options, the widths and the
thread count: a layer measured once is never timed again, in any model.
Measuring needs LiteRT (`ai-edge-litert`, the export extra) but not
TensorFlow; `check_latency` converts, so it needs TensorFlow.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import os
from typing import Sequence

import numpy as np

from keras_slim.errors import ArgumentError
from keras_slim.export import _latency_elementwise as elementwise_
from keras_slim.export import _latency_graph as graph_
from keras_slim.export._latency_cache import (
    cache_path, key, load, load_average, machine_info, save,
)
from keras_slim.export._latency_probes import (
    CURVE_WIDTHS, WIDTHS, ProbeSpec, WidthCurve, curve_kind, measure_curve, probe_file, time_file,
    width_grid,
)
from keras_slim.export._latency_probes import preferred_multiple as curves_multiple

logger = logging.getLogger(__name__)

BUSY = 0.5  # other work's load per core above which the timings are called contended

# The first class in a layer's MRO found here decides: transposed and 3D convs first,
# since tf_keras derives them (and DepthwiseConv2D) from Conv2D.
_KINDS = {"Conv1DTranspose": None, "Conv2DTranspose": None, "Conv3DTranspose": None,
          "Conv3D": None, "DepthwiseConv1D": "depthwise", "DepthwiseConv2D": "depthwise",
          "SeparableConv1D": "separable", "SeparableConv2D": "separable", "Conv1D": "conv",
          "Conv2D": "conv", "Dense": "dense"}


@dataclasses.dataclass
class LayerCost:
    """One modelled layer call: its probe, full widths and fitted ms(cin, cout)."""

    name: str  # as in Plan.layers
    occurrence: int  # the how-many-th row of that name (a layer called twice)
    class_name: str
    spec: ProbeSpec
    cin: int
    cout: int
    coef: tuple  # (a, b, c, d) over (cin, G(cout))
    points: list  # [[cin, cout, ms], ...] as measured
    curve: WidthCurve | None = dataclasses.field(default=None, repr=False)

    def ms(self, cin: float, cout: float) -> float:
        a, b, c, d = self.coef
        g = self.curve(cout) if self.curve is not None else cout
        return a + b * cin + c * g + d * cin * g

    def widths(self, channels: int, macs: int) -> tuple[float, float]:
        """(cin, cout) of a plan row, the input width read back from the row's MACs."""
        if not channels:
            return 0.0, 0.0
        spec, area = self.spec, self.spec.out_hw[0] * self.spec.out_hw[1]
        if spec.kind == "depthwise":
            return channels / spec.multiplier, float(channels)
        taps = spec.kernel[0] * spec.kernel[1]
        per_cin = {"conv": area * taps * channels, "dense": spec.in_hw[0] * channels,
                   "separable": area * spec.multiplier * (taps + channels)}[spec.kind]
        return macs / per_cin, float(channels)


@dataclasses.dataclass
class LatencyModel:
    """Per-layer LiteRT latency of one model on this machine (see the module docstring)."""

    threads: int
    machine: dict
    overhead_ms: float  # one invoke of an empty probe
    curves: dict  # kind -> WidthCurve (measured on this machine)
    layers: list  # LayerCost, in the model's order
    unmodelled: list  # class names of layers with MACs that count 0
    input_shapes: list
    ops: list = dataclasses.field(default_factory=list)  # OpCost: layers without MACs
    graph: list = dataclasses.field(default_factory=list)  # [[weights MB, extra ms]]
    busy: float | None = None  # other work's load per core at its busiest timing

    @property
    def description(self) -> str:
        ops = f" + {len(self.ops)} elementwise" if self.ops else ""
        ops += " + graph term" if self.graph else ""
        return (f"LiteRT per-layer model ({len(self.layers)} layers{ops}, {self.threads} "
                f"thread{'s' if self.threads > 1 else ''}, {self.machine['cpu']})")

    @classmethod
    def measure(cls, model, threads: int = 1, input_shape=None, *, runs: int = 20,
                warmup: int = 5, cache_dir: str | os.PathLike | bool | None = None,
                elementwise: bool = True, graph: bool = True,
                refresh: bool = False) -> "LatencyModel":
        """Time `model`'s layers (or read them from the cache) and fit each one.

        Args:
            model: the unpruned model the plan is made from.
            threads: LiteRT threads (set explicitly, as `benchmark_tflite` does).
            input_shape: the input size (no batch axis) for models with None
                axes, as for `keras_slim.plan`; default: 224 per spatial axis.
            runs, warmup: timed and discarded invokes per probe (the fastest counts).
            cache_dir: where fits are kept; None: `$KERAS_SLIM_CACHE` or
                `~/.cache/keras_slim`; False: no cache (measure everything).
            elementwise: also time the layers without MACs that the exported
                file runs as ops of their own (unfolded BatchNormalization,
                Add, Concatenate, pooling); False: conv/dense layers only.
            graph: also time the model's layers written into one file at a
                few widths, for what weights beyond the cache add to their
                sum (`_latency_graph`); False: the per-layer sum only.
            refresh: time every probe again and overwrite the cached fits
                (after measuring on a busy machine: the log says when).

        Each new timing records the machine's load average. The model's
        `busy` is the load other than the probe's own threads, per core, at
        the busiest timing it uses (None when every timing it uses was cached
        before loads were recorded); above `BUSY` a warning is logged: other
        work shared the cores, so the estimates are high.
        """
        for name, value, low in (("threads", threads, 1), ("runs", runs, 1),
                                 ("warmup", warmup, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ArgumentError(f"LatencyModel.measure: {name} must be an int >= {low}, "
                                    f"got {value!r}")
        if not isinstance(refresh, bool):
            raise ArgumentError(f"LatencyModel.measure: refresh must be True or False, "
                                f"got {refresh!r}")
        calls, op_calls, unmodelled, input_shapes = _read(model, input_shape)
        machine = machine_info()
        path = cache_path(cache_dir, machine)
        cache = load(path)
        changed, fresh, loads = False, set(), []

        def timed(key: str, measure):
            nonlocal changed
            if key not in cache or (refresh and key not in fresh):
                cache[key] = {**measure(), "load": load_average()}
                changed = True
                fresh.add(key)
            if cache[key].get("load") is not None:
                loads.append(cache[key]["load"])
            return cache[key]

        base = ProbeSpec("conv", (1, 1), (1, 1))
        overhead = timed(_key("overhead", base, 1, 1, threads),
                         lambda: {"ms": time_file(probe_file(base, 1, 1), threads, runs, warmup)})
        curves = {}
        for kind in sorted({curve_kind(spec.kind) for _, _, _, spec, _, _ in calls}):
            entry = timed(_key("curve", ProbeSpec(kind, (0, 0), (0, 0)), 0, 0, threads),
                          lambda: dataclasses.asdict(measure_curve(kind, threads, runs, warmup)))
            curves[kind] = WidthCurve(entry["widths"], entry["ms"])
        layers = []
        for name, occurrence, class_name, spec, cin, cout in calls:
            points = timed(_key("layer", spec, cin, cout, threads),
                           lambda: _measure(spec, cin, cout, threads, runs, warmup))["points"]
            curve = curves[curve_kind(spec.kind)]
            layers.append(LayerCost(name, occurrence, class_name, spec, cin, cout,
                                    tuple(fit(points, curve)), points, curve))
        ops = []
        for name, occurrence, class_name, spec, channels in op_calls if elementwise else ():
            points = timed(_op_key(spec, channels, threads),
                           lambda: _measure_op(spec, channels, threads, runs, warmup))["points"]
            ops.append(elementwise_.OpCost(name, occurrence, class_name, spec, channels,
                                           elementwise_.fit(points), points))
        extra = []
        if graph and layers:
            extra = timed(key("graph", graph_.cache_spec(layers), 0, 0, threads,
                              [list(WIDTHS), list(CURVE_WIDTHS)]),  # the fits it subtracts
                          lambda: {"points": graph_.measure(layers, float(overhead["ms"]),
                                                            threads, runs, warmup)})["points"]
        if changed and path is not None:
            save(path, machine, cache)
        # the probe itself runs `threads` busy threads; the rest of the load is other work
        busy = (round(max(0.0, max(loads) - threads) / (os.cpu_count() or 1), 2)
                if loads else None)
        if busy is not None and busy > BUSY:
            logger.warning(
                "keras_slim: some latency probes for %r were timed while other work kept "
                "%.1f of every core busy (load average %.1f on %d cores), so the estimates "
                "are high; measure again on a quiet machine with "
                "LatencyModel.measure(..., refresh=True)%s",
                getattr(model, "name", "the model"), busy, max(loads), os.cpu_count() or 1,
                "" if path is None else f" (cache: {path})")
        return cls(threads, machine, float(overhead["ms"]), curves, layers, unmodelled,
                   input_shapes, ops, extra, busy)

    def estimate(self, layers: Sequence) -> float:
        """Estimated ms of the model at each row's `channels_after` (rows: `Plan.layers`)."""
        costs = {(c.name, c.occurrence): c for c in self.layers}
        ops = {(c.name, c.occurrence): c for c in self.ops}
        seen: dict = {}
        total, mb = self.overhead_ms, 0.0
        for row in layers:
            occurrence = seen[row.name] = seen.get(row.name, -1) + 1
            cost = costs.get((row.name, occurrence))
            if cost is not None:
                cin, cout = cost.widths(row.channels_after, row.macs_after)
                total += max(cost.ms(cin, cout) - self.overhead_ms, 0.0) if cout else 0.0
                mb += graph_.weights_mb(cost.spec, cin, cout) if cout else 0.0
            op = ops.get((row.name, occurrence))
            if op is not None and row.channels_after:
                total += max(op.ms(row.channels_after) - self.overhead_ms, 0.0)
        return total + graph_.extra_ms(self.graph, mb)

    def preferred_multiple(self) -> int:
        """The channel step this machine's runtime prefers (`plan(..., round_to="auto")`).

        The largest of 1, 2, 4, ..., 64 that rounding a width up to costs
        (nearly) nothing on the width curves of this model's layer kinds,
        weighted by the model's estimated time in each kind
        (`_latency_probes.preferred_multiple`); 1 when no step is free or
        the curves are too noisy to tell. On the AVX512 Xeon of
        benchmarks/results/speedup_efficiency_profile.md: 32 for convs and
        dense layers, 16 for depthwise convs alone, 32 for a model mostly in
        convs. It is derived from the curves and fits alone, which the cache
        keeps, so a model read from the cache gives the same answer.
        """
        share: dict = {}
        for c in self.layers:
            kind = curve_kind(c.spec.kind)
            share[kind] = share.get(kind, 0.0) + max(c.ms(c.cin, c.cout) - self.overhead_ms, 0.0)
        return curves_multiple(self.curves, share if sum(share.values()) > 0 else None)

    def estimate_model(self, model) -> float:
        """Estimated ms of `model` (this model pruned: same layer names), at its own widths."""
        costs = {(c.name, c.occurrence): c for c in self.layers}
        calls, op_calls, _, _ = _read(model, self.input_shapes if len(self.input_shapes) > 1
                                      else self.input_shapes[0])
        total, mb = self.overhead_ms, 0.0
        ops = {(c.name, c.occurrence): c for c in self.ops}
        for name, occurrence, _, _, channels in op_calls:
            op = ops.get((name, occurrence))
            if op is not None:  # None: measured with elementwise=False
                total += max(op.ms(channels) - self.overhead_ms, 0.0)
        for name, occurrence, _, _, cin, cout in calls:
            cost = costs.get((name, occurrence))
            if cost is None:
                raise ArgumentError(f"estimate_model: layer {name!r} of model {model.name!r} "
                                    "is not in the model this latency model was measured on")
            total += max(cost.ms(cin, cout) - self.overhead_ms, 0.0)
            mb += graph_.weights_mb(cost.spec, cin, cout)
        return total + graph_.extra_ms(self.graph, mb)

    def table(self, layers: Sequence | None = None) -> str:
        """Per modelled layer: full widths and estimated ms (and at a plan's widths)."""
        after = {}
        if layers is not None:
            seen: dict = {}
            for row in layers:
                occurrence = seen[row.name] = seen.get(row.name, -1) + 1
                after[(row.name, occurrence)] = row
        lines = [f"{self.description}; invoke overhead {self.overhead_ms:.3f} ms"]
        if self.graph:
            lines.append("  graph term (weights MB: extra ms): " + ", ".join(
                f"{mb:.1f}: {ms:.3f}" for mb, ms in sorted(self.graph)))
        for c in self.layers:
            text = f"  {c.name} ({c.class_name}) {c.cin}->{c.cout}: {c.ms(c.cin, c.cout):.3f} ms"
            row = after.get((c.name, c.occurrence))
            if row is not None:
                cin, cout = c.widths(row.channels_after, row.macs_after)
                text += f"; at {cin:.0f}->{cout:.0f}: {c.ms(cin, cout):.3f} ms"
            lines.append(text)
        for c in self.ops:
            text = (f"  {c.name} ({c.class_name}: {elementwise_.describe(c.spec)}) "
                    f"{c.channels}: {c.ms(c.channels):.3f} ms")
            row = after.get((c.name, c.occurrence))
            if row is not None and row.channels_after is not None:
                text += f"; at {row.channels_after}: {c.ms(row.channels_after):.3f} ms"
            lines.append(text)
        return "\n".join(lines)


# ---------------------------------------------------------------- reading the model
def _read(model, input_shape):
    """([(row name, occurrence, class, ProbeSpec, cin, cout)] of the conv/dense calls,
    [(row name, occurrence, class, OpSpec, channels)] of the layers without MACs the
    exported file runs on their own, unmodelled classes, input shapes)."""
    from keras_slim import accounting
    from keras_slim.graph import FlatGraph
    from keras_slim.handlers.base import Handler
    from keras_slim.handlers.registry import HandlerResolver
    from keras_slim.planning import _graph_model, _mac_input

    resolver = HandlerResolver(None)
    graph = FlatGraph(_graph_model(model, input_shape, True), resolver)
    concrete, input_shapes, _ = _mac_input(graph, input_shape)
    shapes = graph.shapes if concrete is None else concrete
    out, ops, unmodelled, seen = [], [], [], {}
    for call in graph.calls:
        name = accounting.qualified_name(graph, call)
        occurrence = seen[name] = seen.get(name, -1) + 1
        if not call.inputs or not call.outputs:
            continue
        found = _spec(call.layer, shapes.get(call.inputs[0]), shapes.get(call.outputs[0]))
        if found is None:
            op = elementwise_.op_spec(graph, call, shapes)
            if op is not None:
                ops.append((name, occurrence, type(call.layer).__name__) + op)
                continue
            if type(resolver(call.layer)).macs is not Handler.macs:  # it has MACs: say so
                unmodelled.append(type(call.layer).__name__)
            continue
        out.append((name, occurrence, type(call.layer).__name__) + found)
    return out, ops, sorted(set(unmodelled)), [list(s) for s in input_shapes]


def _spec(layer, in_shape, out_shape):
    """(ProbeSpec, cin, cout) of a layer LiteRT runs as one conv/FC op, else None."""
    kind = next((_KINDS[c.__name__] for c in type(layer).__mro__ if c.__name__ in _KINDS), None)
    if kind is None or in_shape is None or out_shape is None:
        return None
    if any(d is None for d in tuple(in_shape[1:]) + tuple(out_shape[1:])):
        return None
    cin, cout = int(in_shape[-1]), int(out_shape[-1])
    act = getattr(getattr(layer, "activation", None), "__name__", "linear")
    if kind == "dense":
        rows = int(np.prod(in_shape[1:-1])) if len(in_shape) > 2 else 1
        return ProbeSpec("dense", (rows, 1), (rows, 1), activation=act), cin, cout
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return None
    two = len(in_shape) == 4

    def pair(v):
        v = tuple(v) if isinstance(v, (tuple, list)) else (v,)
        return tuple(int(i) for i in v) if two else (1, int(v[0]))

    hw = lambda s: tuple(int(d) for d in s[1:3]) if two else (1, int(s[1]))  # noqa: E731
    groups = getattr(layer, "groups", 1)
    multiplier = int(getattr(layer, "depth_multiplier", 1))
    if kind == "conv" and groups != 1:
        if groups != cin or cout % groups:
            return None  # grouped conv: not modelled
        kind, multiplier = "depthwise", cout // groups
    spec = ProbeSpec(kind, hw(in_shape), hw(out_shape), pair(layer.kernel_size),
                     pair(layer.strides), pair(layer.dilation_rate),
                     getattr(layer, "padding", "valid") != "valid", act, multiplier)
    return spec, cin, cout


# ---------------------------------------------------------------- measuring and fitting
def _key(kind: str, spec: ProbeSpec, cin: int, cout: int, threads: int) -> str:
    return key(kind, spec.key(), cin, cout, threads, [list(WIDTHS), list(CURVE_WIDTHS)])


def _op_key(spec, channels: int, threads: int) -> str:
    return key("op", spec.key(), channels, 0, threads, [list(WIDTHS)])


def _measure_op(spec, channels: int, threads: int, runs: int, warmup: int) -> dict:
    return {"points": [[c, time_file(elementwise_.probe_file(spec, c), threads, runs, warmup)]
                       for c in elementwise_.grid(spec, channels)]}


def _measure(spec: ProbeSpec, cin: int, cout: int, threads: int, runs: int, warmup: int) -> dict:
    if spec.kind == "depthwise":  # input and output channels go together
        pairs = [(c, c * spec.multiplier) for c in width_grid(cin)]
    else:
        pairs = list(itertools.product(width_grid(cin), width_grid(cout)))
    points = [[i, o, time_file(probe_file(spec, i, o), threads, runs, warmup)] for i, o in pairs]
    return {"points": points}


def fit(points: Sequence, curve: WidthCurve | None = None) -> list[float]:
    """(a, b, c, d) of ms = a + b*cin + c*G + d*cin*G, least squares with b, c, d >= 0.

    G is `curve(cout)` (cout itself without a curve). Every subset of the
    three width terms is fitted and the best one whose coefficients are all
    >= 0 is kept, so the estimate never grows with fewer input channels or
    a lower curve value.
    """
    p = np.asarray(points, np.float64)
    cin, ms = p[:, 0], p[:, 2]
    cout = np.array([curve(c) for c in p[:, 1]]) if curve is not None else p[:, 1]
    terms = np.stack([cin, cout, cin * cout], axis=1)
    best, best_err = [float(ms.mean()), 0.0, 0.0, 0.0], math.inf
    for k in range(1, 4):
        for subset in itertools.combinations(range(3), k):
            design = np.column_stack([np.ones(len(ms)), terms[:, subset]])
            sol, *_ = np.linalg.lstsq(design, ms, rcond=None)
            if (sol[1:] < 0).any():
                continue
            err = float(((design @ sol - ms) ** 2).sum())
            if err < best_err - 1e-15:
                coef = [float(sol[0]), 0.0, 0.0, 0.0]
                for j, s in zip(subset, sol[1:]):
                    coef[1 + j] = float(s)
                best, best_err = coef, err
    return best
