"""Every access to Keras internals lives here.

The rest of keras_slim sees a model as a list of layer calls (`ModelGraph`)
and builds new models through the helpers below, so a Keras upgrade (or the
tf_keras flavour) touches this one module.

Two flavours are supported: Keras 3 (`keras`) and Keras 2 (`tf_keras`, what
TFMOT needs). keras_slim never imports tf_keras itself: a tf_keras model can
only exist if the user imported it, so the flavour is read off the object's
class and `sys.modules`.

Why one module over 400 lines: its job is to be the single place a Keras
upgrade has to be checked against (the test_layout check enforces it), so
reading nodes, rebuilding, replaying, tracing inputs and the few private
attributes export and the CLI need stay together on purpose; each section
below is small and independent.
"""
from __future__ import annotations

import contextlib
import dataclasses
import sys
import zlib
from typing import Any, Callable, Iterator

import keras
import numpy as np
from keras_slim.errors import ArgumentTypeError, ModelError

KerasTensor = keras.KerasTensor


def _tfk():
    """The tf_keras module if the user has imported it, else None."""
    return sys.modules.get("tf_keras")


def is_tf_keras(obj) -> bool:
    """True for tf_keras (Keras 2) models, layers, tensors and classes."""
    cls = obj if isinstance(obj, type) else type(obj)
    return cls.__module__.startswith("tf_keras") or (
        _tfk() is not None and cls.__module__.startswith("keras_slim") and
        getattr(cls, "_keras_slim_flavour", None) == "tf_keras")


def flavour(model) -> str:
    return "tf_keras" if is_tf_keras(model) else "keras"


def keras3_class(cls) -> type | None:
    """The Keras 3 class a tf_keras layer class corresponds to (by name), for handler lookup."""
    from keras_slim.layers import ChannelSelection

    for c in cls.__mro__:
        if not c.__module__.startswith(("tf_keras", "keras_slim")):
            continue
        if c.__name__ == "ChannelSelection":
            return ChannelSelection
        k3 = getattr(keras.layers, c.__name__, None)
        if isinstance(k3, type):
            return k3
    return None


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
def _either(obj, keras3_cls, tf_keras_path: str) -> bool:
    if isinstance(obj, keras3_cls):
        return True
    tfk = _tfk()
    if tfk is None:
        return False
    target = tfk
    for part in tf_keras_path.split("."):
        target = getattr(target, part)
    return isinstance(obj, target)


def is_model(obj) -> bool:
    return _either(obj, keras.Model, "Model")


def is_sequential(obj) -> bool:
    return _either(obj, keras.Sequential, "Sequential")


def is_graph_model(obj) -> bool:
    """True for Sequential and Functional models (the ones with a layer graph)."""
    from keras.src.models.functional import Functional

    if is_sequential(obj) or isinstance(obj, Functional):
        return True
    return is_tf_keras(obj) and is_model(obj) and bool(getattr(obj, "_is_graph_network", False))


def is_tensor(x) -> bool:
    if isinstance(x, KerasTensor):
        return True
    return _tfk() is not None and type(x).__name__ == "KerasTensor" and is_tf_keras(x)


def is_concrete_tensor(x) -> bool:
    """A backend tensor with a value (not symbolic, not a variable, not numpy/Python)."""
    if isinstance(x, (KerasTensor, keras.Variable, np.ndarray, np.generic, int, float, bool)):
        return False
    try:
        return bool(keras.ops.is_tensor(x))
    except Exception:
        return False


def is_layer(obj) -> bool:
    return _either(obj, keras.layers.Layer, "layers.Layer")


def is_ops_node(obj) -> bool:
    """A `keras.ops` operation recorded as a graph node (Add, Split, ...), not a layer.

    `keras.activations.relu` on a symbolic tensor records one from keras.src.activations.
    """
    return type(obj).__module__.startswith(("keras.src.ops", "keras.src.activations"))


def is_embedding(layer) -> bool:
    """keras.layers.Embedding (a lookup table: no MACs), also tf_keras'."""
    return any(c.__name__ == "Embedding" for c in type(layer).__mro__)


def is_batch_norm(layer) -> bool:
    return _either(layer, keras.layers.BatchNormalization, "layers.BatchNormalization")


def check_model(obj, fn: str) -> None:
    """Raise a clear error unless `obj` is a Keras model."""
    if not is_model(obj):
        raise ArgumentTypeError(
            f"{fn}: expected a keras.Model (Sequential or Functional), got "
            f"{type(obj).__module__}.{type(obj).__name__}. Build or load your "
            "network as a Keras model first (e.g. keras.models.load_model)."
        )


