"""Read a model once into a flat graph of layer calls.

Nested Functional/Sequential models are inlined: each call of a sub-model
gets a `scope` and its inner tensors get keys of their own, so a sub-model
called twice appears twice. Tensor keys are `(scope, id(KerasTensor))`;
aliases bind a sub-model's inputs/outputs to the caller's tensors.
"""
from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Sequence

from keras_slim import _keras, tracing

Key = tuple  # (scope, id(KerasTensor))

# MACs are counted at a concrete input size. Where the model leaves a spatial
# (non-batch, non-channel) axis as None and the user gives no input_shape, it
# is this: the keras-hub / ImageNet convention (keras.Input((None, None, 3))).
REFERENCE_DIM = 224


@dataclasses.dataclass
class FlatCall:
    index: int
    layer: Any
    scope: tuple
    call: _keras.Call  # original call (for argument structure at rebuild)
    inputs: list  # keys of the tensor arguments, in argument order
    outputs: list  # keys of the outputs


@dataclasses.dataclass
class SubmodelCall:
    """One call of a nested graph model: where its inputs/outputs are bound."""

    model: Any
    scope: tuple  # scope of the inner tensors
    inputs: list  # resolved keys of the inner model's inputs
    outputs: list  # resolved keys of the inner model's outputs


class FlatGraph:
    """All layer calls of a model, nested models inlined, in topological order."""

    def __init__(self, model, resolve=None, input_shapes: Sequence[tuple] | None = None):
        """`resolve(layer) -> Handler` decides which custom layers to trace (no handler).

        `input_shapes` (one per input, no batch axis; default: the model's, None
        spatial axes at REFERENCE_DIM) is where traces are checked numerically.
        """
        self.model = model
        self._tracer = tracing.Tracer(resolve) if resolve is not None else None
        self.traced: dict[tuple, object] = {}  # (scope, call position) -> traced Functional
        self.trace_failures: dict[int, str] = {}  # id(layer) -> why it stayed a barrier
        self.training_only: set[int] = set()  # id(layer): kept, channels pass (TrainingOnly)
        self._check_input = input_shapes
        self._concrete: dict[Key, tuple] | None = None  # shapes at _check_input, computed so far
        self._concrete_done = 0  # calls whose outputs are in _concrete
        self._concrete_failed: list[FlatCall] = []
        self.calls: list[FlatCall] = []
        self.shapes: dict[Key, tuple] = {}
        self.producer: dict[Key, int] = {}
        self.consumers: dict[Key, list[int]] = {}
        self.submodel_calls: dict[int, list[SubmodelCall]] = {}
        self.graphs: dict[int, _keras.ModelGraph] = {}
        self._alias: dict[Key, Key] = {}
        self.by_site: dict[tuple, FlatCall] = {}  # (scope, call position) -> call
        self.scope_graph: dict[tuple, _keras.ModelGraph] = {}
        top = self._graph(model)
        self.inputs = [self.key((), t) for t in _keras.flatten(top.inputs)]
        for t in _keras.flatten(top.inputs):
            self.shapes[self.key((), t)] = _keras.shape_of(t)
        self._inline(top, ())
        # after inlining: an output made by a nested or traced model is an alias by now
        self.outputs = [self.key((), t) for t in _keras.flatten(top.outputs)]
        for k in self.outputs:
            self.consumers.setdefault(k, []).append(-1)  # -1: a model output

    # -------------------------------------------------------------- keys
    def key(self, scope: tuple, tensor) -> Key:
        k = (scope, id(tensor))
        while k in self._alias:
            k = self._alias[k]
        return k

    def fanout(self, k: Key) -> int:
        return len(self.consumers.get(k, ()))

    def graph(self, model) -> _keras.ModelGraph:
        return self.graphs[id(model)]

    # -------------------------------------------------------------- building
    def _graph(self, model) -> _keras.ModelGraph:
        if id(model) not in self.graphs:
            self.graphs[id(model)] = _keras.read_model(model)
        return self.graphs[id(model)]

    def graph_at(self, scope: tuple) -> _keras.ModelGraph:
        return self.scope_graph[scope]

    # -------------------------------------------------------------- shapes
    def input_names(self) -> list[str]:
        """Names of the top-level inputs, in `self.inputs` order."""
        tensors = _keras.flatten(self.graph(self.model).inputs)
        return [_keras.input_name(t) or f"input {i}" for i, t in enumerate(tensors)]

    def has_dynamic_axes(self) -> bool:
        """True if some tensor has a None axis other than the batch axis."""
        return any(d is None for s in self.shapes.values() for d in s[1:])

    def concrete_shapes(self, input_shapes: Sequence[tuple]) -> tuple[dict, list]:
        """Every tensor's shape when the model inputs have `input_shapes` (batch axis included).

        Shapes go through the calls in topological order (Keras computes each
        layer's output spec). A call whose output Keras cannot compute keeps
        its declared shapes (None axes and all); those calls are returned too.
        """
        shapes = [tuple(s) for s in input_shapes]
        if shapes == self._reference_inputs():  # what the trace checks computed: go on from there
            self._advance_concrete()
            return {**self.shapes, **self._concrete}, list(self._concrete_failed)
        concrete = dict(zip(self.inputs, shapes))
        failed: list = []
        self._propagate(concrete, self.calls, failed)
        return {**self.shapes, **concrete}, failed

    def _propagate(self, shapes: dict, calls: Sequence[FlatCall], failed: list) -> None:
        """Add the output shapes of `calls` to `shapes` (keys -> shape), in order."""
        for call in calls:
            def shape_of(t, scope=call.scope):
                k = self.key(scope, t)
                if k in shapes:
                    return shapes[k]
                return self.shapes[k] if k in self.shapes else _keras.shape_of(t)

            outs = _keras.output_shapes(call.layer, call.call, shape_of)
            if outs is None or len(outs) != len(call.outputs):
                failed.append(call)
                continue
            for k, shape in zip(call.outputs, outs):
                shapes[k] = shape

    def _reference_inputs(self) -> list[tuple]:
        """The input shapes (batch axis included) traces are checked at."""
        own = [self.shapes[k] for k in self.inputs]
        shapes, _ = resolve_input_shapes(own, self.input_names(), self._check_input,
                                         self.model.name)
        return [(m[0],) + tuple(s) for m, s in zip(own, shapes)]

    def _advance_concrete(self) -> None:
        if self._concrete is None:
            self._concrete = dict(zip(self.inputs, self._reference_inputs()))
        self._propagate(self._concrete, self.calls[self._concrete_done:], self._concrete_failed)
        self._concrete_done = len(self.calls)

    def _check_shapes(self, in_keys: list) -> list:
        """Shapes of these tensors as the model runs at the reference input size."""
        declared = [self.shapes.get(k) for k in in_keys]
        if all(s is not None and None not in s[1:] for s in declared):
            return declared
        self._advance_concrete()
        return [self._concrete.get(k, s) for k, s in zip(in_keys, declared)]

    def _inline(self, graph: _keras.ModelGraph, scope: tuple) -> None:
        self.scope_graph[scope] = graph
        seen: dict[int, set] = {}  # id(layer) -> the input shapes it is called at here
        for call in graph.calls:
            seen.setdefault(id(call.layer), set()).add(_input_shapes(call))
        multi = {k for k, v in seen.items() if len(v) > 1}
        for ci, call in enumerate(graph.calls):
            in_tensors = _keras.tensors_in((call.args, call.kwargs))
            in_keys = [self.key(scope, t) for t in in_tensors]
            if _keras.is_graph_model(call.layer):
                self._inline_submodel(call, in_keys, scope + (ci,), scope)
                continue
            traced = self._trace(call, in_keys, multi)
            if traced is not None:
                self.traced[(scope, ci)] = traced
                self._inline_submodel(call, in_keys, scope + (ci,), scope, traced)
                continue
            index = len(self.calls)
            out_keys = [self.key(scope, t) for t in call.outputs]
            for k, t in zip(out_keys, call.outputs):
                self.shapes[k] = _keras.shape_of(t)
                self.producer[k] = index
            for k in in_keys:
                self.consumers.setdefault(k, []).append(index)
            flat = FlatCall(index, call.layer, scope, call, in_keys, out_keys)
            self.calls.append(flat)
            self.by_site[(scope, ci)] = flat

    def _trace(self, call, in_keys, multi: set):
        """The Functional model a handler-less custom layer traces into, else None."""
        layer = call.layer
        if self._tracer is None or not self._tracer.wants(layer):
            return None  # not custom, or a registered handler says how channels flow
        if id(layer) in multi:  # one trace cannot serve both: keep every call whole
            self.trace_failures[id(layer)] = (f"{layer.name!r} is called at several input "
                                              "shapes; a traced layer must be called at one")
            return None
        # one trace per layer object (checked where it is first called), reused by its other calls
        done = self._tracer.trace(layer, call, lambda: self._check_shapes(in_keys))
        if isinstance(done, tracing.TrainingOnly):
            self.training_only.add(id(layer))
            return None
        if isinstance(done, tracing.TraceError):
            self.trace_failures[id(layer)] = str(done)
            return None
        if not _same_inputs(done, call):  # called again at other shapes: keep that call whole
            self.trace_failures[id(layer)] = (f"{layer.name!r} is called at several input "
                                              "shapes; a traced layer must be called at one")
            return None
        return done.model

    def _inline_submodel(self, call, in_keys, inner_scope, outer_scope, model=None) -> None:
        model = call.layer if model is None else model
        sub = self._graph(model)
        inner_inputs = _keras.flatten(sub.inputs)
        if len(inner_inputs) != len(in_keys):
            raise ValueError(
                f"nested model {call.layer.name!r} was called with {len(in_keys)} "
                f"tensors but has {len(inner_inputs)} inputs; keras_slim cannot "
                "bind them (call it with exactly its inputs)."
            )
        for t, k in zip(inner_inputs, in_keys):
            self._alias[(inner_scope, id(t))] = k
        self._inline(sub, inner_scope)
        inner_outputs = [self.key(inner_scope, t) for t in _keras.flatten(sub.outputs)]
        for t, k in zip(call.outputs, inner_outputs):
            self._alias[(outer_scope, id(t))] = k
        self.submodel_calls.setdefault(id(model), []).append(
            SubmodelCall(model, inner_scope, list(in_keys), inner_outputs)
        )


