"""Quantization-aware training (TFMOT) for slimmed models, and Keras 3 -> tf_keras.

TensorFlow Model Optimization (TFMOT 0.8) only works on tf_keras (Keras 2)
models, while keras_slim builds and prunes Keras 3 models. This module bridges
the two:

* `to_tf_keras(model)` rebuilds a Keras 3 Functional/Sequential model as an
  equivalent tf_keras model: each layer's config is translated to the tf_keras
  class of the same name, the graph is re-wired call by call and the weights
  are copied by name. (Loading a Keras 3 `.h5`/`.keras` file in tf_keras does
  not work, so no file round trip is involved.) Pruned models work too:
  `keras_slim.ChannelSelection` becomes a tf_keras layer doing `tf.gather` on
  the last axis, registered as `keras_slim>ChannelSelection`.
* `quantize_aware(model)` converts (if needed) and annotates the model for
  TFMOT's default 8-bit scheme and returns the QAT model, ready to compile and
  fine-tune. Layers that TFMOT has no 8-bit config for but that LiteRT runs in
  int8 get one (see `quantize_aware`); anything else stays float, named in a
  warning.
* `export_qat_tflite(qat_model, path)` converts the fine-tuned QAT model to an
  int8 `.tflite` file (atomic write), runs it in LiteRT and compares it with
  the QAT model, returning a `keras_slim.ExportReport`.

Process-global side effects, and what this module does about them
-------------------------------------------------------------------
Measured with TF 2.21 / Keras 3.15 / tf-keras 2.21 / TFMOT 0.8.1:

* `import tf_keras` alone changes nothing global: Keras 3 (`import keras`)
  and tf_keras models live side by side in one process, and `tf.keras` keeps
  pointing at whatever the environment selected. `to_tf_keras` only needs
  this import.
* `import tensorflow_model_optimization` sets `os.environ
  ["TF_USE_LEGACY_KERAS"] = "1"` for the rest of the process (and for every
  subprocess started later) and then reads `tf.keras`. If `tf.keras` had not
  been resolved yet, that read makes it resolve to tf_keras *permanently*, so
  user code written as `tf.keras.layers.Dense` silently switches from Keras 3
  to Keras 2. Code using `import keras` is not affected: Keras 3 models keep
  building, training, saving, loading and exporting normally afterwards.
* keras_slim therefore imports TFMOT only inside `quantize_aware` /
  `export_qat_tflite`, and around that import it (1) resolves `tf.keras`
  first under the user's current environment, so it stays what it would have
  been without TFMOT, and (2) restores `TF_USE_LEGACY_KERAS` to its previous
  value (unset if it was unset). TFMOT reads the variable only at import
  time, so it keeps working on tf_keras. A user's Keras 3 session (including
  `tf.keras` and subprocesses) is thus left as it was; the one remaining
  effect is that `tf_keras` and TFMOT are loaded in the process.
* If the user imported TFMOT before calling keras_slim, the variable is
  already set (by TFMOT) and is left alone.

QAT models are tf_keras models: compile and fit them with tf_keras optimizers
and losses (strings such as `"adam"` work), and load a saved one inside
`tfmot.quantization.keras.quantize_scope()`.
"""
from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
import os
import sys
import tempfile
import warnings
from types import ModuleType
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from keras_slim import _keras
from keras_slim.errors import TranslationError
from keras_slim.export import _deps
from keras_slim.export._atomic import atomic_file, check_output_path
from keras_slim.export._flatbuffer import non_builtin_ops, tflite_op_histogram
from keras_slim.export._model_io import (
    ModelInterface, calibration_and_samples, iter_batches, labelled_check,
    verify as verify_outputs,
)
from keras_slim.export.report import ExportError, ExportReport

logger = logging.getLogger(__name__)

__all__ = ["to_tf_keras", "quantize_aware", "export_qat_tflite", "TranslationError",
           "TRANSLATABLE_LAYERS"]

_QAT_HINT = "Install the QAT extras with: pip install 'keras-slim[qat]'"
_LEGACY_ENV = "TF_USE_LEGACY_KERAS"
_ENDPOINT = "serving_default"

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


# ------------------------------------------------------------------ lazy imports
def _tf_keras() -> ModuleType:
    """`tf_keras`, imported on first use (no process-global side effects)."""
    try:
        return importlib.import_module("tf_keras")
    except ImportError as err:
        raise ImportError(f"Converting to tf_keras needs the 'tf-keras' package ({err}). "
                          f"{_QAT_HINT}") from err


