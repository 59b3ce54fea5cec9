"""Trace: read a custom layer (or a subclassed model) as the graph of stock layers it is.

A layer keras_slim has no handler for used to be a barrier. Most custom layers
(keras-hub's blocks, everyone's `ConvBNAct`) only call stock sublayers and
`keras.ops` in their `call`: run that `call` on fresh symbolic inputs and the
sublayer calls and ops record nodes, which a Functional model built from those
tensors holds. That model is inlined like a nested model, so coupling and the
handlers see stock layers, and the rebuilt model is a plain Functional model.

`training` is not passed while tracing, so the traced graph takes the flag
from the model call at run time (BN trains during `fit` of the pruned model).

A trace is used only if it reproduces the layer: same output structure and
shapes, and the same values on a random input (inference mode). Anything else
(value-dependent Python branches, backend-native ops such as `tf.*`, the
layer's own weights used in ops, a layer that builds state in `call`) keeps the
layer a barrier, and the reason names the layer and what stopped the trace.
"""
from __future__ import annotations

import dataclasses
import logging

import numpy as np

from keras_slim import _keras
from keras_slim.errors import TraceError

logger = logging.getLogger(__name__)

# Unknown (None) dims of a layer's inputs get this size for the numeric check.
CHECK_DIM = 16
CHECK_TOLERANCE = 1e-4  # relative, float32


@dataclasses.dataclass
class Trace:
    """The Functional model a layer call traced into."""

    model: object  # keras.Model named like the layer
    layer: object  # the traced layer


def is_candidate(layer) -> bool:
    """A Keras 3 layer written outside Keras and keras_slim: worth tracing."""
    if not _keras.is_layer(layer) or _keras.is_tf_keras(layer) or _keras.is_graph_model(layer):
        return False
    module = type(layer).__module__
    return not module.startswith(("keras.", "keras_slim.")) and module != "keras"


def trace_call(layer, call: "_keras.Call") -> Trace:
    """Trace one call of `layer` (its tensors as in the model graph); raise TraceError."""
    tensors = _keras.tensors_in((call.args, call.kwargs))
    fresh = {id(t): _keras.symbolic_like(t) for t in tensors}
    args, kwargs = _keras.map_tensors((call.args, call.kwargs), lambda t: fresh[id(t)])
    inputs = [fresh[id(t)] for t in tensors]
    outputs = _run_call(layer, args, kwargs)
    model = _functional(layer, inputs[0] if len(inputs) == 1 else inputs, outputs)
    _check_outputs(layer, call.outputs, outputs)
    model = _lift_weights(layer, model)
    _check_no_captured_weights(layer, model)
    _check_values(layer, model, args, kwargs, inputs)
    return Trace(model, layer)


def trace_model(model, input_shape=None):
    """A Functional model equivalent to subclassed `model` (given its input shape)."""
    shapes = _keras.build_input_shapes(model) if input_shape is None else input_shape
    if shapes is None:
        raise TraceError(
            f"subclassed model {model.name!r} ({type(model).__name__}) has no known input shape: "
            "call it on data once, build it (model.build((None, 224, 224, 3))), or pass "
            "input_shape=(224, 224, 3) (without the batch axis)")
    single = _keras.is_single_shape(shapes)
    shape_list = [shapes] if single else list(shapes)
    inputs = [_keras.new_symbolic(tuple(s), batch=input_shape is not None) for s in shape_list]
    args = (inputs[0],) if single else (inputs,)
    outputs = _run_call(model, args, {})
    traced = _lift_weights(model, _functional(model, inputs if not single else inputs[0], outputs))
    _check_no_captured_weights(model, traced)
    _check_values(model, traced, args, {}, inputs)
    return traced


# ---------------------------------------------------------------- steps
def _run_call(layer, args, kwargs):
    try:
        outputs = layer.call(*args, **kwargs)
    except Exception as e:  # the reason is the message: Python branch on a value, tf.* op, ...
        raise TraceError(_reason(layer, f"its call() cannot run on symbolic tensors "
                                        f"({type(e).__name__}: {_first_line(e)})")) from e
    leaves = _keras.flatten(outputs)
    bad = [type(x).__name__ for x in leaves if not _keras.is_tensor(x)]
    if not leaves or bad:
        raise TraceError(_reason(layer, f"its call() returned {bad or 'nothing'} instead of "
                                        "symbolic tensors (a backend-native op?)"))
    return outputs


def _functional(layer, inputs, outputs):
    import keras

    try:
        return keras.Model(inputs, outputs, name=layer.name)
    except Exception as e:
        raise TraceError(_reason(layer, f"its traced ops do not form a graph from its inputs "
                                        f"({type(e).__name__}: {_first_line(e)})")) from e