def _input_shapes(call) -> tuple:
    return tuple(tuple(t.shape) for t in _keras.tensors_in((call.args, call.kwargs)))


def _same_inputs(trace, call) -> bool:
    """A trace made at one call serves another call with the same input shapes."""
    ours = [tuple(t.shape) for t in _keras.flatten(trace.model.inputs)]
    theirs = [tuple(t.shape) for t in _keras.tensors_in((call.args, call.kwargs))]
    return ours == theirs


def resolve_input_shapes(model_shapes: Sequence[tuple], names: Sequence[str], input_shape,
                         model_name: str) -> tuple[list[tuple], bool]:
    """The input shapes (without the batch axis) at which MACs are counted.

    `input_shape` is None, one shape without the batch axis (single-input
    models) or a list with one per input. It fills the None axes of the
    model's inputs; known axes must agree. Without it, each None axis that is
    neither the batch nor the channel (last) axis becomes REFERENCE_DIM.

    Returns (one shape per input, True if some None axis of the model was
    filled, i.e. the shapes are a reference size rather than the model's own).
    Raises ValueError naming the input, its shape and what was given.
    """
    given = _split_input_shape(input_shape, model_shapes, names, model_name)
    out, filled = [], False
    for name, full, want in zip(names, model_shapes, given):
        own = tuple(full[1:])
        if want is None:
            fill = [REFERENCE_DIM if d is None and 0 < i + 1 < len(full) - 1 else d
                    for i, d in enumerate(own)]
            shape = tuple(fill)
        else:
            if len(want) != len(own):
                batch = len(want) == len(own) + 1  # the usual slip: batch axis included
                raise ValueError(
                    f"input_shape {tuple(want)} has {len(want)} axes but input {name!r} of "
                    f"model {model_name!r} has {len(own)} without the batch axis: "
                    f"{tuple(full)}{' (leave out the batch axis)' if batch else ''}. Give e.g. "
                    f"{_example(own, want[1:] if batch else None)}.")
            clash = [i for i, (d, w) in enumerate(zip(own, want)) if d is not None and d != w]
            if clash:
                raise ValueError(
                    f"input_shape {tuple(want)} does not fit input {name!r} of model "
                    f"{model_name!r}, whose shape is {tuple(full)}: axis {clash[0] + 1} is "
                    f"{own[clash[0]]} in the model but {want[clash[0]]} in input_shape. Only "
                    f"the model's None axes can be set; give e.g. {_example(own, want)}.")
            shape = tuple(int(w) for w in want)
        filled = filled or any(d is None and s is not None for d, s in zip(own, shape))
        out.append(shape)
    return out, filled