@contextlib.contextmanager
def _preserve_legacy_keras_env():
    """Keep `tf.keras` and TF_USE_LEGACY_KERAS as they are across a TFMOT import."""
    import tensorflow as tf

    # Resolve tf.keras's lazy loader now, under the user's current environment;
    # once resolved it never changes, whatever TFMOT sets afterwards.
    getattr(tf.keras, "version", None)
    before = os.environ.get(_LEGACY_ENV)
    try:
        yield
    finally:
        after = os.environ.get(_LEGACY_ENV)
        if after != before:
            if before is None:
                os.environ.pop(_LEGACY_ENV, None)
            else:
                os.environ[_LEGACY_ENV] = before
            logger.debug("Restored %s=%r after importing TFMOT (it had set %r).",
                         _LEGACY_ENV, before, after)


def _tfmot() -> ModuleType:
    """`tensorflow_model_optimization`, imported without flipping the user's Keras."""
    if "tensorflow_model_optimization" not in sys.modules:
        _tf_keras()
        with _preserve_legacy_keras_env():
            try:
                importlib.import_module("tensorflow_model_optimization")
            except ImportError as err:
                raise ImportError(
                    "Quantization-aware training needs the 'tensorflow-model-optimization' "
                    f"package ({err}). {_QAT_HINT}") from err
    return sys.modules["tensorflow_model_optimization"]


def _tfmot_keras_module() -> ModuleType:
    """The Keras module TFMOT builds its layers with (must be tf_keras)."""
    _tfmot()
    from tensorflow_model_optimization.python.core.keras import compat

    return compat.keras


