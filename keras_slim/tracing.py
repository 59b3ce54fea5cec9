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
shapes, and the same values on a random input (inference mode) at the shapes
the layer sees in the model (the graph resolves None axes at the reference
size). Anything else (value-dependent Python branches, backend-native ops such
as `tf.*`, the layer's own weights used in ops, a layer that builds state in
`call`) keeps the layer a barrier, and the reason names the layer and what
stopped the trace.

`Tracer` does this for one plan. A layer is traced together with the custom
layers inside it and checked once with all their traces in place (a nested
block is not re-run at every depth); only if that fails is each level checked
on its own. Failures are remembered per class + config + input shapes, and so
are passed checks: a repeated block is traced again (its weights are its own)
but not re-checked when its trace has the same structure.

(Over 400 lines: the trace, its training-branch and captured-weight checks and
the Tracer's caches share the fresh-input and functional helpers; apart, they
would import each other.)
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Callable

import numpy as np

from keras_slim import _keras, trace_check
from keras_slim.trace_check import first_line as _first_line, sample
from keras_slim.errors import TraceError

logger = logging.getLogger(__name__)

__all__ = ["Trace", "TraceError", "Tracer", "TrainingOnly", "is_candidate", "trace_call",
           "trace_model"]


@dataclasses.dataclass
class Trace:
    """The Functional model a layer call traced into."""

    model: object  # keras.Model named like the layer
    layer: object  # the traced layer
    args: tuple = ()  # the call's structure on the fresh inputs (for the check)
    kwargs: dict = dataclasses.field(default_factory=dict)
    inputs: list = dataclasses.field(default_factory=list)  # the fresh symbolic inputs
    children: dict = dataclasses.field(default_factory=dict)  # id(inner layer) -> Trace | TraceError
    child_calls: dict = dataclasses.field(default_factory=dict)  # id(inner layer) -> its Call
    signature: tuple | None = None  # class, config, input shapes (None: config unreadable)
    structure: tuple | None = None  # signature + traced ops, recursively (what a check proves)


def is_candidate(layer) -> bool:
    """A Keras 3 layer written outside Keras and keras_slim: worth tracing."""
    if not _keras.is_layer(layer) or _keras.is_tf_keras(layer) or _keras.is_graph_model(layer):
        return False
    module = type(layer).__module__
    return not module.startswith(("keras.", "keras_slim.")) and module != "keras"


def trace_call(layer, call: "_keras.Call", input_shapes: list | None = None) -> Trace:
    """Trace one call of `layer` and check it at `input_shapes` (default: the call's own)."""
    trace = _trace(layer, call)
    why = trace_check.mismatch(trace, trace.model, sample(trace.inputs, input_shapes))
    if why:
        raise TraceError(_reason(layer, why))
    return trace


