"""What `plan(target_latency_ms=...)` needs from a latency model: an estimate per plan.

The core never measures anything: it asks a latency model for the
estimated latency (ms) of the plan's layer table (`Plan.layers`: each
layer's output channels and MACs before and after) and bisects the ranking
until the estimate meets the target, as it does for MACs. A latency model
is any object with

    estimate(layers: list[LayerPlan]) -> float   # ms, with each layer at channels_after
    description: str                              # what the estimate is, for the report

or a plain function `layers -> ms`. Optionally it also has

    preferred_multiple() -> int   # the channel step the runtime runs fastest at (1: unknown)

which `plan(..., round_to="auto", latency_model=...)` rounds widths to (a
plain function has none: give `round_to=N` then). keras_slim's own is
`keras_slim.export.LatencyModel.measure(model, threads=...)`: a per-layer
model measured once with LiteRT on this machine (and cached);
`keras_slim.export.check_latency` compares its estimate with the measured
latency of the whole exported model.
"""
from __future__ import annotations

import numbers
from typing import Callable, Protocol, Sequence, runtime_checkable

from keras_slim.errors import ArgumentError, ArgumentTypeError


@runtime_checkable
class LatencyEstimator(Protocol):
    """A latency model for `plan(target_latency_ms=..., latency_model=...)`.

    `preferred_multiple() -> int` is optional (for `round_to="auto"`), so it
    is not part of this protocol: `isinstance` checks only what every
    latency model has.
    """

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


def preferred_multiple(latency_model) -> tuple[int, str]:
    """`round_to="auto"`: (the multiple `latency_model` prefers, the model's description)."""
    if latency_model is None:
        raise ArgumentError(
            "round_to='auto' needs latency_model=, whose width curves say which channel step "
            "the runtime runs fastest at: lm = keras_slim.export.LatencyModel.measure(model, "
            "threads=1) (LiteRT on this machine, cached), then plan(model, ..., "
            "round_to='auto', latency_model=lm); or give round_to=N (e.g. 32 on x86 AVX512)")
    ask = getattr(latency_model, "preferred_multiple", None)
    what = getattr(latency_model, "description", type(latency_model).__name__)
    if not callable(ask):
        raise ArgumentTypeError(
            f"round_to='auto' asks latency_model for preferred_multiple(), which {what!r} "
            f"({type(latency_model).__name__}) does not have (a plain function layers -> ms "
            "cannot say); use keras_slim.export.LatencyModel.measure(model), or give "
            "round_to=N")
    value = ask()
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ArgumentError(f"latency model {what!r} returned preferred_multiple() = {value!r}; "
                            "it must be an integer >= 1 (1: no preference)")
    return int(value), str(what)