def check_graph_model(model, fn: str) -> None:
    check_model(model, fn)
    if not is_graph_model(model):
        raise ArgumentTypeError(
            f"{fn}: model {model.name!r} is a subclassed keras.Model "
            f"({type(model).__name__}); its layer graph is Python code that "
            "cannot be read or rebuilt. Express it as a Functional or "
            "Sequential model (subclassed *layers* inside those are fine: they "
            "are treated as barriers or handled by a registered handler)."
        )
    if is_sequential(model) and not is_tf_keras(model) and getattr(model, "_functional", None) is None:
        raise ModelError(
            f"{fn}: Sequential model {model.name!r} is not built, so its input "
            "shape is unknown. Start it with keras.Input(shape) or call "
            "model.build(input_shape) first."
        )


# ---------------------------------------------------------------- reading
def read_model(model) -> ModelGraph:
    """Return the calls of a Functional/Sequential model in topological order."""
    if is_tf_keras(model):
        return _read_tf_keras(model)
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


def _read_tf_keras(model) -> ModelGraph:
    calls = []
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if node.is_input:
                continue
            args = node.call_args if isinstance(node.call_args, tuple) else tuple(node.call_args)
            calls.append(Call(layer=node.layer, args=args, kwargs=dict(node.call_kwargs),
                              outputs=list(keras.tree.flatten(node.outputs))))
    return ModelGraph(model=model, kind="sequential" if is_sequential(model) else "functional",
                      inputs=model._nested_inputs, outputs=model._nested_outputs, calls=calls)


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


def output_shapes(layer, call: Call, shape_of: Callable) -> list[tuple] | None:
    """The output shapes of `call` if its tensor arguments had shapes `shape_of(tensor)`.

    Keras computes them from the layer's output spec on placeholder tensors,
    so nothing is run and the model's graph is not touched. None when the
    layer cannot tell (e.g. a custom layer without `compute_output_shape`
    whose `call` fails on symbolic inputs).
    """
    try:
        if is_tf_keras(layer):
            return _tf_keras_output_shapes(layer, call, shape_of)
        args, kwargs = map_tensors(
            (call.args, call.kwargs),
            lambda t: KerasTensor(shape_of(t), dtype=t.dtype, sparse=getattr(t, "sparse", False)))
        out = layer.compute_output_spec(*args, **kwargs)
        return [tuple(o.shape) for o in flatten(out)]
    except Exception:  # any failure only means this layer's MACs go uncounted
        return None


def _tf_keras_output_shapes(layer, call: Call, shape_of: Callable) -> list[tuple] | None:
    import tensorflow as tf

    if len(call.args) != 1:  # tf_keras' signature API takes the first argument only
        return None
    spec = map_tensors(call.args[0], lambda t: tf.TensorSpec(shape_of(t), t.dtype))
    out = layer.compute_output_signature(spec)
    return [tuple(tf.TensorShape(o.shape).as_list()) for o in tf.nest.flatten(out)]


def walk_layers(model) -> Iterator:
    """All layers of `model`, nested models' layers included, each once."""
    return iter(model._flatten_layers(include_self=False, recursive=True))


def weight_name(variable) -> str:
    """`kernel`, `gamma`, ... for a weight, whatever the flavour's naming."""
    name = getattr(variable, "name", "") or getattr(variable, "path", "")
    return name.split("/")[-1].split(":")[0]


def get_weights(layer) -> list:
    """(name, numpy value) for each weight, in `layer.weights` order."""
    return [(weight_name(w), np.asarray(w.numpy())) for w in layer.weights]


def weights_digest(model) -> int:
    """A checksum of the model's weights: tells whether it was trained or set since.

    Arrays up to 64K values are read whole (BN statistics, biases, depthwise
    taps: what the folded constants are made of); larger kernels every 61st
    value, which any training step changes: ~45 ms on ResNet-50 (a full read
    is ~150 ms, clone_model ~450 ms).
    """
    crc = 0
    for w in model.weights:
        shape = tuple(int(d) for d in w.shape)
        if int(np.prod(shape)) > 65536:  # subsample before copying it out of the backend
            flat = keras.ops.convert_to_numpy(keras.ops.reshape(w, (-1,))[::61])
        else:
            flat = np.asarray(keras.ops.convert_to_numpy(w)).reshape(-1)
        crc = zlib.crc32(np.ascontiguousarray(flat).view(np.uint8), crc)
        crc = zlib.crc32(np.asarray(shape, np.int64).view(np.uint8), crc)
    return crc


