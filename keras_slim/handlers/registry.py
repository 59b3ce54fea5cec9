"""Layer class -> Handler lookup: user registrations, then the built-ins.

Three layers of lookup, most specific first: the `custom_handlers=` of one
`plan`/`prune` call (by layer name or class), then `register_handler`
registrations, then keras_slim's built-in handlers. Within each, the most
specific class of the layer's MRO wins. Built-ins live in their own table,
so registering before or after they load makes no difference.
"""
from __future__ import annotations

from typing import Mapping, Type

from keras_slim import _keras
from keras_slim.handlers.base import Handler
from keras_slim.errors import ArgumentTypeError

_BUILTIN: dict[type, Handler] = {}
_USER: dict[type, Handler] = {}
_BY_OP_NAME: dict[str, Handler] = {}


def _check(layer_class, handler, where: str) -> None:
    if not isinstance(layer_class, type):
        raise ArgumentTypeError(f"{where}: expected a layer class, got {layer_class!r} "
                        f"({type(layer_class).__name__}); pass the class itself, e.g. MyLayer")
    if not isinstance(handler, Handler):
        raise ArgumentTypeError(f"{where}: expected a keras_slim.Handler instance for "
                        f"{layer_class.__name__}, got {handler!r}; subclass keras_slim.Handler "
                        "and pass an instance (MyHandler(), not MyHandler)")


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
    a warning names it. Your registrations win over keras_slim's built-in
    handlers (also for Keras's own classes, whenever you register); among
    yours, the most specific class wins. A handler that does not implement
    `constant` passes no constants on, so channels that are constant but not
    zero stay in the model (the safe default). `unregister_handler` undoes it;
    `plan(..., custom_handlers=...)` scopes a handler to one call.
    """
    _check(layer_class, handler, "register_handler")
    _USER[layer_class] = handler


def unregister_handler(layer_class: Type) -> Handler | None:
    """Remove your registration for `layer_class`; return it (None if there was none).

    Built-in handlers cannot be removed; after this, a Keras class is handled
    by its built-in handler again.
    """
    if not isinstance(layer_class, type):
        raise ArgumentTypeError(f"unregister_handler: expected a layer class, got {layer_class!r}")
    return _USER.pop(layer_class, None)


def register_builtin(layer_class: Type, handler: Handler) -> None:
    """keras_slim's own handlers (handlers/builtin.py); users call register_handler."""
    _BUILTIN[layer_class] = handler


def register_op(op_class_name: str, handler: Handler) -> None:
    """Handler for a stateless `keras.ops` operation that appears in a graph (`x + 3`)."""
    _BY_OP_NAME[op_class_name] = handler


def _lookup(table: Mapping, layer) -> Handler | None:
    if not table:
        return None
    for cls in type(layer).__mro__:
        if cls in table:
            return table[cls]
    if _keras.is_tf_keras(layer):  # Keras 2 layers use the handler of their Keras 3 twin
        twin = _keras.keras3_class(type(layer))
        if twin is not None:
            for cls in twin.__mro__:
                if cls in table:
                    return table[cls]
    return None


class HandlerResolver:
    """Finds the handler of each layer for one plan: scoped, then user, then built-in."""

    def __init__(self, custom: Mapping | None = None):
        self.by_name: dict[str, Handler] = {}
        self.by_class: dict[type, Handler] = {}
        if custom is not None and not isinstance(custom, Mapping):
            raise ArgumentTypeError(
                f"custom_handlers must be a dict {{LayerClass or layer name: Handler()}}, got "
                f"{type(custom).__name__}: {custom!r:.80}")
        for key, handler in (custom or {}).items():
            if isinstance(key, str):
                if not isinstance(handler, Handler):
                    raise ArgumentTypeError(f"custom_handlers[{key!r}]: expected a keras_slim.Handler "
                                    f"instance, got {handler!r}")
                self.by_name[key] = handler
            elif isinstance(key, type):
                _check(key, handler, "custom_handlers")
                self.by_class[key] = handler
            else:
                raise ArgumentTypeError(f"custom_handlers keys must be layer classes or layer names "
                                f"(str), got {key!r} ({type(key).__name__})")

    def __call__(self, layer) -> Handler:
        from keras_slim.handlers import builtin  # noqa: F401  (fills _BUILTIN once)

        handler = self.by_name.get(getattr(layer, "name", None))
        if handler is None:
            handler = (_lookup(self.by_class, layer) or _lookup(_USER, layer)
                       or _lookup(_BUILTIN, layer))
        if handler is not None:
            return handler
        if _keras.is_ops_node(layer):
            handler = _BY_OP_NAME.get(type(layer).__name__)
            if handler is not None:
                return handler
        from keras_slim.handlers.barrier import BARRIER

        return BARRIER


def get_handler(layer) -> Handler:
    """The handler `plan` would use for `layer` (no scoped handlers)."""
    return HandlerResolver()(layer)
