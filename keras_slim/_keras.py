"""Every access to Keras internals lives here.

The rest of keras_slim sees a model as a list of layer calls (`ModelGraph`)
and builds new models through the helpers below, so a Keras upgrade (or the
tf_keras flavour) touches this one module.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator

import keras
import numpy as np

KerasTensor = keras.KerasTensor


@dataclasses.dataclass
class Call:
    """One `layer(*args, **kwargs)` event of a graph model."""

    layer: Any  # a keras Layer or a stateless keras Operation
    args: tuple
    kwargs: dict
    outputs: list  # flat list of output KerasTensors


@dataclasses.dataclass
class ModelGraph:
    """A Functional or Sequential model as plain data, calls in topological order."""

    model: Any
    kind: str  # "functional" or "sequential"
    inputs: Any  # structure of input KerasTensors
    outputs: Any  # structure of output KerasTensors
    calls: list


# ---------------------------------------------------------------- type checks
def is_model(obj) -> bool:
    return isinstance(obj, keras.Model)


def is_sequential(obj) -> bool:
    return isinstance(obj, keras.Sequential)


def is_graph_model(obj) -> bool:
    """True for Sequential and Functional models (the ones with a layer graph)."""
    from keras.src.models.functional import Functional

    return is_sequential(obj) or isinstance(obj, Functional)


def is_tensor(x) -> bool:
    return isinstance(x, KerasTensor)


def is_layer(obj) -> bool:
    return isinstance(obj, keras.layers.Layer)


def is_batch_norm(layer) -> bool:
    return isinstance(layer, keras.layers.BatchNormalization)


def check_model(obj, fn: str) -> None:
    """Raise a clear error unless `obj` is a Keras model."""
    if not is_model(obj):
        raise TypeError(
            f"{fn}: expected a keras.Model (Sequential or Functional), got "
            f"{type(obj).__module__}.{type(obj).__name__}. Build or load your "
            "network as a Keras model first (e.g. keras.models.load_model)."
        )


def check_graph_model(model, fn: str) -> None:
    check_model(model, fn)
    if not is_graph_model(model):
        raise TypeError(
            f"{fn}: model {model.name!r} is a subclassed keras.Model "
            f"({type(model).__name__}); its layer graph is Python code that "
            "cannot be read or rebuilt. Express it as a Functional or "
            "Sequential model (subclassed *layers* inside those are fine: they "
            "are treated as barriers or handled by a registered handler)."
        )
    if is_sequential(model) and getattr(model, "_functional", None) is None:
        raise ValueError(
            f"{fn}: Sequential model {model.name!r} is not built, so its input "
            "shape is unknown. Start it with keras.Input(shape) or call "
            "model.build(input_shape) first."
        )


# ---------------------------------------------------------------- reading
def read_model(model) -> ModelGraph:
    """Return the calls of a Functional/Sequential model in topological order."""
    if is_sequential(model):
        graph = model._functional
        kind = "sequential"
    else:
        graph = model
        kind = "functional"
    calls = []
    for depth in sorted(graph._nodes_by_depth, reverse=True):
        for node in graph._nodes_by_depth[depth]:
            if node.is_input:
                continue
            calls.append(
                Call(
                    layer=node.operation,
                    args=tuple(node.arguments.args),
                    kwargs=dict(node.arguments.kwargs),
                    outputs=list(node.outputs),
                )
            )
    return ModelGraph(
        model=model,
        kind=kind,
        inputs=graph._inputs_struct,
        outputs=graph._outputs_struct,
        calls=calls,
    )


def flatten(structure) -> list:
    return keras.tree.flatten(structure)


def tensors_in(structure) -> list:
    """The KerasTensors inside a (nested) call argument structure, in order."""
    return [x for x in keras.tree.flatten(structure) if is_tensor(x)]


def map_tensors(structure, fn: Callable):
    """Replace every KerasTensor in `structure` by fn(tensor)."""
    return keras.tree.map_structure(lambda x: fn(x) if is_tensor(x) else x, structure)


def pack_like(structure, flat: list):
    return keras.tree.pack_sequence_as(structure, flat)


def shape_of(t) -> tuple:
    return tuple(t.shape)


def walk_layers(model) -> Iterator:
    """All layers of `model`, nested models' layers included, each once."""
    return iter(model._flatten_layers(include_self=False, recursive=True))


def weight_name(variable) -> str:
    """`kernel`, `gamma`, ... for a weight, whatever the flavour's naming."""
    name = getattr(variable, "name", "") or getattr(variable, "path", "")
    return name.split("/")[-1].split(":")[0]


def get_weights(layer) -> list:
    """(name, numpy value) for each weight, in `layer.weights` order."""
    return [(weight_name(w), np.asarray(keras.ops.convert_to_numpy(w))) for w in layer.weights]


def weight(layer, name: str):
    for n, value in get_weights(layer):
        if n == name:
            return value
    return None


def set_weight_regularizer(layer, attr: str, regularizer) -> None:
    """Attach a regularizer to an already-built weight so it lands in `losses`.

    Keras 3 reads the penalty from the variable (`variable.regularizer`);
    the layer attribute is set too so `get_config` serializes it.
    """
    setattr(layer, f"{attr}_regularizer", regularizer)
    getattr(layer, attr).regularizer = regularizer


def reset_compiled_functions(model) -> None:
    """Drop traced train/test/predict functions so a changed loss is retraced."""
    for attr in ("train_function", "test_function", "predict_function"):
        if hasattr(model, attr):
            setattr(model, attr, None)


# ---------------------------------------------------------------- building
def new_layer(layer, config: dict | None = None):
    """A fresh, unbuilt copy of `layer` (an Operation for keras.ops nodes)."""
    cfg = layer.get_config() if config is None else config
    return type(layer).from_config(cfg)


def set_weights(layer, values: list) -> None:
    layer.set_weights([np.asarray(v) for v in values])


def new_input(tensor, channels: int | None, name: str | None = None):
    """A keras.Input like `tensor` whose last axis has `channels` entries."""
    shape = list(tensor.shape[1:])
    if channels is not None and shape:
        shape[-1] = channels
    return keras.Input(shape=tuple(shape), batch_size=tensor.shape[0],
                       dtype=tensor.dtype, name=name)


def input_name(tensor) -> str | None:
    history = getattr(tensor, "_keras_history", None)
    op = history.operation if history is not None else None
    return op.name if op is not None else None


def make_model(graph: ModelGraph, inputs, outputs, layers: list):
    """Build the new model in the flavour of the old one."""
    old = graph.model
    if graph.kind == "sequential":
        return keras.Sequential([inputs] + layers, name=old.name)
    return keras.Model(inputs=inputs, outputs=outputs, name=old.name)
