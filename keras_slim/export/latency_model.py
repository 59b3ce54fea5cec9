"""A per-layer LiteRT latency model for `plan(target_latency_ms=...)`, and its check.

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
probe's time) plus each layer's fit minus that overhead, at the plan's
widths. Layers it does not model (pooling, Add, Concatenate, channel
selections, other layer types) count 0: `check_latency` says how much that
and the single-op timing miss, by exporting the pruned model and timing it.
`preferred_multiple()` reads the channel step the runtime likes off the
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
import tempfile
from typing import Sequence

import numpy as np

from keras_slim.errors import ArgumentError
from keras_slim.export._latency_cache import cache_path, key, load, machine_info, save
from keras_slim.export._latency_probes import (
    CURVE_WIDTHS, ProbeSpec, WidthCurve, curve_kind, measure_curve, probe_file, time_file,
)
from keras_slim.export._latency_probes import preferred_multiple as curves_multiple

logger = logging.getLogger(__name__)

WIDTHS = (0.25, 0.5, 0.75, 1.0)  # shares of each layer's channels it is timed at
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

    @property
    def description(self) -> str:
        return (f"LiteRT per-layer model ({len(self.layers)} layers, {self.threads} "
                f"thread{'s' if self.threads > 1 else ''}, {self.machine['cpu']})")

    @classmethod
    def measure(cls, model, threads: int = 1, input_shape=None, *, runs: int = 20,
                warmup: int = 5, cache_dir: str | os.PathLike | bool | None = None
                ) -> "LatencyModel":
        """Time `model`'s layers (or read them from the cache) and fit each one.

        Args:
            model: the unpruned model the plan is made from.
            threads: LiteRT threads (set explicitly, as `benchmark_tflite` does).
            input_shape: the input size (no batch axis) for models with None
                axes, as for `keras_slim.plan`; default: 224 per spatial axis.
            runs, warmup: timed and discarded invokes per probe (the fastest counts).
            cache_dir: where fits are kept; None: `$KERAS_SLIM_CACHE` or
                `~/.cache/keras_slim`; False: no cache (measure everything).
        """
        for name, value, low in (("threads", threads, 1), ("runs", runs, 1),
                                 ("warmup", warmup, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ArgumentError(f"LatencyModel.measure: {name} must be an int >= {low}, "
                                    f"got {value!r}")
        calls, unmodelled, input_shapes = _modelled_calls(model, input_shape)
        machine = machine_info()
        path = cache_path(cache_dir, machine)
        cache = load(path)
        changed = False

        def timed(key: str, measure):
            nonlocal changed
            if key not in cache:
                cache[key] = measure()
                changed = True
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
        if changed and path is not None:
            save(path, machine, cache)
        return cls(threads, machine, float(overhead["ms"]), curves, layers, unmodelled,
                   input_shapes)

    def estimate(self, layers: Sequence) -> float:
        """Estimated ms of the model at each row's `channels_after` (rows: `Plan.layers`)."""
        costs = {(c.name, c.occurrence): c for c in self.layers}
        seen: dict = {}
        total = self.overhead_ms
        for row in layers:
            occurrence = seen[row.name] = seen.get(row.name, -1) + 1
            cost = costs.get((row.name, occurrence))
            if cost is not None:
                cin, cout = cost.widths(row.channels_after, row.macs_after)
                total += max(cost.ms(cin, cout) - self.overhead_ms, 0.0) if cout else 0.0
        return total

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
        calls, _, _ = _modelled_calls(model, self.input_shapes if len(self.input_shapes) > 1
                                      else self.input_shapes[0])
        total = self.overhead_ms
        for name, occurrence, _, _, cin, cout in calls:
            cost = costs.get((name, occurrence))
            if cost is None:
                raise ArgumentError(f"estimate_model: layer {name!r} of model {model.name!r} "
                                    "is not in the model this latency model was measured on")
            total += max(cost.ms(cin, cout) - self.overhead_ms, 0.0)
        return total

    def table(self, layers: Sequence | None = None) -> str:
        """Per modelled layer: full widths and estimated ms (and at a plan's widths)."""
        after = {}
        if layers is not None:
            seen: dict = {}
            for row in layers:
                occurrence = seen[row.name] = seen.get(row.name, -1) + 1
                after[(row.name, occurrence)] = row
        lines = [f"{self.description}; invoke overhead {self.overhead_ms:.3f} ms"]
        for c in self.layers:
            text = f"  {c.name} ({c.class_name}) {c.cin}->{c.cout}: {c.ms(c.cin, c.cout):.3f} ms"
            row = after.get((c.name, c.occurrence))
            if row is not None:
                cin, cout = c.widths(row.channels_after, row.macs_after)
                text += f"; at {cin:.0f}->{cout:.0f}: {c.ms(cin, cout):.3f} ms"
            lines.append(text)
        return "\n".join(lines)


