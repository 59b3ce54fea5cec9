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


class RandomCropHandler(BarrierHandler):
    """RandomCrop: Keras 3 (through 3.15, keras-team/keras#21868) returns its input uncropped
    at inference while its output shape says cropped, so every shape after it is not the
    inference one. A barrier, and while its crop changes the shape no constant is folded."""

    def __init__(self):
        super().__init__("RandomCrop returns its input uncropped at inference (Keras "
                         "#21868), unlike its output shape")

    def misstates_shapes(self, layer, in_shapes, out_shapes) -> str | None:
        if tuple(in_shapes[0][1:-1]) == tuple(out_shapes[0][1:-1]):
            return None
        return (f"{layer.name!r} (RandomCrop) crops {tuple(in_shapes[0][1:-1])} to "
                f"{tuple(out_shapes[0][1:-1])} in the graph but not at inference "
                "(keras-team/keras#21868)")
