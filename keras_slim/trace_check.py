"""The numeric check behind tracing: does a traced graph compute what its layer does?

Both run in inference mode on random inputs at the shapes the layer sees in the
model (`keras_slim.graph` resolves None axes at the reference size); a nested
trace is checked composed, its inner traces evaluated in place of their layers.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Callable

import keras
import numpy as np

from keras_slim import _keras

if TYPE_CHECKING:  # annotations only: tracing imports this module
    from keras_slim.tracing import Trace

# Unknown (None) dims the graph could not resolve get this size for the numeric check.
CHECK_DIM = 16
CHECK_BATCH = 1  # the check runs at the model's real spatial sizes: keep it to one sample
CHECK_TOLERANCE = 1e-4  # relative, float32


def sample(inputs: list, shapes: list | None = None) -> list:
    """Random inputs at `shapes` (None entries/axes: the tensor's own, CHECK_DIM if unknown)."""
    rng = np.random.default_rng(0)
    out = []
    for i, t in enumerate(inputs):
        shape = shapes[i] if shapes is not None and shapes[i] is not None else tuple(t.shape)
        # a fixed batch axis stays (a call may need the size it was built with)
        dims = [d if d is not None else (CHECK_BATCH if j == 0 else CHECK_DIM)
                for j, d in enumerate(shape)]
        if "float" in str(t.dtype):
            out.append(rng.normal(size=dims).astype(t.dtype))
        else:  # ids, masks: zeros are valid for any vocabulary
            out.append(np.zeros(dims, t.dtype))
    return out


def mismatch(trace: Trace, model, values: list) -> str | None:
    """None if `model` (a keras.Model, or values -> outputs) computes what the layer does."""
    layer, inputs = trace.layer, trace.inputs
    concrete = {id(t): v for t, v in zip(inputs, values)}
    try:
        c_args, c_kwargs = _keras.map_tensors((trace.args, trace.kwargs),
                                              lambda t: concrete[id(t)])
        want = _keras.flatten(layer(*c_args, **c_kwargs, **_inference(layer, c_kwargs)))
        got = _keras.flatten(model(values) if callable(model) and not _keras.is_layer(model)
                             else model(list(values) if len(values) > 1 else values[0],
                                        training=False))
    except Exception as e:  # a layer that needs other sizes: no proof, no trace
        shapes = [tuple(np.shape(v)) for v in values]
        return (f"its trace could not be checked on a random input of shape "
                f"{shapes[0] if len(shapes) == 1 else shapes} ({type(e).__name__}: "
                f"{first_line(e)})")
    try:  # a trace whose ops captured symbolic tensors (ops.cond branches) gives no values
        pairs = [tuple(np.asarray(keras.ops.convert_to_numpy(v), np.float64)  # torch: no np.asarray
                       for v in (a, b)) for a, b in zip(want, got)]
    except Exception as e:
        return (f"its trace does not compute values ({type(e).__name__}: {first_line(e)}); "
                "value-dependent control flow such as keras.ops.cond cannot be traced")
    for a, b in pairs:
        scale = max(1.0, float(np.abs(a).max()) if a.size else 1.0)
        if a.shape != b.shape or float(np.abs(a - b).max()) > CHECK_TOLERANCE * scale:
            return ("the traced graph computes something else than the layer "
                    "(a Python branch or state in call()?)")
    return None


def composed(trace: Trace) -> Callable[[list], list]:
    """Run the trace with every traced custom layer inside it replaced by its own trace.

    Evaluated call by call (no new symbolic graph is built), in inference mode.
    """
    traces = {}

    def collect(t):
        for key, child in t.children.items():
            if not isinstance(child, Exception) and key not in traces:  # a Trace
                traces[key] = child
                collect(child)

    collect(trace)

    def run(model, values):
        graph = _keras.read_model(model)
        env = {id(t): v for t, v in zip(_keras.flatten(graph.inputs), values)}
        for c in graph.calls:
            args, kwargs = _keras.map_tensors((c.args, c.kwargs), lambda t: env[id(t)])
            sub = traces.get(id(c.layer))
            if sub is not None or _keras.is_graph_model(c.layer):
                outs = run(sub.model if sub is not None else c.layer,
                           [env[id(t)] for t in _keras.tensors_in((c.args, c.kwargs))])
            else:
                if kwargs.get("training") is None and _keras.call_accepts(c.layer, "training"):
                    kwargs = dict(kwargs, training=False)
                outs = _keras.flatten(c.layer(*args, **kwargs))
            for t, v in zip(c.outputs, outs):
                env[id(t)] = v
        return [env[id(t)] for t in _keras.flatten(graph.outputs)]

    return lambda values: run(trace.model, values)


def inner_values(trace: Trace, call, values: list) -> list | None:
    """What an inner layer's call receives when the trace runs on `values` (None: not reachable)."""
    import keras

    tensors = _keras.tensors_in((call.args, call.kwargs))
    try:
        probe = keras.Model(trace.model.inputs, tensors)
        got = probe(list(values) if len(values) > 1 else values[0], training=False)
        return [keras.ops.convert_to_numpy(v) for v in _keras.flatten(got)]
    except Exception:  # inside a nested graph model: the caller samples instead
        return None


def _inference(layer, kwargs) -> dict:
    if "training" in kwargs or not _keras.call_accepts(layer, "training"):
        return {}
    return {"training": False}


def first_line(e: Exception) -> str:
    """The message's first line; for Keras' "Exception encountered when calling X.call()."
    wrapper, with the line that says what went wrong."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", x).strip() for x in str(e).strip().splitlines()]
    lines = [x for x in lines if x]
    if not lines:
        return type(e).__name__
    text = lines[0]
    if text.startswith("Exception encountered when calling") and len(lines) > 1:
        text = f"{text.rstrip('.')}: {lines[1]}"
    return text[:200]
