"""`quantize_aware`: annotate a (translated) model for TFMOT's 8-bit QAT."""
from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Sequence

from keras_slim import _keras
from keras_slim.errors import ArgumentError, ArgumentTypeError, ModelError
from keras_slim.export.order import order_channels as _order_channels
from keras_slim.export.qat._imports import tfmot, tfmot_keras_module
from keras_slim.export.qat.translate import to_tf_keras

logger = logging.getLogger(__name__)

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
    order_channels: bool = True,
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
    * `ChannelSelection`: no fake-quant of its own (slices or a gather keep
      their input's scale, like MaxPooling2D/Reshape in TFMOT);
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
        order_channels: for a Keras 3 model, first reorder the channels its
            `ChannelSelection` layers read (as `export_tflite` does), so each
            selection is a few slices + one concatenation in the file instead
            of a GATHER; the same function, the same layer names.

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
    tfmot_ = tfmot()
    if _keras.is_tf_keras(model):
        _keras.check_graph_model(model, "quantize_aware")
        tk = model
    else:
        if order_channels:
            model, _ = _order_channels(model)
        tk = to_tf_keras(model, translators)
    qkeras = tfmot_keras_module()
    if not isinstance(tk, qkeras.Model):
        raise ArgumentTypeError(f"quantize_aware: TFMOT builds on {qkeras.__name__}, but the model is a "
                        f"{type(tk).__module__}.{type(tk).__name__}.")
    nested = [layer.name for layer in tk.layers if isinstance(layer, qkeras.Model)]
    if nested:
        raise ModelError(f"quantize_aware: TFMOT cannot quantize nested models ({nested}). "
                         "Rebuild the model with the sub-model's layers inlined.")
    configs = dict(quantize_configs or {})
    names = {layer.name for layer in tk.layers}
    unknown = sorted((set(configs) | set(skip)) - names)
    if unknown:
        raise ArgumentError(f"quantize_aware: no layer(s) named {unknown} in {tk.name!r}.")

    qk = tfmot_.quantization.keras
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
        raise ModelError(f"quantize_aware: none of the layers of {tk.name!r} can be quantized.")
    unsupported = [n for n in kinds["float"] if n not in skip]
    if unsupported:
        logger.warning(
            "quantize_aware: TFMOT has no 8-bit config for %s; they stay float in the QAT "
            "model. Pass quantize_configs={name: QuantizeConfig} to quantize them, or export "
            "with representative_data and allow_float_fallback=True.",
            ", ".join(f"{n} ({type(tk.get_layer(n)).__name__})" for n in unsupported))
    if kinds["pass-through"] or kinds["output-only"]:
        logger.info("quantize_aware: ChannelSelection (slices or gather, keeps its input's "
                    "scale): %s; output fake-quant only (no TFMOT config): %s.",
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
        inbound = _keras.tf_keras_inbound_layers(layer)
        if inbound is not None and len(inbound) == 1:
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