def _check_outputs(layer, original: list, outputs) -> None:
    traced = _keras.flatten(outputs)
    want = [tuple(t.shape) for t in original]
    got = [tuple(t.shape) for t in traced]
    if len(want) != len(got) or any(not _compatible(a, b) for a, b in zip(want, got)):
        raise TraceError(_reason(layer, f"the trace gives outputs {got}, the model has {want}"))


def _lift_weights(layer, model):
    """Replace each binary op on one of the layer's own weights by a WeightedOp layer.

    The weight then belongs to the traced (and so the pruned) model: trainable,
    saved, and sliced with its channels by the WeightedOp handler. Ops that use a
    weight in any other way are left for `_check_no_captured_weights` to refuse.
    """
    import keras

    graph = _keras.read_model(model)
    if not any(_keras.variables_in((c.args, c.kwargs)) for c in graph.calls
               if not _keras.is_layer(c.layer)):
        return model
    names = {c.layer.name for c in graph.calls}

    def run(index, c, args, kwargs):
        lifted = _weighted_op(c, names) if not _keras.is_layer(c.layer) else None
        if lifted is None:
            return c.layer, c.layer(*args, **kwargs)
        new, variable = lifted
        outputs = new(next(a for a in args if _keras.is_tensor(a)))
        new.set_weights([np.asarray(variable.numpy())])
        return new, outputs

    inputs, outputs, _ = _keras.replay(graph, run)
    return keras.Model(inputs, outputs, name=model.name)


def _weighted_op(c, names: set):
    """(WeightedOp, variable) for `op(x, weight)` / `op(weight, x)`, else None."""
    import keras

    from keras_slim.layers import WeightedOp

    snake = "".join("_" + ch.lower() if ch.isupper() else ch for ch in type(c.layer).__name__)
    op = snake.lstrip("_")
    args = list(c.args)
    variables = [a for a in args if isinstance(a, keras.Variable)]
    tensors = [a for a in args if _keras.is_tensor(a)]
    if op not in WeightedOp.OPS or c.kwargs or len(args) != 2 or len(variables) != 1 \
            or len(tensors) != 1:
        return None
    variable = variables[0]
    base = _keras.weight_name(variable) or "weight"
    name, k = base, 1
    while name in names:
        name, k = f"{base}_{k}", k + 1
    names.add(name)
    new = WeightedOp(op, tuple(variable.shape), weight_first=args[0] is variable,
                     weight_trainable=bool(variable.trainable), name=name)
    return new, variable


def _check_no_captured_weights(layer, model) -> None:
    """The layer's own weights used in keras.ops would not be weights of the rebuilt model."""
    for c in _keras.read_model(model).calls:
        if _keras.is_layer(c.layer):
            continue
        captured = _keras.variables_in((c.args, c.kwargs))
        if captured:
            raise TraceError(_reason(
                layer, f"it uses its own weights {captured} in the op "
                       f"{type(c.layer).__name__}, in a way keras_slim cannot lift into a layer "
                       "(only a binary add/subtract/multiply/divide/maximum/minimum of a "
                       "tensor and one weight is)"))


def _check_values(layer, model, args, kwargs, inputs) -> None:
    rng = np.random.default_rng(0)

    def sample(t):  # batch 2, CHECK_DIM for other unknown axes; zeros for non-float inputs
        shape = [d if d is not None else (2 if i == 0 else CHECK_DIM)
                 for i, d in enumerate(t.shape)]
        if "float" in str(t.dtype):
            return rng.normal(size=shape).astype(t.dtype)
        return np.zeros(shape, t.dtype)

    concrete = {id(t): sample(t) for t in inputs}
    try:
        c_args, c_kwargs = _keras.map_tensors((args, kwargs), lambda t: concrete[id(t)])
        want = _keras.flatten(layer(*c_args, **c_kwargs, **_inference(layer, c_kwargs)))
        got = _keras.flatten(model([concrete[id(t)] for t in inputs] if len(inputs) > 1
                                   else concrete[id(inputs[0])], training=False))
    except Exception as e:  # a layer that needs other sizes: no proof, no trace
        raise TraceError(_reason(layer, f"its trace could not be checked on a random input "
                                        f"({type(e).__name__}: {_first_line(e)})")) from e
    for a, b in zip(want, got):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        scale = max(1.0, float(np.abs(a).max()) if a.size else 1.0)
        if a.shape != b.shape or float(np.abs(a - b).max()) > CHECK_TOLERANCE * scale:
            raise TraceError(_reason(layer, "the traced graph computes something else than the "
                                            "layer (a Python branch or state in call()?)"))


# ---------------------------------------------------------------- helpers
def _inference(layer, kwargs) -> dict:
    if "training" in kwargs or not _keras.call_accepts(layer, "training"):
        return {}
    return {"training": False}


def _compatible(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b))


def _reason(layer, why: str) -> str:
    return f"{layer.name!r} ({type(layer).__name__}) was not traced: {why}"


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]
