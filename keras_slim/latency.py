"""What `plan(target_latency_ms=...)` needs from a latency model: an estimate per plan.

The core never measures anything: it asks a latency model for the
estimated latency (ms) of the plan's layer table (`Plan.layers`: each
layer's output channels and MACs before and after) and bisects the ranking
until the estimate meets the target, as it does for MACs. A latency model
is any object with

    estimate(layers: list[LayerPlan]) -> float   # ms, with each layer at channels_after
    description: str                              # what the estimate is, for the report

or a plain function `layers -> ms`. keras_slim's own is
`keras_slim.export.LatencyModel.measure(model, threads=...)`: a per-layer
model measured once with LiteRT on this machine (and cached);
`keras_slim.export.check_latency` compares its estimate with the measured
latency of the whole exported model.
"""
from __future__ import annotations

from typing import Callable, Protocol, Sequence, runtime_checkable

from keras_slim.errors import ArgumentError, ArgumentTypeError


@runtime_checkable
class LatencyEstimator(Protocol):
    """A latency model for `plan(target_latency_ms=..., latency_model=...)`."""

    description: str

    def estimate(self, layers: Sequence) -> float:
        """Estimated latency (ms) of the model with every layer at its `channels_after`."""
        ...


class _Function:
    """A plain `layers -> ms` function as a LatencyEstimator."""

    def __init__(self, fn: Callable):
        self._fn = fn
        self.description = f"{getattr(fn, '__qualname__', type(fn).__name__)} (user function)"

    def estimate(self, layers: Sequence) -> float:
        return self._fn(layers)


def estimator(model, latency_model, input_shape) -> LatencyEstimator:
    """The latency model to plan with (the one given: the core measures nothing)."""
    if latency_model is None:
        # The core never imports its extensions, and measuring needs LiteRT (the export
        # extra): the caller measures the model and passes it.
        raise ArgumentError(
            "target_latency_ms needs latency_model=: measure one with "
            "lm = keras_slim.export.LatencyModel.measure(model, threads=1) (LiteRT on this "
            "machine, cached), or pass a function layers -> ms; then "
            "plan(model, target_latency_ms=..., latency_model=lm)")
    if isinstance(latency_model, LatencyEstimator):
        return latency_model
    if callable(latency_model):
        return _Function(latency_model)
    raise ArgumentTypeError(f"latency_model must have estimate(layers) -> ms (e.g. "
                            f"keras_slim.export.LatencyModel.measure(model)) or be a function "
                            f"layers -> ms, got {type(latency_model).__name__}")


def estimate(latency: LatencyEstimator, layers: Sequence) -> float:
    """`latency.estimate(layers)` as a checked float (ms)."""
    value = latency.estimate(layers)
    try:
        ms = float(value)
    except (TypeError, ValueError):
        raise ArgumentTypeError(f"latency model {latency.description!r} returned {value!r}, "
                                "not a number of milliseconds") from None
    if not ms >= 0:
        raise ArgumentError(f"latency model {latency.description!r} estimated {ms} ms; it "
                            "must be a number >= 0")
    return ms