# ------------------------------------------------------------------ to_tf_keras
def to_tf_keras(model: Any, translators: Mapping[type, Callable[[Any], Any]] | None = None):
    """Rebuild a Keras 3 Functional/Sequential model as an equivalent tf_keras model.

    Each layer is recreated from its translated config as the tf_keras class of
    the same name (see `TRANSLATABLE_LAYERS`; `keras_slim.ChannelSelection`
    becomes a tf_keras gather layer), called on the translated inputs in the
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
        raise TypeError(f"to_tf_keras: model {model.name!r} is already a tf_keras model.")
    _keras.check_graph_model(model, "to_tf_keras")
    tfk = _tf_keras()
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


# ------------------------------------------------------------------ quantize_aware
# Layers LiteRT runs in int8 but TFMOT's default registry has no config for:
# they get an output fake-quant, as TFMOT's own element-wise layers do.
_OUTPUT_QUANTIZED = ("Multiply", "Subtract", "Average", "Maximum", "Minimum", "BatchNormalization",
                     "PReLU", "ELU", "Rescaling", "Activation")
# BN right after these (linear activation) is folded by TFMOT's layout transforms.
_BN_FOLDED_INTO = ("Conv2D", "DepthwiseConv2D", "Dense", "SeparableConv2D", "SeparableConv1D")


def quantize_aware(
    model: Any,
    *,
    quantize_configs: Mapping[str, Any] | None = None,
    skip: Sequence[str] = (),
    translators: Mapping[type, Callable[[Any], Any]] | None = None,
):
    """Return a quantization-aware (fake-quant) tf_keras copy of `model` for fine-tuning.

    A Keras 3 model is first rebuilt with `to_tf_keras`; a tf_keras model is
    used as is (never modified). Each layer is then annotated for TFMOT's
    default 8-bit scheme and `tfmot.quantization.keras.quantize_apply` builds
    the QAT model (conv + BN (+ ReLU) fused the way the TFLite converter will
    fuse them):

    * layers in TFMOT's registry (Conv2D, DepthwiseConv2D, Dense, ReLU, Add,
      Concatenate, pooling, Flatten/Reshape, Dropout, ZeroPadding, ...):
      TFMOT's own config;
    * `ChannelSelection`: no fake-quant of its own (a gather keeps its input's
      scale, like MaxPooling2D/Reshape in TFMOT);
    * Multiply (squeeze-excitation), Subtract/Average/Maximum/Minimum, a
      BatchNormalization that does not directly follow a conv/dense (e.g. the
      pre-activation BNs), PReLU/ELU/Rescaling and Activation layers with
      activations TFMOT does not list: output fake-quant only; LiteRT runs them
      as int8 MUL/ADD/... ops. Such a BN becomes MUL + ADD in TFLite and the
      tensor between them has no QAT range, so export it with
      `representative_data` (the converter calibrates just those tensors);
    * anything else stays float (unannotated) and is named in a warning; give
      it a config with `quantize_configs`, or convert with
      `export_qat_tflite(..., representative_data=..., allow_float_fallback=True)`.

    The model must not contain nested models (a TFMOT limitation); flatten them
    first. TFMOT is imported here, without changing `tf.keras` or
    TF_USE_LEGACY_KERAS for the caller (see the module docstring).

    Args:
        model: a Keras 3 or tf_keras Functional/Sequential model.
        quantize_configs: `{layer_name: tfmot QuantizeConfig}` overriding the
            choice above for those layers.
        skip: names of layers to leave float.
        translators: passed to `to_tf_keras`.

    Returns:
        The tf_keras QAT model (uncompiled). Compile it (e.g. `"adam"` and a
        loss) and fine-tune for an epoch or two, then `export_qat_tflite`.
        TFMOT sets the fake-quant ranges during training steps; before the
        first `fit` they hold their initial [-6, 6] and the model's outputs are
        meaningless (chance accuracy on CIFAR-10).

    Raises:
        TypeError / TranslationError: see `to_tf_keras`.
        ValueError: nested models, or names in `quantize_configs`/`skip` that
            are not layers of the model.
    """
    tfmot = _tfmot()
    if _keras.is_tf_keras(model):
        _keras.check_graph_model(model, "quantize_aware")
        tk = model
    else:
        tk = to_tf_keras(model, translators)
    qkeras = _tfmot_keras_module()
    if not isinstance(tk, qkeras.Model):
        raise TypeError(f"quantize_aware: TFMOT builds on {qkeras.__name__}, but the model is a "
                        f"{type(tk).__module__}.{type(tk).__name__}.")
    nested = [layer.name for layer in tk.layers if isinstance(layer, qkeras.Model)]
    if nested:
        raise ValueError(f"quantize_aware: TFMOT cannot quantize nested models ({nested}). "
                         "Rebuild the model with the sub-model's layers inlined.")
    configs = dict(quantize_configs or {})
    names = {layer.name for layer in tk.layers}
    unknown = sorted((set(configs) | set(skip)) - names)
    if unknown:
        raise ValueError(f"quantize_aware: no layer(s) named {unknown} in {tk.name!r}.")

    qk = tfmot.quantization.keras
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_configs as configs_mod,
        default_8bit_quantize_registry as registry_mod,
    )

    registry = registry_mod.Default8BitQuantizeRegistry()
    producers = _single_producers(tk)
    plan: dict[str, Any] = {}  # name -> config (None: TFMOT's own)
    kinds: dict[str, list[str]] = {"tfmot": [], "pass-through": [], "output-only": [],
                                   "custom": [], "float": []}
    for layer in tk.layers:
        if isinstance(layer, qkeras.layers.InputLayer):
            continue
        name, cls_name = layer.name, type(layer).__name__
        if name in skip:
            kinds["float"].append(name)
        elif name in configs:
            plan[name] = configs[name]
            kinds["custom"].append(name)
        elif cls_name == "ChannelSelection":
            plan[name] = configs_mod.NoOpQuantizeConfig()
            kinds["pass-through"].append(name)
        elif cls_name == "BatchNormalization" and _bn_is_fused(producers.get(name)):
            plan[name] = None
            kinds["tfmot"].append(name)
        elif registry.supports(layer) and not _unsupported_activation(layer):
            plan[name] = None
            kinds["tfmot"].append(name)
        elif cls_name in _OUTPUT_QUANTIZED:
            plan[name] = configs_mod.Default8BitOutputQuantizeConfig()
            kinds["output-only"].append(name)
        else:
            kinds["float"].append(name)
    if not plan:
        raise ValueError(f"quantize_aware: none of the layers of {tk.name!r} can be quantized.")
    unsupported = [n for n in kinds["float"] if n not in skip]
    if unsupported:
        logger.warning(
            "quantize_aware: TFMOT has no 8-bit config for %s; they stay float in the QAT "
            "model. Pass quantize_configs={name: QuantizeConfig} to quantize them, or export "
            "with representative_data and allow_float_fallback=True.",
            ", ".join(f"{n} ({type(tk.get_layer(n)).__name__})" for n in unsupported))
    if kinds["pass-through"] or kinds["output-only"]:
        logger.info("quantize_aware: ChannelSelection (gather, keeps its input's scale): %s; "
                    "output fake-quant only (no TFMOT config): %s.",
                    kinds["pass-through"] or "-", kinds["output-only"] or "-")

    def annotate(layer):
        if layer.name in plan:
            return qk.quantize_annotate_layer(layer, plan[layer.name])
        return layer

    with _quantize_scope(qk):
        annotated = qkeras.models.clone_model(tk, clone_function=annotate)
        qat = qk.quantize_apply(annotated)
    logger.info("quantize_aware: %s -> QAT model (%d layers via TFMOT, %d output-only, %d "
                "pass-through, %d custom, %d float).", tk.name, len(kinds["tfmot"]),
                len(kinds["output-only"]), len(kinds["pass-through"]), len(kinds["custom"]),
                len(kinds["float"]))
    return qat


def _quantize_scope(qk):
    """TFMOT's custom-object scope plus keras_slim's tf_keras layers."""
    return qk.quantize_scope({"ChannelSelection": _keras.channel_selection_class("tf_keras")})


def _single_producers(tk) -> dict[str, Any]:
    """{layer name: the one layer feeding it} for layers with one inbound layer."""
    out = {}
    for layer in tk.layers:
        nodes = layer._inbound_nodes  # tf_keras node API
        if len(nodes) != 1:
            continue
        inbound = _nest_flatten(nodes[0].inbound_layers)
        if len(inbound) == 1:
            out[layer.name] = inbound[0]
    return out


def _bn_is_fused(producer) -> bool:
    """True if TFMOT's layout transforms fold this BN into its producer."""
    if producer is None or type(producer).__name__ not in _BN_FOLDED_INTO:
        return False
    activation = getattr(producer, "activation", None)
    return getattr(activation, "__name__", "linear") == "linear"