class Tracer:
    """The traces of one plan call (see the module docstring).

    `resolve(layer) -> Handler`: a layer with a registered handler is not traced.
    """

    def __init__(self, resolve: Callable):
        self._resolve = resolve
        self.results: dict[int, Trace | TraceError] = {}  # id(layer) -> final answer
        self._failed: dict[tuple, str] = {}  # signature -> why it was not traced
        self._checked: set = set()  # structures whose numeric check passed
        self._training_only: set = set()  # signatures kept as layers (TrainingOnly)

    def wants(self, layer) -> bool:
        """A custom layer with no handler of its own (a registered one wins)."""
        from keras_slim.handlers.barrier import BarrierHandler

        return is_candidate(layer) and isinstance(self._resolve(layer), BarrierHandler)

    def trace(self, layer, call, input_shapes: Callable[[], list]) -> Trace | TraceError:
        """The checked trace of `layer` (or why not); `input_shapes()` gives the check's shapes."""
        done = self.results.get(id(layer))
        if done is None:
            tree = self._build(layer, call)
            if isinstance(tree, TraceError):
                self.results[id(layer)] = tree
            else:
                self._verify(tree, lambda: sample(tree.inputs, input_shapes()))
            done = self.results[id(layer)]
        return done

    # ------------------------------------------------------------ steps
    def _build(self, layer, call) -> Trace | TraceError:
        """Trace `layer` and, inside its trace, every custom layer it calls (unchecked)."""
        sig = _signature(layer, call)
        if sig is not None and sig in self._failed:
            why = self._failed[sig]
            if sig in self._training_only:
                return self._keep(layer, TrainingOnly(layer, why))
            return TraceError(_reason(layer, why))
        try:
            trace = _trace(layer, call)
        except TrainingOnly as e:
            if sig is not None:
                self._failed[sig] = e.why
                self._training_only.add(sig)
            return self._keep(layer, e)
        except TraceError as e:
            return self._fail(layer, sig, getattr(e, "why", str(e)))
        trace.signature = sig
        for c in _inner_calls(trace.model):
            if id(c.layer) not in trace.children and self.wants(c.layer):
                known = self.results.get(id(c.layer))
                trace.children[id(c.layer)] = known or self._build(c.layer, c)
                trace.child_calls[id(c.layer)] = c
        kids = [k.structure if isinstance(k, Trace) else "untraced"
                for k in trace.children.values()]
        if sig is not None and None not in kids:
            ops = tuple(type(c.layer).__name__ for c in _keras.read_model(trace.model).calls)
            trace.structure = (sig, ops, tuple(kids))
        return trace

    def _verify(self, trace: Trace, values: Callable[[], list]) -> None:
        """Check the whole tree at once; if that fails, each level on its own."""
        if trace.structure is not None and trace.structure in self._checked:
            return self._accept(trace)
        x = values()
        nested = any(isinstance(k, Trace) for k in trace.children.values())
        if nested and trace_check.mismatch(trace, trace_check.composed(trace), x) is None:
            return self._accept(trace)
        why = trace_check.mismatch(trace, trace.model, x)
        if why:
            self._fail(trace.layer, trace.signature, why)
            return
        self.results[id(trace.layer)] = trace
        for key, child in trace.children.items():
            if isinstance(child, TraceError):
                self.results.setdefault(key, child)
            elif key not in self.results:
                inner = trace_check.inner_values(trace, trace.child_calls[key], x)
                self._verify(child, lambda: inner if inner is not None else sample(child.inputs))

    def _accept(self, trace: Trace) -> None:
        self.results[id(trace.layer)] = trace
        if trace.structure is not None:
            self._checked.add(trace.structure)
        for key, child in trace.children.items():
            if isinstance(child, Trace):
                self._accept(child)
            else:
                self.results.setdefault(key, child)

    def _keep(self, layer, result: "TrainingOnly") -> "TrainingOnly":
        self.results[id(layer)] = result
        return result

    def _fail(self, layer, sig, why: str) -> TraceError:
        if sig is not None:
            self._failed[sig] = why
        error = TraceError(_reason(layer, why))
        error.why = why
        self.results[id(layer)] = error
        return error


def trace_model(model, input_shape=None):
    """A Functional model equivalent to subclassed `model` (given its input shape)."""
    if input_shape is not None:
        return _trace_model(model, input_shape, batch=True)
    shapes = _keras.build_input_shapes(model)
    if shapes is None:
        raise TraceError(
            f"subclassed model {model.name!r} ({type(model).__name__}) has no known input shape: "
            "call it on data once, build it (model.build((None, 224, 224, 3))), or pass "
            "input_shape=(224, 224, 3) (without the batch axis)")
    # a model built by a call on data recorded that batch's size: trace for any batch
    # (as model.build((None, ...)) does), unless its call needs the size it was built with
    single = _keras.is_single_shape(shapes)
    recorded = [tuple(s) for s in ([shapes] if single else shapes)]
    free = [(None,) + s[1:] for s in recorded]
    if free != recorded:
        try:
            return _trace_model(model, free[0] if single else free, batch=False)
        except TraceError:
            pass
    return _trace_model(model, shapes, batch=False)