def weight(layer, name: str):
    """One weight as numpy (only that variable is read: planning asks for many)."""
    for w in layer.weights:
        if weight_name(w) == name:
            return np.asarray(w.numpy())
    return None


def set_weight_regularizer(layer, attr: str, regularizer) -> None:
    """Attach a regularizer to an already-built weight so it lands in `losses`.

    Keras 3 reads the penalty from the variable (`variable.regularizer`);
    the layer attribute is set too so `get_config` serializes it.
    """
    setattr(layer, f"{attr}_regularizer", regularizer)
    if not is_tf_keras(layer):
        getattr(layer, attr).regularizer = regularizer
        return
    # tf_keras keeps weight penalties as closures in `_callable_losses`; keep
    # a handle on ours so a second call replaces it instead of stacking.
    _register_tf_keras_serializables()
    if regularizer is not None and type(regularizer).__name__ == "BNL1":
        regularizer = bnl1_class("tf_keras")(regularizer.strength)
        setattr(layer, f"{attr}_regularizer", regularizer)
    handle = f"_keras_slim_{attr}_loss"
    old = getattr(layer, handle, None)
    if old is not None and old in layer._callable_losses:
        layer._callable_losses.remove(old)
    setattr(layer, handle, None)
    if regularizer is not None:
        before = list(layer._callable_losses)
        layer._handle_weight_regularization(attr, getattr(layer, attr), regularizer)
        added = [f for f in layer._callable_losses if f not in before]
        setattr(layer, handle, added[-1] if added else None)


def _register_tf_keras_serializables() -> None:
    """Make BNL1 and ChannelSelection loadable by tf_keras too (once)."""
    tfk = _tfk()
    if tfk is None or getattr(_register_tf_keras_serializables, "done", False):
        return
    bnl1_class("tf_keras")
    channel_selection_class("tf_keras")
    _register_tf_keras_serializables.done = True


_TF_KERAS_BNL1 = []


def bnl1_class(kind: str):
    """The BN-scale L1 regularizer class for a flavour ("keras" or "tf_keras")."""
    from keras_slim.regularizers import BNL1

    if kind != "tf_keras":
        return BNL1
    if not _TF_KERAS_BNL1:
        tfk = _tfk()
        import tensorflow as tf

        class TFKerasBNL1(tfk.regularizers.Regularizer):
            __doc__ = BNL1.__doc__
            _keras_slim_flavour = "tf_keras"

            def __init__(self, strength=1e-4):
                self.strength = float(BNL1(strength).strength)  # same validation

            def __call__(self, x):
                return self.strength * tf.reduce_sum(tf.abs(x))

            def get_config(self):
                return {"strength": self.strength}

        TFKerasBNL1.__name__ = TFKerasBNL1.__qualname__ = "BNL1"
        _TF_KERAS_BNL1.append(tfk.saving.register_keras_serializable(
            package="keras_slim", name="BNL1")(TFKerasBNL1))
    return _TF_KERAS_BNL1[0]


_TF_KERAS_SELECTION = []


def channel_selection_class(kind: str):
    """The ChannelSelection layer class for a flavour ("keras" or "tf_keras")."""
    from keras_slim.layers import ChannelSelection, select_channels

    if kind != "tf_keras":
        return ChannelSelection
    if _TF_KERAS_SELECTION:
        return _TF_KERAS_SELECTION[0]
    tfk = _tfk()
    import tensorflow as tf

    class TFKerasChannelSelection(tfk.layers.Layer):
        __doc__ = ChannelSelection.__doc__
        _keras_slim_flavour = "tf_keras"

        def __init__(self, indices, **kwargs):
            super().__init__(**kwargs)
            self.indices = [int(i) for i in indices]

        def call(self, inputs):  # the same slices-or-gather graph as the Keras 3 layer
            return select_channels(
                inputs, self.indices, take=lambda x, idx: tf.gather(x, idx, axis=-1),
                slice_last=lambda x, a, b: x[..., a:b],
                concat=lambda parts: tf.concat(parts, axis=-1))

        def compute_output_shape(self, input_shape):
            return tf.TensorShape(list(input_shape)[:-1] + [len(self.indices)])

        def get_config(self):
            return dict(super().get_config(), indices=list(self.indices))

    TFKerasChannelSelection.__name__ = "ChannelSelection"
    TFKerasChannelSelection.__qualname__ = "ChannelSelection"
    cls = tfk.saving.register_keras_serializable(package="keras_slim", name="ChannelSelection")(
        TFKerasChannelSelection)
    _TF_KERAS_SELECTION.append(cls)
    return cls


