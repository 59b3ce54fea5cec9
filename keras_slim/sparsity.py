"""Attach the BN-scale L1 penalty to an existing model (sparsity training)."""
from __future__ import annotations

import logging

from keras_slim import _keras
from keras_slim.regularizers import BNL1
from keras_slim.errors import ModelError

logger = logging.getLogger(__name__)


def add_bn_l1(model, strength: float = 1e-4):
    """Put `strength * sum|gamma|` on every BatchNormalization scaling factor.

    Walks `model` including nested models and attaches a `BNL1` regularizer to
    each trainable BN gamma, so that the next `model.fit` trains with channel
    sparsity. The penalty appears in `model.losses` (the variable itself carries
    it: setting `layer.gamma_regularizer` after build alone has no effect in
    Keras 3) and in `get_config`, so it survives saving and `keras_slim.prune`.

    A second call replaces the penalty rather than stacking it; `strength=0`
    removes it. BNs built with `scale=False` have no gamma and are skipped.

    Call it on the model you `fit`. `model`'s own compiled train step is reset,
    but a model that contains it (a backbone inside a classifier) and has
    already been fitted keeps its old one and trains without the penalty:
    call `add_bn_l1(outer, ...)` instead, or `outer.compile(...)` again.

    On several devices (`tf.distribute.MirroredStrategy`, JAX's
    `keras.distribution.DataParallel`) `fit` counts the penalty once per global
    step: keep the one-device strength (Keras >= 3.8 for MirroredStrategy; see
    the README, "Training on several devices"). With MirroredStrategy, build,
    compile and `keras_slim.prune` inside `strategy.scope()`.

    Args:
        model: a built Keras model (Sequential, Functional or subclassed).
        strength: the paper's lambda (1e-4 for VGG, 1e-5 for ResNet/DenseNet).

    Returns:
        `model` itself (changed in place), for chaining.
    """
    _keras.check_model(model, "add_bn_l1")
    reg = BNL1(strength) if strength else None
    touched = 0
    for layer in _keras.walk_layers(model):
        if not _keras.is_batch_norm(layer) or not getattr(layer, "scale", False):
            continue
        if not layer.built:
            raise ModelError(
                f"add_bn_l1: layer {layer.name!r} is not built. Build the model "
                "first (call it on data or give it an Input), then add the penalty."
            )
        _keras.set_weight_regularizer(layer, "gamma", reg)
        touched += 1
    if touched == 0:
        raise ModelError(
            f"add_bn_l1: model {model.name!r} has no BatchNormalization layer "
            "with a scaling factor (scale=True); Network Slimming needs one BN "
            "per prunable channel."
        )
    _keras.reset_compiled_functions(model)
    logger.info("add_bn_l1: strength %g on %d BatchNormalization layers", strength, touched)
    return model