def _trace_model(model, shapes, batch: bool):
    _check_no_activity_regularizer(model)
    single = _keras.is_single_shape(shapes)
    shape_list = [shapes] if single else list(shapes)
    inputs = [_keras.new_symbolic(tuple(s), batch=batch) for s in shape_list]
    args = (inputs[0],) if single else (inputs,)
    outputs = _run_call(model, args, {})
    functional = _functional(model, inputs if not single else inputs[0], outputs)
    why, _ = _training_difference(model, (args, {}), functional)
    if why:
        raise TraceError(_reason(model, why))
    traced, lifted = _lift_weights(model, functional)
    _check_no_captured_weights(model, traced, lifted)
    trace = Trace(traced, model, args, {}, inputs)
    why = trace_check.mismatch(trace, traced, sample(inputs))
    if why:
        raise TraceError(_reason(model, why))
    return traced


# ---------------------------------------------------------------- tracing
def _trace(layer, call) -> Trace:
    """Trace one call (unchecked): fresh inputs like the call's, the layer's call on them."""
    _check_no_activity_regularizer(layer)
    inputs, args, kwargs = _fresh((call.args, call.kwargs))
    outputs = _run_call(layer, args, kwargs)
    model = _functional(layer, inputs[0] if len(inputs) == 1 else inputs, outputs)
    _check_outputs(layer, call.outputs, outputs)
    why, mixing = _training_difference(layer, (call.args, call.kwargs), model)
    if why:
        if (mixing or _keras.read_model(model).calls or layer.trainable_weights
                or len(inputs) != 1 or len(_keras.flatten(outputs)) != 1):
            raise _error(layer, why)
        raise TrainingOnly(layer, why)
    model, lifted = _lift_weights(layer, model)
    _check_no_captured_weights(layer, model, lifted)
    return Trace(model, layer, args, kwargs, inputs)


class TrainingOnly(TraceError):
    """A weightless layer that is the identity at inference and acts only in training.

    Drop-path / stochastic-depth blocks (`if not training: return x`). A trace
    without the flag is the identity and would drop what the layer does in
    `fit`, so the layer is kept as it is and its channels pass through it, as
    through a stock Dropout.
    """

    def __init__(self, layer, why: str):
        super().__init__(f"{layer.name!r} ({type(layer).__name__}) is kept as a layer: it is "
                         f"the identity at inference and {why}")
        self.why = why


def _op_types(model) -> list[str]:
    return [type(c.layer).__name__ for c in _inner_calls(model)]


# Ops that can combine values across the channel axis (or move it): a training-only
# branch using one is not channel-wise, so its layer cannot pass channels through.
_AXIS_OPS = {"Mean", "Max", "Min", "Sum", "Std", "Var", "Prod", "Softmax", "LogSoftmax",
             "Concatenate", "Split", "GetItem", "Reshape", "Transpose", "Einsum", "Matmul",
             "Dot", "Take", "TakeAlongAxis", "Sort", "Argsort", "Cumsum", "Cumprod", "Roll",
             "Flip", "Tile", "Repeat", "Stack", "Pad", "Norm", "Top_k", "TopK", "Argmax",
             "Argmin", "Squeeze", "ExpandDims", "Swapaxes", "Moveaxis"}