def strategy_scope(model):
    """The `tf.distribute` scope `model` was built in, or a null context.

    A model built under `MirroredStrategy.scope()` keeps that strategy and
    `fit` runs on it; a rebuilt copy made outside the scope would silently
    get ordinary variables and train on one device. Only the TensorFlow
    backend has strategies (JAX's DataParallel is a global setting that
    applies to new variables anyway), so no TensorFlow import on the others.
    """
    strategy = getattr(model, "_distribute_strategy", None)
    if strategy is None or keras.backend.backend() != "tensorflow":
        return contextlib.nullcontext()
    import tensorflow as tf  # loaded already: the model lives on a TF strategy

    if tf.distribute.has_strategy() and tf.distribute.get_strategy() is strategy:
        return contextlib.nullcontext()
    return strategy.scope()


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


def copy_layer(layer):
    """A copy of a built Keras 3 layer with its own variables (same values); nothing shared.

    For layers whose config does not round-trip. `copy.deepcopy` alone goes
    through Keras' pickling (the config again), so each layer of the subtree is
    copied attribute by attribute with Keras' tracking paused (the copies are
    built already) and without its call history (nodes), which would drag in
    the model it came from.
    """
    import copy

    from keras.src.utils import tracking

    try:
        from keras.src.utils.backend_utils import DynamicBackend
    except ImportError:  # an older Keras without it
        DynamicBackend = ()

    subtree = [layer] + list(layer._flatten_layers(include_self=False, recursive=True))
    memo: dict = {id(m): m for m in list(sys.modules.values())}  # modules (a SeedGenerator's backend) are shared
    for sub in subtree:
        # so is a preprocessing layer's `self.backend` (a DynamicBackend: a copy made
        # without its `_backend` recurses in its __getattr__, as RandomShear's did)
        for value in vars(sub).values():
            if isinstance(value, DynamicBackend):
                memo[id(value)] = value
        for nodes in ("_inbound_nodes", "_outbound_nodes"):
            if hasattr(sub, nodes):
                memo[id(getattr(sub, nodes))] = []
        memo[id(sub)] = object.__new__(type(sub))
    with tracking.DotNotTrackScope():
        for sub in subtree:
            memo[id(sub)].__dict__.update(copy.deepcopy(sub.__dict__, memo))
    return memo[id(layer)]


def finalize_adapted(layer) -> None:
    """Recompute what an adapted preprocessing layer derives from its weights.

    `Normalization.adapt` stores mean/variance as weights, but `call` reads
    tensors `finalize_state()` makes from them; loading a file calls it, setting
    weights does not (the rebuilt layer would normalise with mean 0, variance 1).
    """
    fn = getattr(layer, "finalize_state", None)
    if callable(fn) and hasattr(layer, "adapt") and getattr(layer, "built", False):
        fn()


def set_weights(layer, values: list) -> None:
    layer.set_weights([np.asarray(v) for v in values])


@contextlib.contextmanager
def initial_values(layer, names: list, values: list) -> Iterator[list]:
    """While the block runs (the layer's first call builds it), the layer's own
    `add_weight(name=n)` creates weight n with `values[names.index(n)]` instead
    of running its initializer: a rebuild then writes each weight once, rather
    than drawing random values and overwriting them (most of a rebuild's time).

    Yields the names so created; weights not among them (a sublayer's, a
    positional `add_weight`, a shape that differs) keep their initializer and
    the caller sets them afterwards. Keras 3 layers only; others are untouched.
    """
    created: list = []
    if not _builds_plainly(layer) or len(set(names)) != len(names):
        yield created
        return
    by_name = dict(zip(names, values))
    original = layer.add_weight

    def add_weight(*args, **kwargs):
        name, shape = kwargs.get("name"), kwargs.get("shape")
        value = by_name.get(name) if not args else None
        if value is not None and shape is not None and tuple(shape) == np.shape(value):
            kwargs["initializer"] = lambda shape, dtype=None: _as_dtype(value, dtype)
            created.append(name)
        return original(*args, **kwargs)

    object.__setattr__(layer, "add_weight", add_weight)  # bypass Keras attribute tracking
    try:
        yield created
    finally:
        object.__delattr__(layer, "add_weight")