def _split_input_shape(input_shape, model_shapes, names, model_name) -> list:
    """`input_shape` as one entry (a tuple of ints, or None) per model input."""
    if input_shape is None:
        return [None] * len(model_shapes)
    rule = ("input_shape is a shape without the batch axis, e.g. (224, 224, 3), or for a "
            "model with several inputs a list with one such shape per input")
    if not isinstance(input_shape, (list, tuple)) or not input_shape:
        raise ValueError(f"{rule}; got {input_shape!r}")
    nested = all(isinstance(s, (list, tuple)) for s in input_shape)
    if not nested:
        if len(model_shapes) != 1:
            raise ValueError(f"{rule}; model {model_name!r} has {len(model_shapes)} inputs "
                             f"{list(names)}, so give a list of {len(model_shapes)} shapes, "
                             f"got {input_shape!r}")
        input_shape = [input_shape]
    if len(input_shape) != len(model_shapes):
        raise ValueError(f"{rule}; got {len(input_shape)} shape(s) for the "
                         f"{len(model_shapes)} input(s) {list(names)} of model {model_name!r}")
    for shape in input_shape:
        if not all(isinstance(d, numbers.Integral) and not isinstance(d, bool) and d > 0
                   for d in shape):
            raise ValueError(f"{rule}, every size a positive int; got {tuple(shape)!r} in "
                             f"{input_shape!r}")
    return [tuple(s) for s in input_shape]


def _example(own: tuple, want: Sequence | None = None) -> tuple:
    """A valid input_shape for an input whose shape without batch is `own`."""
    return tuple(d if d is not None else (want[i] if want is not None else REFERENCE_DIM)
                 for i, d in enumerate(own))