def _training_difference(layer, structure, traced) -> tuple[str | None, bool]:
    """Why the layer's `training=True` branch differs from its traced one (else None),
    and whether that branch uses an op over axes (`_AXIS_OPS`: not channel-wise).

    `training` is left unset while tracing, so `if training:` in the layer's own
    call takes the inference branch. Tracing once more with training=True shows
    whether that branch runs other ops; sublayer calls that only receive the flag
    run the same ones.
    """
    args, kwargs = structure
    if kwargs.get("training") is not None or not _keras.call_accepts(layer, "training"):
        return None, False  # its caller fixes the mode, or it has no training mode
    inputs, t_args, t_kwargs = _fresh(structure)
    try:
        with _keras.symbolic_weight_operators():
            outputs = layer.call(*t_args, **dict(t_kwargs, training=True))
        training = _functional(layer, inputs[0] if len(inputs) == 1 else inputs, outputs)
    except Exception as e:
        return (f"its call(training=True) cannot be traced ({type(e).__name__}: "
                f"{_first_line(e)}), so what it does in training would be lost"), True
    a, b = _op_types(traced), _op_types(training)
    if a == b:
        return None, False
    extra = sorted(set(b) - set(a)) or sorted(set(a) - set(b)) or b
    return (f"its call() runs other ops with training=True ({', '.join(extra[:4])}), which a "
            "trace (made without the flag) would drop from the pruned model's training"), \
        bool(set(b) & _AXIS_OPS)


def _check_no_activity_regularizer(layer) -> None:
    """`Layer.__call__` adds the activity regularizer's loss outside `call`: a trace would
    drop it from `model.losses`, so such a layer is kept as it is."""
    if getattr(layer, "activity_regularizer", None) is not None:
        raise _error(layer, "its activity_regularizer is applied outside call(), so a trace "
                            "would drop its loss")


def _fresh(structure) -> tuple[list, tuple, dict]:
    """New symbolic tensors like those in a call's (args, kwargs): (inputs, args, kwargs)."""
    tensors = _keras.tensors_in(structure)
    fresh = {id(t): _keras.symbolic_like(t) for t in tensors}
    args, kwargs = _keras.map_tensors(structure, lambda t: fresh[id(t)])
    return [fresh[id(t)] for t in tensors], args, kwargs


def _run_call(layer, args, kwargs):
    try:
        with _keras.symbolic_weight_operators():
            outputs = layer.call(*args, **kwargs)
    except Exception as e:  # the reason is the message: Python branch on a value, tf.* op, ...
        raise _error(layer, _call_failure(e)) from e
    leaves = _keras.flatten(outputs)
    bad = [type(x).__name__ for x in leaves if not _keras.is_tensor(x)]
    if not leaves or bad:
        raise _error(layer, f"its call() returned {bad or 'nothing'} instead of "
                            "symbolic tensors (a backend-native op?)")
    return outputs


def _call_failure(e: Exception) -> str:
    text = _first_line(e)
    if "cannot be used as input to a TensorFlow function" in str(e):
        # The usual cause in Keras 3 code: `self.w * x` runs the backend's multiply on
        # the variable; `x * self.w` (or keras.ops.multiply) records a traceable op.
        return ("its call() passes a symbolic tensor to a TensorFlow function: a `tf.*` op, "
                "or one of its weights on the left of an operator (`self.scale * x` runs "
                "TensorFlow's multiply; `x * self.scale` or keras.ops.multiply traces). "
                "Register a handler for it, or write it with keras.ops "
                f"({type(e).__name__}: {text})")
    return f"its call() cannot run on symbolic tensors ({type(e).__name__}: {text})"


def _functional(layer, inputs, outputs):
    import keras

    try:
        return keras.Model(inputs, outputs, name=layer.name)
    except Exception as e:
        raise _error(layer, f"its traced ops do not form a graph from its inputs "
                            f"({type(e).__name__}: {_first_line(e)})") from e


def _check_outputs(layer, original: list, outputs) -> None:
    traced = _keras.flatten(outputs)
    want = [tuple(t.shape) for t in original]
    got = [tuple(t.shape) for t in traced]
    if len(want) != len(got) or any(not _compatible(a, b) for a, b in zip(want, got)):
        raise _error(layer, f"the trace gives outputs {got}, the model has {want}")


