"""Fold inference-mode BatchNormalization into the preceding conv / dense layer.

BN(y) = gamma * (y - mean) / sqrt(var + eps) + beta is affine per channel, so
for y = conv(x) + b it is absorbed as kernel' = kernel * s, bias' = (b - mean)
* s + beta with s = gamma / sqrt(var + eps). The new model is rebuilt from
layer configs (fresh layers, copied weights), so the input model and its
layers are never touched. Nested Functional/Sequential models are folded
recursively (each becomes a new sub-model); a conv inside a sub-model followed
by a BN outside it is left unfolded.
"""
from __future__ import annotations

import collections
import logging
from typing import Any

import keras
import numpy as np
from keras import layers as L

from keras_slim import _keras
from keras_slim.errors import ArgumentTypeError

logger = logging.getLogger(__name__)

# Exact types only: a subclass may override call() and make the algebra wrong.
_PER_OUTPUT_KERNEL = (L.Conv1D, L.Conv2D, L.Conv3D, L.Dense)  # kernel[..., out]
_DEPTHWISE = (L.DepthwiseConv1D, L.DepthwiseConv2D)  # kernel[..., in, multiplier]
_SEPARABLE = (L.SeparableConv1D, L.SeparableConv2D)  # pointwise[..., out]
FOLDABLE_LAYERS = _PER_OUTPUT_KERNEL + _DEPTHWISE + _SEPARABLE


def fold_batchnorm(model: keras.Model) -> keras.Model:
    """Return a new model with every foldable BatchNormalization merged away.

    A BN is folded when it directly follows a Conv1D/2D/3D, DepthwiseConv1D/2D,
    SeparableConv1D/2D or Dense layer that has a linear activation and
    channels_last layout, the BN normalises the last axis, is the only consumer
    of that layer's output, and neither layer is shared. A bias is added to the
    conv when it had none. All other layers are cloned with their weights, so
    the result computes the same function in inference mode (training-mode BN
    behaviour is gone: fold only for deployment).

    Args:
        model: a Functional or Sequential Keras 3 model (never modified).

    Returns:
        A new model of the same kind. If nothing was foldable it is still a copy.
    """
    return fold_batchnorm_counted(model)[0]


def fold_batchnorm_counted(model: keras.Model) -> tuple[keras.Model, int]:
    """`fold_batchnorm` plus the number of BatchNormalization layers removed."""
    if not isinstance(model, keras.Model):
        raise ArgumentTypeError(f"fold_batchnorm expects a keras.Model, got "
                                f"{type(model).__name__}.")
    folder = _Folder()
    new = folder.model(model)
    logger.info("Folded %d BatchNormalization layer(s) of '%s'.", folder.folded, model.name)
    return new, folder.folded


def maybe_fold(model: keras.Model, fold_bn: bool) -> tuple[keras.Model, int]:
    """Fold for export; a model that cannot be rebuilt is exported as is (with a warning)."""
    if not fold_bn:
        return model, 0
    try:
        return fold_batchnorm_counted(model)
    except TypeError as err:  # custom layer without a usable get_config(), subclassed model
        logger.warning("Exporting '%s' without BatchNormalization folding: %s", model.name, err)
        return model, 0


class _Folder:
    def __init__(self):
        self.cache: dict[int, Any] = {}  # id(original op) -> its clone (keeps sharing)
        self.folded = 0

    # ------------------------------------------------------------- dispatch
    def model(self, model: keras.Model) -> keras.Model:
        if isinstance(model, keras.Sequential):
            return self._sequential(model)
        if _keras.is_graph_model(model):
            return self._functional(model)
        raise TypeError(
            f"Cannot rebuild '{model.name}' ({type(model).__name__}): only Functional and "
            "Sequential models have a layer graph. A subclassed model's call() is opaque; "
            "rebuild it with the functional API to fold its BatchNormalization layers.")

    def clone(self, op: Any) -> Any:
        """Fresh copy of a layer/op (sub-models folded recursively); weights copied later."""
        if id(op) not in self.cache:
            if isinstance(op, keras.Model):
                self.cache[id(op)] = self.model(op)
            else:
                try:
                    self.cache[id(op)] = type(op).from_config(op.get_config())
                except Exception as err:
                    raise TypeError(
                        f"Cannot re-create layer '{op.name}' ({type(op).__name__}) from its "
                        f"config ({err}). Custom layers need a get_config() that returns every "
                        "__init__ argument.") from err
        return self.cache[id(op)]

    # ----------------------------------------------------------- functional
    def _functional(self, model: keras.Model) -> keras.Model:
        graph = _keras.read_model(model)
        pairs = _foldable_pairs(graph)  # index of a BN call -> index of its conv call
        folded = {conv: bn for bn, conv in pairs.items()}
        to_copy: list[tuple[Any, Any]] = []

        def run(index, call, args, kwargs):
            op = call.layer
            if index in pairs:
                return None  # the BN: its output is the folded conv's output
            if index in folded:  # used once (checked), so no cache hit possible
                new_op = self.cache[id(op)] = _conv_with_bias(op)
            else:
                first_use = id(op) not in self.cache
                new_op = self.clone(op)
                if first_use and _has_own_weights(op):
                    to_copy.append((op, new_op))
            return new_op, new_op(*args, **kwargs)

        inputs, outputs, _ = _keras.replay(graph, run, _new_input)
        for op, new_op in to_copy:  # built now that they have been called
            _copy_weights(op, new_op)
        for conv_index, bn_index in folded.items():
            conv = graph.calls[conv_index].layer
            self.cache[id(conv)].set_weights(_folded_weights(conv, graph.calls[bn_index].layer))
            self.folded += 1
        return keras.Model(inputs=inputs, outputs=outputs, name=model.name)

    # ----------------------------------------------------------- sequential
    def _sequential(self, model: keras.Sequential) -> keras.Sequential:
        try:
            inputs = model.inputs
        except (AttributeError, ValueError):
            inputs = None
        if not inputs:
            raise TypeError(f"Sequential model '{model.name}' is not built; give it an "
                            "input shape (keras.Input as first layer) or call it once.")
        x = _new_input(inputs[0])
        new_input, new_layers, to_copy = x, [], []
        layers_, i = list(model.layers), 0
        while i < len(layers_):
            layer = layers_[i]
            nxt = layers_[i + 1] if i + 1 < len(layers_) else None
            if (nxt is not None and _conv_ok(layer) and _bn_ok(nxt, len(x.shape))
                    and _single_use(model, layer) and _single_use(model, nxt)):
                new = _conv_with_bias(layer)
                x = new(x)
                new.set_weights(_folded_weights(layer, nxt))
                self.folded += 1
                i += 2
            else:
                first_use = id(layer) not in self.cache
                new = self.clone(layer)
                x = new(x)
                if first_use and _has_own_weights(layer):
                    to_copy.append((layer, new))
                i += 1
            new_layers.append(new)
        for layer, new in to_copy:
            _copy_weights(layer, new)
        return keras.Sequential([new_input] + new_layers, name=model.name)


