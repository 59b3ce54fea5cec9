"""Layer class -> Handler registry, and how users register their own layer."""
from __future__ import annotations

from typing import Type

from keras_slim import _keras
from keras_slim.handlers.base import Handler

_BY_CLASS: dict[type, Handler] = {}
_BY_OP_NAME: dict[str, Handler] = {}


def register_handler(layer_class: Type, handler: Handler) -> None:
    """Tell keras_slim how channels flow through `layer_class` and its subclasses.

    Example:

        class MyScaleHandler(keras_slim.Handler):
            shares_channels = True
            def flow(self, ctx, ins):
                return [ins[0]]                      # channel-wise: pass through
            def rebuild(self, layer, in_keep, out_keep):
                return layer.get_config(), keras_slim.slice_weights(
                    layer, {"scale": [(-1, out_keep[0])]})

        keras_slim.register_handler(MyScale, MyScaleHandler())

    A layer with no handler is a barrier: every channel reaching it is kept and
    a warning names it. The most specific registered class wins.
    """
    if not isinstance(layer_class, type):
        raise TypeError(f"register_handler: expected a layer class, got {layer_class!r}")
    if not isinstance(handler, Handler):
        raise TypeError(
            f"register_handler: expected a keras_slim.Handler instance, got {handler!r}"
        )
    _BY_CLASS[layer_class] = handler


def register_op(op_class_name: str, handler: Handler) -> None:
    """Handler for a stateless `keras.ops` operation that appears in a graph (`x + 3`)."""
    _BY_OP_NAME[op_class_name] = handler


def get_handler(layer) -> Handler:
    from keras_slim.handlers import builtin  # noqa: F401  (registers defaults)

    for cls in type(layer).__mro__:
        if cls in _BY_CLASS:
            return _BY_CLASS[cls]
    if _keras.is_tf_keras(layer):  # Keras 2 layers use the handler of their Keras 3 twin
        twin = _keras.keras3_class(type(layer))
        if twin is not None:
            for cls in twin.__mro__:
                if cls in _BY_CLASS:
                    return _BY_CLASS[cls]
    if type(layer).__module__.startswith("keras.src.ops"):
        handler = _BY_OP_NAME.get(type(layer).__name__)
        if handler is not None:
            return handler
    from keras_slim.handlers.barrier import BARRIER

    return BARRIER