def _lift_weights(layer, model):
    """Replace each binary op on one of the layer's own weights by a WeightedOp layer.

    The weight then belongs to the traced (and so the pruned) model: trainable,
    saved, and sliced with its channels by the WeightedOp handler. Ops that use a
    weight in any other way are left for `_check_no_captured_weights` to refuse.
    """
    import keras

    graph = _keras.read_model(model)
    lifted_ids: set = set()
    if not any(_keras.variables_in((c.args, c.kwargs)) for c in graph.calls
               if not _keras.is_layer(c.layer)):
        return model, lifted_ids
    names = {c.layer.name for c in graph.calls}

    def run(index, c, args, kwargs):
        lifted = _weighted_op(c, names) if not _keras.is_layer(c.layer) else None
        if lifted is None:
            return c.layer, c.layer(*args, **kwargs)
        new, variable = lifted
        lifted_ids.add(id(variable))
        outputs = new(next(a for a in args if _keras.is_tensor(a)))
        new.set_weights([np.asarray(variable.numpy())])
        return new, outputs

    inputs, outputs, _ = _keras.replay(graph, run)
    return keras.Model(inputs, outputs, name=model.name), lifted_ids


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


def _check_no_captured_weights(layer, model, lifted: set) -> None:
    """The layer's own weights used in keras.ops would not be weights of the rebuilt model.

    Nor would a weight used only in an expression of weights alone (`1 + self.w`,
    `ops.exp(self.w)`): that runs eagerly while tracing, and its value would be
    frozen into the graph as a constant, so fine-tuning the pruned model would not
    train it. Such a trace is refused when its ops read a concrete tensor and some
    weight of the layer reaches the graph neither through a sublayer nor lifted.
    """
    graph = _keras.read_model(model)
    frozen = False
    for c in graph.calls:
        if _keras.is_layer(c.layer):
            continue
        captured = _keras.variables_in((c.args, c.kwargs))
        if captured:
            raise _error(
                layer, f"it uses its own weights {captured} in the op "
                       f"{type(c.layer).__name__}, in a way keras_slim cannot lift into a layer "
                       "(only a binary add/subtract/multiply/divide/maximum/minimum of a "
                       "tensor and one weight is)")
        frozen = frozen or any(_keras.is_concrete_tensor(a)
                               for a in _keras.flatten((c.args, c.kwargs)))
    if not frozen:
        return
    present = set(lifted)
    for c in graph.calls:
        if _keras.is_layer(c.layer):
            present.update(id(w) for w in c.layer.weights)
    missing = [_keras.weight_name(w) for w in layer.weights if id(w) not in present]
    if missing:
        raise _error(
            layer, f"its weights {missing} reach its ops only through values computed from "
                   "weights alone (such as `1 + self.w` or `ops.exp(self.w)`), which tracing "
                   "would freeze into constants that fine-tuning no longer trains; write the "
                   "expression with the input tensor first (`x * self.w + x`), or register a "
                   "handler for the layer")


def _inner_calls(model) -> list:
    """The calls of a traced model, nested graph models' calls included."""
    out = []
    for c in _keras.read_model(model).calls:
        if _keras.is_graph_model(c.layer):
            out += _inner_calls(c.layer)
        else:
            out.append(c)
    return out


# ---------------------------------------------------------------- helpers
def _signature(layer, call) -> tuple | None:
    """Class, config (without the name) and call structure: what decides a trace."""
    try:
        config = {k: v for k, v in layer.get_config().items() if k != "name"}
        shape = _keras.map_tensors((call.args, call.kwargs),
                                   lambda t: ("tensor", tuple(t.shape), str(t.dtype)))
        return (type(layer), repr(config), repr(shape))
    except Exception:  # a config that cannot be read: no sharing
        return None


def _compatible(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b))


def _error(layer, why: str) -> TraceError:
    error = TraceError(_reason(layer, why))
    error.why = why
    return error


def _reason(layer, why: str) -> str:
    return f"{layer.name!r} ({type(layer).__name__}) was not traced: {why}"
