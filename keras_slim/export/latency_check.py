"""Check a latency estimate against the measured latency of the whole exported model."""
from __future__ import annotations

import dataclasses
import os
import tempfile

from keras_slim.errors import ArgumentError
from keras_slim.export.latency_model import LatencyModel


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
        path: keep the exported .tflite file there (default: a temporary file). It is
            laid out for the latency model's thread count (`export_tflite(for_threads=)`).
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
        export_tflite(small, target, verify=False, for_threads=latency_model.threads,
                      input_shape=shapes[0] if len(shapes) == 1 else shapes)
        report = benchmark_tflite(target, threads=latency_model.threads, runs=runs,
                                  warmup=warmup)
    return LatencyCheck(estimated, report.median_ms, report.min_ms, latency_model.threads,
                        runs, latency_model.description)
