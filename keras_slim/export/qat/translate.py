"""`to_tf_keras`: rebuild a Keras 3 Functional/Sequential model as tf_keras.

General, not QAT-specific: TFMOT needs it, and so does anything else that only
accepts tf_keras models. It imports tf_keras only (no global side effects).
"""
from __future__ import annotations

import inspect
import logging
from types import ModuleType
from typing import Any, Callable, Mapping

from keras_slim import _keras
from keras_slim.errors import ArgumentTypeError, TranslationError
from keras_slim.export.qat._imports import tf_keras

logger = logging.getLogger(__name__)

__all__ = ["to_tf_keras", "TRANSLATABLE_LAYERS", "TranslationError"]

# Keras 3 layer classes (matched by exact type, never subclasses) whose config
# translates 1:1 to the tf_keras class of the same name.
TRANSLATABLE_LAYERS: tuple[str, ...] = (
    "Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose",
    "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D", "SeparableConv2D", "Dense",
    "BatchNormalization", "LayerNormalization",
    "Activation", "ReLU", "LeakyReLU", "ELU", "PReLU", "Softmax",
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D",
    "AveragePooling3D", "GlobalAveragePooling1D", "GlobalAveragePooling2D",
    "GlobalAveragePooling3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
    "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate",
    "Flatten", "Reshape", "Permute",
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
    "GaussianDropout", "ActivityRegularization",
    "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D", "Cropping3D",
    "UpSampling1D", "UpSampling2D", "UpSampling3D", "Rescaling",
)
# Keras 3 config keys that tf_keras spells differently, per class.
_RENAMED_KEYS = {"LeakyReLU": {"negative_slope": "alpha"}}
# Keras 3-only config keys dropped when they hold these (feature-off) values.
_NEUTRAL_KEYS = {"synchronized": False, "quantization_config": None, "lora_rank": None,
                 "lora_alpha": None, "rms_scaling": False, "data_format": "channels_last"}
# Activations whose name exists in both but whose function differs.
_DIFFERENT_ACTIVATIONS = {
    "hard_sigmoid": "Keras 3 computes relu6(x + 3) / 6, tf_keras clip(0.2 x + 0.5, 0, 1)",
}
# What tf_keras' base Layer accepts through **kwargs besides its named arguments.
_BASE_LAYER_KWARGS = {"input_dim", "input_shape", "batch_input_shape", "batch_size", "weights",
                      "activity_regularizer", "autocast"}


# ------------------------------------------------------------------ to_tf_keras
def to_tf_keras(model: Any, translators: Mapping[type, Callable[[Any], Any]] | None = None):
    """Rebuild a Keras 3 Functional/Sequential model as an equivalent tf_keras model.

    Each layer is recreated from its translated config as the tf_keras class of
    the same name (see `TRANSLATABLE_LAYERS`; `keras_slim.ChannelSelection`
    becomes its tf_keras twin, same slices or gather), called on the translated inputs in the
    original topological order, and given the original weights (matched by
    weight name). Shared layers stay shared, nested Functional/Sequential
    models are translated recursively, and a Sequential model stays Sequential.
    Regularizers are carried over (`keras_slim.bn_l1` becomes tf_keras `L1`);
    initializers tf_keras lacks fall back to its default (weights are copied).

    Args:
        model: a built Keras 3 Functional or Sequential model (not modified).
        translators: optional `{keras3_layer_class: fn}` for layers not covered;
            `fn(layer)` returns an unbuilt tf_keras layer; its weights are then
            copied by name like any other.

    Returns:
        A tf_keras model computing the same function (inference and training
        mode). Its layers have the original names.

    Raises:
        TypeError: `model` is not a Keras 3 graph model.
        TranslationError: a layer or one of its settings has no tf_keras
            equivalent; the message names the layer and the setting.
    """
    if _keras.is_tf_keras(model):
        raise ArgumentTypeError(f"to_tf_keras: model {model.name!r} is already a tf_keras model.")
    _keras.check_graph_model(model, "to_tf_keras")
    tfk = tf_keras()
    translator = _Translator(tfk, dict(translators or {}))
    new = translator.model(model)
    logger.info("Translated %r to tf_keras (%d layers).", model.name, translator.count)
    return new