def _builds_plainly(layer) -> bool:
    """A stock Keras 3 layer whose build only creates its weights (no later assign).

    Custom layers may overwrite a weight in `build`, and preprocessing layers
    hold adapted state: those get their weights set after building instead.
    """
    module = type(layer).__module__
    return (isinstance(layer, keras.layers.Layer) and module.startswith("keras.src.layers.")
            and not module.startswith("keras.src.layers.preprocessing"))


def _as_dtype(value, dtype):
    try:
        return np.asarray(value, dtype=np.dtype(dtype) if dtype is not None else None)
    except TypeError:  # a dtype NumPy lacks (bfloat16): Keras converts it
        return value


def _module(kind: str):
    return _tfk() if kind == "tf_keras" else keras


def new_input(tensor, channels: int | None, name: str | None = None, kind: str = "keras"):
    """An Input like `tensor` whose last axis has `channels` entries."""
    shape = list(tensor.shape[1:])
    if channels is not None and shape:
        shape[-1] = channels
    dtype = tensor.dtype if kind == "keras" else tensor.dtype.name
    return _module(kind).Input(shape=tuple(shape), batch_size=tensor.shape[0], dtype=dtype, name=name)


def input_name(tensor) -> str | None:
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        return None
    op = getattr(history, "operation", None) or getattr(history, "layer", None)
    return op.name if op is not None else None


def replay(graph: ModelGraph, call_fn: Callable, input_fn: Callable | None = None):
    """Replay a model graph on new tensors: the one graph replayer keras_slim has.

    `input_fn(tensor)` makes each new input (default: an Input like the old
    one); `call_fn(index, call, args, kwargs)` runs one call on the new
    tensors (args/kwargs already mapped) and returns (layer used or None,
    outputs), or None to make the call's outputs the same new tensors as its
    first tensor argument (a call that is removed, e.g. a folded BN).
    Returns (inputs, outputs, layers): the new input and output structures
    and the layers used, in call order, each once.
    """
    input_fn = input_fn or symbolic_like
    tmap: dict[int, Any] = {}
    for t in flatten(graph.inputs):
        tmap[id(t)] = input_fn(t)
    layers: list = []

    def lookup(t):
        if id(t) not in tmap:
            raise ModelError(f"replaying model {graph.model.name!r}: tensor {t.name!r} is used "
                             "before it is produced (the graph could not be read in order)")
        return tmap[id(t)]

    for index, call in enumerate(graph.calls):
        args, kwargs = map_tensors((call.args, call.kwargs), lookup)
        result = call_fn(index, call, args, kwargs)
        if result is None:
            outputs = [tensors_in((args, kwargs))[0]] * len(call.outputs)
        else:
            layer, outputs = result
            if layer is not None and not any(layer is x for x in layers):
                layers.append(layer)
        for old, new in zip(call.outputs, flatten(outputs)):
            tmap[id(old)] = new
    inputs = map_tensors(graph.inputs, lookup)
    outputs = map_tensors(graph.outputs, lookup)
    return inputs, outputs, layers


def make_model(graph: ModelGraph, inputs, outputs, layers: list):
    """Build the new model in the flavour of the old one."""
    old = graph.model
    module = _module(flavour(old))
    if graph.kind == "sequential":
        new = module.Sequential([inputs] + layers, name=old.name)
    else:
        new = module.Model(inputs=inputs, outputs=outputs, name=old.name)
    if not old.trainable:  # `model.trainable = False` is the model's own flag too
        new.trainable = False
    return new


# ---------------------------------------------------------------- tracing
def symbolic_like(tensor):
    """A fresh graph input with the shape (batch axis included) and dtype of `tensor`."""
    return keras.Input(batch_shape=tuple(tensor.shape), dtype=tensor.dtype)


def new_symbolic(shape: tuple, batch: bool = False):
    """A graph input of `shape`; `batch=False` means the shape includes the batch axis."""
    return keras.Input(shape=shape) if batch else keras.Input(batch_shape=shape)


# `weight * x` on a Keras variable runs the backend's op on the variable's value,
# which refuses a symbolic tensor (TensorFlow: "A KerasTensor cannot be used as input
# to a TensorFlow function"); `x * weight` dispatches through keras.ops and records
# a node. While tracing, the variable's arithmetic operators do the same as the
# tensor's when the other operand is symbolic, so both spellings trace alike.
_SYMBOLIC_OPERATORS = {
    "__add__": ("add", False), "__radd__": ("add", True),
    "__sub__": ("subtract", False), "__rsub__": ("subtract", True),
    "__mul__": ("multiply", False), "__rmul__": ("multiply", True),
    "__truediv__": ("divide", False), "__rtruediv__": ("divide", True),
}