def _has_own_weights(op: Any) -> bool:
    """Layers get their weights copied; sub-models are rebuilt with theirs, and
    stateless keras.ops nodes (e.g. `x * 2` in a functional graph) have none."""
    return isinstance(op, L.Layer) and not isinstance(op, keras.Model)


def _single_use(model: keras.Model, layer: Any) -> bool:
    return sum(other is layer for other in model.layers) == 1


# ---------------------------------------------------------------- checks
def _foldable_pairs(graph: "_keras.ModelGraph") -> dict[int, int]:
    """{index of a BN call: index of the conv call} for every BN that may be folded."""
    calls = graph.calls
    producer = {id(t): i for i, c in enumerate(calls) for t in c.outputs}
    inputs = [_keras.tensors_in((c.args, c.kwargs)) for c in calls]
    consumers = collections.Counter(id(t) for ins in inputs for t in ins)
    uses = collections.Counter(id(c.layer) for c in calls)
    model_outputs = {id(t) for t in _keras.flatten(graph.outputs)}
    pairs = {}
    for i, call in enumerate(calls):
        bn = call.layer
        if len(inputs[i]) != 1 or call.kwargs.get("training") is True:
            continue
        x = inputs[i][0]
        j = producer.get(id(x))
        if j is None or not _bn_ok(bn, len(x.shape)) or not _conv_ok(calls[j].layer):
            continue
        if (consumers[id(x)] == 1 and id(x) not in model_outputs and uses[id(bn)] == 1
                and uses[id(calls[j].layer)] == 1 and len(calls[j].outputs) == 1):
            pairs[i] = j
    return pairs


def _conv_ok(layer: Any) -> bool:
    return (
        type(layer) in FOLDABLE_LAYERS
        and getattr(layer.activation, "__name__", None) == "linear"
        and getattr(layer, "data_format", "channels_last") == "channels_last"
        and not getattr(layer, "lora_enabled", False)
        and getattr(layer, "quantization_mode", None) is None
    )


def _bn_ok(layer: Any, rank: int) -> bool:
    return (type(layer) is L.BatchNormalization and layer.built
            and layer.axis in (-1, rank - 1))


# ---------------------------------------------------------------- weights
def _new_input(tensor: Any) -> Any:
    return _keras.new_input(tensor, None, name=_keras.input_name(tensor) or tensor.name)


def _conv_with_bias(conv: Any) -> Any:
    config = conv.get_config()
    config["use_bias"] = True
    return type(conv).from_config(config)


def _copy_weights(old: Any, new: Any) -> None:
    weights = old.get_weights()
    if len(weights) != len(new.weights):
        raise TypeError(f"Clone of layer '{old.name}' ({type(old).__name__}) has "
                        f"{len(new.weights)} weights, the original {len(weights)}; its "
                        "get_config() does not capture its structure.")
    new.set_weights(weights)
    _keras.finalize_adapted(new)  # an adapted Normalization reads tensors made from them


def _folded_weights(conv: Any, bn: Any) -> list[np.ndarray]:
    """[kernel(s)..., bias] of the conv with `bn` absorbed, computed in float64."""
    as64 = lambda v: np.asarray(keras.ops.convert_to_numpy(v), np.float64)  # noqa: E731
    mean, var = as64(bn.moving_mean), as64(bn.moving_variance)
    gamma = as64(bn.gamma) if bn.scale else np.ones_like(mean)
    beta = as64(bn.beta) if bn.center else np.zeros_like(mean)
    scale = gamma / np.sqrt(var + bn.epsilon)

    weights = conv.get_weights()
    kernels = weights[:-1] if conv.use_bias else list(weights)
    bias = np.asarray(weights[-1], np.float64) if conv.use_bias else np.zeros_like(mean)
    dtype = kernels[-1].dtype
    if type(conv) in _DEPTHWISE:  # output channel c = in_channel * multiplier + m
        k = np.asarray(kernels[0], np.float64)
        kernels = [k * scale.reshape(k.shape[-2], k.shape[-1])]
    else:  # plain/separable: the last kernel's last axis is the output channel
        kernels = kernels[:-1] + [np.asarray(kernels[-1], np.float64) * scale]
    new_bias = (bias - mean) * scale + beta
    return [np.asarray(k, dtype) for k in kernels] + [new_bias.astype(dtype)]