class _Translator:
    def __init__(self, tfk: ModuleType, custom: dict):
        self.tfk = tfk
        self.custom = custom
        self.count = 0

    # -- models
    def model(self, model: Any):
        graph = _keras.read_model(model)
        if graph.kind == "sequential":
            return self._sequential(graph)
        return self._functional(graph)

    def _sequential(self, graph: _keras.ModelGraph):
        (inp,) = _keras.flatten(graph.inputs)
        seq = self.tfk.Sequential(name=graph.model.name)
        seq.add(self._input(inp))
        pairs = []
        for call in graph.calls:
            new = self._layer(call.layer)
            seq.add(new)
            pairs.append((call.layer, new))
        for old, new in pairs:
            self._copy_weights(old, new)
        return seq

    def _functional(self, graph: _keras.ModelGraph):
        made: dict[int, Any] = {}
        pairs = []

        def run(index, call, args, kwargs):
            if id(call.layer) not in made:
                made[id(call.layer)] = self._layer(call.layer)
                pairs.append((call.layer, made[id(call.layer)]))
            new = made[id(call.layer)]
            out = new(*args, **{k: v for k, v in kwargs.items() if v is not None})
            flat = _nest_flatten(out)
            if len(flat) != len(call.outputs):
                raise TranslationError(
                    f"to_tf_keras: layer {call.layer.name!r} returned {len(flat)} tensor(s) in "
                    f"tf_keras but {len(call.outputs)} in Keras 3.")
            return new, flat

        inputs, outputs, _ = _keras.replay(graph, run, self._input)
        for old, new in pairs:
            self._copy_weights(old, new)
        return self.tfk.Model(inputs=inputs, outputs=outputs, name=graph.model.name)

    def _input(self, t):
        dtype = t.dtype if isinstance(t.dtype, str) else getattr(t.dtype, "name", str(t.dtype))
        return self.tfk.Input(shape=tuple(t.shape[1:]), batch_size=t.shape[0], dtype=dtype,
                              name=_keras.input_name(t))

    # -- layers
    def _layer(self, layer: Any):
        self.count += 1
        cls = type(layer)
        for klass in cls.__mro__:
            if klass in self.custom:
                return self.custom[klass](layer)
        if _keras.is_graph_model(layer) and _keras.is_model(layer):
            return self.model(layer)
        name = cls.__name__
        from keras_slim.layers import ChannelSelection

        if cls is ChannelSelection:
            tf_cls = _keras.channel_selection_class("tf_keras")
            return tf_cls(indices=list(layer.indices), name=layer.name, dtype=_dtype_name(layer))
        import keras

        if name not in TRANSLATABLE_LAYERS or getattr(keras.layers, name, None) is not cls:
            kind = ("a keras.ops operation" if not _keras.is_layer(layer)
                    else f"a {cls.__module__}.{name} layer")
            raise TranslationError(
                f"to_tf_keras: cannot translate {layer.name!r}, {kind}. Supported: "
                f"{', '.join(TRANSLATABLE_LAYERS)}, ChannelSelection, nested Functional/"
                "Sequential models (exact classes; subclasses may change call()). Replace it "
                "with a supported layer, or pass translators={YourLayer: fn} where fn(layer) "
                "returns the equivalent unbuilt tf_keras layer.")
        tf_cls = getattr(self.tfk.layers, name, None)
        if tf_cls is None:
            raise TranslationError(f"to_tf_keras: tf_keras {self.tfk.__version__} has no "
                                   f"layers.{name} (needed for {layer.name!r}).")
        config = self._config(layer, tf_cls)
        try:
            return tf_cls(**config)
        except (TypeError, ValueError) as err:
            raise TranslationError(f"to_tf_keras: tf_keras.layers.{name}(**config) failed for "
                                   f"{layer.name!r}: {err}. Config: {config}") from err

    def _config(self, layer: Any, tf_cls: type) -> dict:
        name = type(layer).__name__
        accepted = _accepted_kwargs(tf_cls)
        renames = _RENAMED_KEYS.get(name, {})
        out = {}
        for key, value in layer.get_config().items():
            key = renames.get(key, key)
            if key not in accepted:
                if key in _NEUTRAL_KEYS and value == _NEUTRAL_KEYS[key]:
                    continue
                raise TranslationError(
                    f"to_tf_keras: {layer.name!r} ({name}) sets {key}={value!r}, which "
                    f"tf_keras.layers.{name} does not support.")
            if key == "dtype":
                value = _dtype_name(layer)
            elif key == "activation":
                value = self._activation(layer, value)
            elif key.endswith("_initializer"):
                value = self._object(layer, key, value, "initializers")
            elif key.endswith("_regularizer"):
                value = self._object(layer, key, value, "regularizers")
            elif key.endswith("_constraint"):
                value = self._object(layer, key, value, "constraints")
            if value is not _OMIT:
                out[key] = value
        return out

    def _activation(self, layer: Any, value: Any):
        if value in _DIFFERENT_ACTIVATIONS:
            raise TranslationError(
                f"to_tf_keras: activation {value!r} of {layer.name!r} has no exact tf_keras "
                f"equivalent ({_DIFFERENT_ACTIVATIONS[value]}).")
        if value is None or isinstance(value, str):
            try:
                self.tfk.activations.get(value)
            except (ValueError, TypeError) as err:
                raise TranslationError(f"to_tf_keras: activation {value!r} of {layer.name!r} "
                                       f"does not exist in tf_keras ({err}).") from err
            return value
        name = value.get("class_name") if isinstance(value, dict) else None
        if isinstance(name, str) and name.islower() and hasattr(self.tfk.activations, name):
            return name
        raise TranslationError(f"to_tf_keras: {layer.name!r} uses the custom activation "
                               f"{value!r}; use a built-in activation name or an Activation "
                               "layer tf_keras knows.")

    def _object(self, layer: Any, key: str, value: Any, kind: str):
        """Translate a serialized initializer / regularizer / constraint."""
        if value is None or isinstance(value, str):
            return value
        if not isinstance(value, dict) or "class_name" not in value:
            raise TranslationError(f"to_tf_keras: cannot read {key}={value!r} of {layer.name!r}.")
        cls_name, cfg = value["class_name"], dict(value.get("config") or {})
        if kind == "regularizers" and (cls_name == "BNL1" or
                                       value.get("registered_name") == "keras_slim>BNL1"):
            return self.tfk.regularizers.L1(l1=float(cfg.get("strength", 0.0)))
        tf_cls = getattr(getattr(self.tfk, kind), cls_name, None)
        if isinstance(tf_cls, type):
            allowed = _accepted_kwargs(tf_cls)
            dropped = {k: v for k, v in cfg.items() if k not in allowed and v is not None}
            kwargs = {k: v for k, v in cfg.items() if k in allowed}
            if not dropped:
                try:
                    return tf_cls(**kwargs)
                except (TypeError, ValueError) as err:
                    dropped = {"error": str(err)}
        else:
            dropped = {"class": cls_name}
        if kind == "initializers":  # only affects re-initialisation: the weights are copied
            logger.warning("to_tf_keras: %s of %r (%s) has no tf_keras equivalent (%s); using "
                           "tf_keras' default initializer (the trained weights are copied).",
                           key, layer.name, cls_name, dropped)
            return _OMIT
        raise TranslationError(
            f"to_tf_keras: {key} of {layer.name!r} is {cls_name}{cfg}, which tf_keras cannot "
            f"build ({dropped}). Remove it before converting (for keras_slim's sparsity "
            "penalty: keras_slim.add_bn_l1(model, 0)).")

    # -- weights
    def _copy_weights(self, old: Any, new: Any) -> None:
        if _keras.is_model(old):
            return  # nested model: copied when it was translated
        src = _keras.get_weights(old)
        dst = new.weights
        names = [_keras.weight_name(w) for w in dst]
        by_name = dict(src)
        if len(by_name) == len(src) and sorted(by_name) == sorted(names):
            values = [by_name[n] for n in names]
        elif len(src) == len(dst) and all(v.shape == tuple(w.shape) for (_, v), w in zip(src, dst)):
            values = [v for _, v in src]
        else:
            raise TranslationError(
                f"to_tf_keras: weights of {old.name!r} do not match between Keras 3 "
                f"{[(n, v.shape) for n, v in src]} and tf_keras "
                f"{[(n, tuple(w.shape)) for n, w in zip(names, dst)]}.")
        if values:
            new.set_weights(values)


_OMIT = object()  # a translated setting to leave out (tf_keras' default applies)


def _nest_flatten(structure) -> list:
    import tensorflow as tf

    return tf.nest.flatten(structure)


def _dtype_name(layer: Any) -> str:
    policy = getattr(layer, "dtype_policy", None)
    name = getattr(policy, "name", None)
    return name if isinstance(name, str) else str(getattr(layer, "dtype", "float32"))


def _accepted_kwargs(cls: type) -> set[str]:
    """Keyword arguments `cls(...)` takes, following **kwargs up the MRO to tf_keras' Layer."""
    accepted: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters
        accepted |= {n for n, p in params.items() if n != "self" and p.kind in (
            p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            return accepted
        if klass.__name__ == "Layer":
            return accepted | _BASE_LAYER_KWARGS
    return accepted
