"""Read a model once into a flat graph of layer calls.

Nested Functional/Sequential models are inlined: each call of a sub-model
gets a `scope` and its inner tensors get keys of their own, so a sub-model
called twice appears twice. Tensor keys are `(scope, id(KerasTensor))`;
aliases bind a sub-model's inputs/outputs to the caller's tensors.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from keras_slim import _keras

Key = tuple  # (scope, id(KerasTensor))


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

    def __init__(self, model):
        self.model = model
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
        self.outputs = [self.key((), t) for t in _keras.flatten(top.outputs)]
        for t in _keras.flatten(top.inputs):
            self.shapes[self.key((), t)] = _keras.shape_of(t)
        self._inline(top, ())
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

    def _inline(self, graph: _keras.ModelGraph, scope: tuple) -> None:
        self.scope_graph[scope] = graph
        for ci, call in enumerate(graph.calls):
            in_tensors = _keras.tensors_in((call.args, call.kwargs))
            in_keys = [self.key(scope, t) for t in in_tensors]
            if _keras.is_graph_model(call.layer):
                self._inline_submodel(call, in_keys, scope + (ci,), scope)
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

    def _inline_submodel(self, call, in_keys, inner_scope, outer_scope) -> None:
        sub = self._graph(call.layer)
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
        self.submodel_calls.setdefault(id(call.layer), []).append(
            SubmodelCall(call.layer, inner_scope, list(in_keys), inner_outputs)
        )
