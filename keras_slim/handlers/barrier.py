"""The fallback: a layer keras_slim does not understand keeps every channel."""
from __future__ import annotations

from keras_slim.handlers.base import Handler


class BarrierHandler(Handler):
    """Freezes the channels of every input and output; the result stays exact."""

    def __init__(self, reason: str | None = None):
        self.reason = reason

    def flow(self, ctx, ins):
        reason = self.reason or f"no handler for {type(ctx.layer).__name__}"
        why = ctx.trace_failure
        if why:
            reason += f"; {why}"
        return ctx.barrier(ins, reason)


BARRIER = BarrierHandler()