# ---------------------------------------------------------------- reading the model
def _modelled_calls(model, input_shape):
    """([(row name, occurrence, class, ProbeSpec, cin, cout)], unmodelled classes, input shapes)."""
    from keras_slim import accounting
    from keras_slim.graph import FlatGraph
    from keras_slim.handlers.base import Handler
    from keras_slim.handlers.registry import HandlerResolver
    from keras_slim.planning import _graph_model, _mac_input

    resolver = HandlerResolver(None)
    graph = FlatGraph(_graph_model(model, input_shape, True), resolver)
    concrete, input_shapes, _ = _mac_input(graph, input_shape)
    shapes = graph.shapes if concrete is None else concrete
    out, unmodelled, seen = [], [], {}
    for call in graph.calls:
        name = accounting.qualified_name(graph, call)
        occurrence = seen[name] = seen.get(name, -1) + 1
        if not call.inputs or not call.outputs:
            continue
        found = _spec(call.layer, shapes.get(call.inputs[0]), shapes.get(call.outputs[0]))
        if found is None:
            if type(resolver(call.layer)).macs is not Handler.macs:  # it has MACs: say so
                unmodelled.append(type(call.layer).__name__)
            continue
        out.append((name, occurrence, type(call.layer).__name__) + found)
    return out, sorted(set(unmodelled)), [list(s) for s in input_shapes]


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


def _grid(n: int) -> list[int]:
    return sorted({max(1, int(round(f * n))) for f in WIDTHS})


def _measure(spec: ProbeSpec, cin: int, cout: int, threads: int, runs: int, warmup: int) -> dict:
    if spec.kind == "depthwise":  # input and output channels go together
        pairs = [(c, c * spec.multiplier) for c in _grid(cin)]
    else:
        pairs = list(itertools.product(_grid(cin), _grid(cout)))
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


# ---------------------------------------------------------------- checking
@dataclasses.dataclass
class LatencyCheck:
    """An estimate against the measured latency of the whole exported model."""

    estimated_ms: float
    measured_ms: float  # median of `runs` invokes of the exported .tflite file
    min_ms: float
    threads: int
    runs: int
    estimate: str  # what made the estimate

    @property
    def error_pct(self) -> float:
        """(estimated - measured median) / measured median, in %."""
        return 100.0 * (self.estimated_ms - self.measured_ms) / self.measured_ms

    @property
    def error_min_pct(self) -> float:
        """The same against the fastest invoke (what the probes time: see time_file)."""
        return 100.0 * (self.estimated_ms - self.min_ms) / self.min_ms

    def __str__(self) -> str:
        return (f"latency: estimated {self.estimated_ms:.3f} ms, measured {self.measured_ms:.3f} "
                f"ms (median of {self.runs}, {self.threads} thread"
                f"{'s' if self.threads > 1 else ''}; min {self.min_ms:.3f}): prediction error "
                f"{self.error_pct:+.1f}% ({self.error_min_pct:+.1f}% against the min; "
                f"{self.estimate})")


def check_latency(plan_or_model, latency_model: LatencyModel | None = None, *,
                  runs: int = 50, warmup: int = 10, path: str | os.PathLike | None = None
                  ) -> LatencyCheck:
    """Export the pruned model, time the file in LiteRT and compare with the estimate.

    Args:
        plan_or_model: a `Plan` made by `keras_slim.plan` (its model is pruned
            with it), or a model pruned from the one `latency_model` measured.
        latency_model: the model that estimated the plan; None measures (or
            reads from the cache) the plan's model at 1 thread.
        runs, warmup: invokes of the exported file (median of runs).
        path: keep the exported .tflite file there (default: a temporary file).
    """
    from keras_slim.export.bench import benchmark_tflite
    from keras_slim.export.tflite import export_tflite
    from keras_slim.plan_data import Plan
    from keras_slim.pruning import prune

    if isinstance(plan_or_model, Plan):
        if plan_or_model._state is None:
            raise ArgumentError("check_latency: this plan was read from JSON and has no model; "
                                "pass keras_slim.prune(model, plan) and its latency model")
        shapes = plan_or_model.input_shapes
        shape = None if not plan_or_model.dynamic_input else (
            shapes[0] if len(shapes) == 1 else shapes)
        if latency_model is None:
            latency_model = LatencyModel.measure(plan_or_model._state.model, input_shape=shape)
        small = prune(plan_or_model._state.model, plan_or_model)
        estimated = latency_model.estimate(plan_or_model.layers)
    else:
        if latency_model is None:
            raise ArgumentError("check_latency: with a model, pass the latency_model measured "
                                "on the model it was pruned from")
        small = plan_or_model
        estimated = latency_model.estimate_model(small)
    shapes = latency_model.input_shapes
    with tempfile.TemporaryDirectory() as tmp:
        target = os.fspath(path) if path is not None else os.path.join(tmp, "model.tflite")
        export_tflite(small, target, verify=False,
                      input_shape=shapes[0] if len(shapes) == 1 else shapes)
        report = benchmark_tflite(target, threads=latency_model.threads, runs=runs,
                                  warmup=warmup)
    return LatencyCheck(estimated, report.median_ms, report.min_ms, latency_model.threads,
                        runs, latency_model.description)