def _unsupported_activation(layer) -> bool:
    """Activation layers whose function TFMOT's Activation config rejects."""
    if type(layer).__name__ != "Activation":
        return False
    name = getattr(layer.activation, "__name__", None)
    return name not in ("relu", "swish", "gelu", "relu6", "linear", "softmax", "sigmoid", "tanh")


# ------------------------------------------------------------------ export
def export_qat_tflite(
    qat_model: Any,
    path: str | os.PathLike,
    *,
    int8_io: bool | str = False,
    representative_data: Any = None,
    allow_float_fallback: bool = False,
    verify: bool = True,
    sample_inputs: Any = None,
    labelled_data: Any = None,
    batch_size: int | None = 1,
    tolerance: float | None = None,
    num_calibration_samples: int = 100,
    num_verify_samples: int = 8,
    label_output: str | None = None,
) -> ExportReport:
    """Convert a fine-tuned QAT model (from `quantize_aware`) to an int8 .tflite file.

    The TFLite converter (`Optimize.DEFAULT`) turns the fake-quant ranges
    learned during QAT into int8 weights and activations. Tensors QAT has no
    range for (inside a BatchNormalization that follows no conv, as in
    pre-activation ResNets) are calibrated on `representative_data`; without
    it such a model fails with an ExportError that says so. The result must be
    fully int8 unless `allow_float_fallback`; the file is written atomically, run in LiteRT
    through its signature runner and compared with the QAT model (which
    simulates the same quantization), like `keras_slim.export_tflite`.

    Args:
        qat_model: the tf_keras model returned by `quantize_aware` (trained).
        path: the .tflite file; nothing is left there on failure.
        int8_io: True/"int8" or "uint8" makes the file's inputs/outputs
            integer; False keeps float32 I/O with (de)quantize at the ends.
        representative_data: optional calibration inputs (same forms as
            `export_tflite`), only for layers QAT left without ranges.
        allow_float_fallback: let ops without int8 ranges/kernels stay float.
        verify: compare the file's outputs with the QAT model's; the error is
            reported and, if `tolerance` is given, enforced (relative to
            max(1, max |output|)).
        sample_inputs: verification inputs (default: representative samples,
            else random in [-1, 1)).
        labelled_data: (x, y) for top-1 agreement and both accuracies.
        batch_size: static batch size of the file (None: dynamic).

    Returns:
        ExportReport (format "tflite", quantize "int8", details["source"] = "qat").

    Raises:
        TypeError: `qat_model` is not a tf_keras model.
        ExportError: conversion failed or the verification tolerance was exceeded.
    """
    tf = _deps.tensorflow()
    qkeras = _tfmot_keras_module()
    if not isinstance(qat_model, qkeras.Model) or not _keras.is_graph_model(qat_model):
        raise TypeError(f"export_qat_tflite expects the tf_keras model returned by "
                        f"quantize_aware, got {type(qat_model).__module__}."
                        f"{type(qat_model).__name__}. For a Keras 3 model use "
                        "keras_slim.export_tflite(model, path, quantize='int8', ...).")
    if int8_io not in (False, True, "int8", "uint8"):
        raise ValueError(f"int8_io={int8_io!r}: use False, True/'int8' or 'uint8'.")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}.")
    if tolerance is not None and not tolerance > 0:
        raise ValueError(f"tolerance must be > 0 or None, got {tolerance!r}.")
    fake_quant = sum(type(layer).__name__ in ("QuantizeWrapperV2", "QuantizeWrapper",
                                              "QuantizeLayer") for layer in qat_model.layers)
    if not fake_quant:
        logger.warning("export_qat_tflite: %r has no TFMOT quantize layers; was it made by "
                       "quantize_aware? Activations will be calibrated only if "
                       "representative_data is given.", qat_model.name)
    target = check_output_path(path, ".tflite")
    iface = _tf_keras_interface(qat_model)
    calibration, samples = calibration_and_samples(iface, representative_data, sample_inputs,
                                                   num_calibration_samples, num_verify_samples)

    io_type = {False: None, True: "int8", "int8": "int8", "uint8": "uint8"}[int8_io]
    buf = _convert_qat(tf, qat_model, iface, batch_size, io_type, calibration,
                       allow_float_fallback)
    histogram = tflite_op_histogram(buf)
    extra = non_builtin_ops(histogram)
    if extra:
        raise ExportError(f"The converted file needs non-builtin ops {extra}; the stock LiteRT "
                          "runtime cannot run it.")
    float_ops = _float_compute_ops(buf)
    if float_ops and not allow_float_fallback:
        fix = ("pass representative_data (a few hundred training inputs) so the converter "
               "can calibrate the tensors QAT has no range for (e.g. the MUL/ADD a "
               "BatchNormalization without a preceding conv becomes)" if calibration is None
               else "give those layers a QuantizeConfig in quantize_aware(quantize_configs=...)")
        raise ExportError(f"The QAT model did not convert to full int8: {float_ops} stay "
                          f"float. To fix, {fix}; or pass allow_float_fallback=True to accept "
                          "float ops. Nothing was written.")
    report = ExportReport(path=os.fspath(path), format="tflite", quantize="int8",
                          size_bytes=len(buf), op_histogram=histogram, inputs=[], outputs=[],
                          details={"source": "qat", "batch_size": batch_size,
                                   "io_type": io_type or "float32", "float_ops": float_ops,
                                   "calibrated": calibration is not None})
    from keras_slim.export.tflite import _SignatureRunner

    with atomic_file(target) as tmp:
        with open(tmp, "wb") as f:
            f.write(buf)
        runner = _SignatureRunner(tmp, iface)
        report.inputs, report.outputs = runner.input_infos(), runner.output_infos()
        if verify:
            report.max_abs_error, report.max_rel_error = verify_outputs(iface, runner, batch_size,
                                                                        samples)
            report.verified, report.num_verify_samples = True, len(samples[0])
            if not np.isfinite(report.max_rel_error) or (
                    tolerance is not None and report.max_rel_error >= tolerance):
                raise ExportError(
                    f"Verification failed: the int8 file differs from the QAT model by "
                    f"{report.max_rel_error:.3g} relative (max |diff| "
                    f"{report.max_abs_error:.3g}), allowed < {tolerance}. Nothing was written "
                    f"to {report.path!r}.")
        if labelled_data is not None:
            (report.top1_agreement, report.keras_accuracy,
             report.exported_accuracy) = labelled_check(iface, runner, batch_size,
                                                        labelled_data, label_output)
        del runner
    logger.info("Exported QAT int8 %s (%d bytes, max rel error %s).", target, len(buf),
                report.max_rel_error)
    return report