@contextlib.contextmanager
def symbolic_weight_operators() -> Iterator[None]:
    """Within the block, `variable <op> KerasTensor` records a keras.ops node.

    Patches the Keras variable class (process-wide, for the duration of one
    traced call; other operands keep the original behaviour).
    """
    cls = keras.Variable  # the backend's class; the operators may live on a base class
    missing = object()
    saved = {name: cls.__dict__.get(name, missing) for name in _SYMBOLIC_OPERATORS}

    def make(name, op, reflected):
        original = getattr(cls, name)

        def operator(self, other):
            if isinstance(other, keras.KerasTensor):
                fn = getattr(keras.ops, op)
                return fn(other, self) if reflected else fn(self, other)
            return original(self, other)

        return operator

    try:
        for name, (op, reflected) in _SYMBOLIC_OPERATORS.items():
            setattr(cls, name, make(name, op, reflected))
        yield
    finally:
        for name, original in saved.items():
            if original is missing:
                delattr(cls, name)
            else:
                setattr(cls, name, original)


def build_input_shapes(model):
    """The input shape(s) a subclassed model was built with (batch axis included), or None."""
    shapes = getattr(model, "_build_shapes_dict", None)
    if not shapes:
        return None
    values = list(shapes.values())
    return values[0] if len(values) == 1 else None


def is_single_shape(shape) -> bool:
    return isinstance(shape, (tuple, list)) and all(d is None or isinstance(d, int) for d in shape)


def variables_in(structure) -> list:
    """Names of the Keras variables inside a call's arguments (captured weights)."""
    return [getattr(v, "path", None) or getattr(v, "name", "?")
            for v in keras.tree.flatten(structure) if isinstance(v, keras.Variable)]


def call_accepts(layer, name: str) -> bool:
    import inspect

    try:
        return name in inspect.signature(layer.call).parameters
    except (TypeError, ValueError):
        return False


# ---------------------------------------------------------------- deployment and the CLI
# Appended for keras_slim.export and keras_slim.cli: what they need from Keras
# beyond its public API, each behind one name.
def input_structure(model):
    """A Functional model's inputs as it was built with them (dict/list/tensor), or None.

    Keras keeps the nested structure only privately; `model.inputs` is flat.
    """
    return getattr(model, "_inputs_struct", None)


def output_structure(model):
    """A Functional model's outputs as it was built with them, or None (see input_structure)."""
    return getattr(model, "_outputs_struct", None)


def tf_keras_inbound_layers(layer) -> list | None:
    """The layers feeding a tf_keras layer's only call, or None if it was called 0 or 2+ times.

    tf_keras has no public node API (TFMOT reads the same attribute).
    """
    import tensorflow as tf

    nodes = layer._inbound_nodes
    if len(nodes) != 1:
        return None
    return tf.nest.flatten(nodes[0].inbound_layers)


def patch_tf2onnx() -> None:
    """Apply Keras' numpy>=2 patch to tf2onnx (private in Keras; a no-op where it is absent)."""
    import warnings

    try:  # tf2onnx 1.17 still uses np.object/np.cast in a few rewriters.
        from keras.src.export.tf2onnx_lib import patch_tf2onnx as patch
    except ImportError:  # older/newer Keras without the helper: tf2onnx may still work
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        patch()


def load_error_reason(err: BaseException) -> tuple[str, str | None, str | None] | None:
    """Why `keras.models.load_model` failed, read off its message.

    Returns ("unsafe", None, None) when safe mode refused Python code (a Lambda),
    ("unregistered", class name or None, saved module or None) for a custom
    class that is not registered, None for anything else. Keras raises plain
    TypeError/ValueError here with no structured fields, so the message text is
    all there is; the patterns are those of Keras 3.x and live here so a Keras
    upgrade that rewords them touches this one function.
    """
    import re

    text = str(err)
    if "safe_mode" in text or "unsafe_deserialization" in text:
        return "unsafe", None, None
    missing = re.search(r"Could not locate (?:class|function) '([^']+)'", text)
    if missing or "Unknown layer" in text:
        where = re.search(r"Full object config: {'module': '([^']+)'", text)
        return ("unregistered", missing.group(1) if missing else None,
                where.group(1) if where else None)
    return None