def _tf_keras_interface(model) -> ModelInterface:
    """The ModelInterface the export helpers use, read off a tf_keras model."""
    import re

    def clean(names, prefix):
        out = []
        for i, n in enumerate(names):
            c = re.sub(r"\W", "_", n or "") or f"{prefix}_{i}"
            c = f"{prefix}_{c}" if c[0].isdigit() else c
            base, k = c, 1
            while c in out:
                c, k = f"{base}_{k}", k + 1
            out.append(c)
        return out

    inputs = list(model.inputs)
    input_names = clean([t.name.split(":")[0] for t in inputs], "input")
    output_names = clean(list(model.output_names), "output")
    aliases = {}
    for i, (n, t) in enumerate(zip(input_names, inputs)):
        for alias in (n, t.name, t.name.split(":")[0]):
            aliases.setdefault(alias, i)
    return ModelInterface(model=model, input_names=input_names,
                          input_shapes=[tuple(t.shape) for t in inputs],
                          input_dtypes=[t.dtype.name for t in inputs],
                          output_names=output_names, aliases=aliases)


def _convert_qat(tf, model, iface: ModelInterface, batch_size, io_type, calibration,
                 allow_float_fallback: bool) -> bytes:
    specs = [tf.TensorSpec((batch_size,) + tuple(shape[1:]), dtype, name=name)
             for name, shape, dtype in zip(iface.input_names, iface.input_shapes,
                                           iface.input_dtypes)]

    @tf.function(input_signature=specs, autograph=False)
    def serve(*args):
        x = args[0] if len(args) == 1 else list(args)
        return dict(zip(iface.output_names, tf.nest.flatten(model(x, training=False))))

    with tempfile.TemporaryDirectory(prefix="keras_slim_qat_") as saved:
        # Track the variables only: saving the tf_keras model itself would also
        # trace and serialize every layer's call (slow, and not needed here).
        module = tf.Module()
        module.model_variables = list(model.variables)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tf.saved_model.save(module, saved,
                                signatures={_ENDPOINT: serve.get_concrete_function()})
        converter = tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=[_ENDPOINT])
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        # Not TFLITE_BUILTINS_INT8: on the SavedModel route TF 2.21 checks for a
        # representative dataset before it looks for the QAT fake-quant ops, so it
        # would refuse a QAT model. Float leftovers are checked on the result.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if io_type:
            converter.inference_input_type = getattr(tf, io_type)
            converter.inference_output_type = getattr(tf, io_type)
        if calibration is not None:
            step = batch_size or 1

            def gen():
                for batch in iter_batches(calibration, step):
                    if len(batch[0]) == step:
                        yield dict(zip(iface.input_names, batch))

            converter.representative_dataset = gen
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return converter.convert()
        except Exception as err:  # ConverterError and friends: explain, keep the cause
            lines = [ln.strip() for ln in str(err).splitlines() if "error" in ln.lower()]
            hint = ("" if allow_float_fallback else
                    " If some op has no int8 range or kernel, pass representative_data (to "
                    "calibrate tensors QAT left without a range) and/or "
                    "allow_float_fallback=True.")
            raise ExportError("QAT TFLite conversion failed ("
                              f"{type(err).__name__}):\n" + "\n".join(lines[:8] or
                                                                      [str(err)[:2000]]) + hint
                              ) from err


def _float_compute_ops(buf: bytes) -> list[str]:
    """Ops (other than QUANTIZE/DEQUANTIZE) whose output tensor is float32."""
    schema = _deps.litert_schema()
    model = schema.Model.GetRootAs(bytearray(buf), 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items()
             if not k.startswith("_") and isinstance(v, int)}
    out = set()
    for s in range(model.SubgraphsLength()):
        sub = model.Subgraphs(s)
        for j in range(sub.OperatorsLength()):
            op = sub.Operators(j)
            code = model.OperatorCodes(op.OpcodeIndex())
            name = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?")
            if name in ("QUANTIZE", "DEQUANTIZE") or op.OutputsLength() == 0:
                continue
            if sub.Tensors(op.Outputs(0)).Type() == schema.TensorType.FLOAT32:
                out.add(name)
    return sorted(out)
