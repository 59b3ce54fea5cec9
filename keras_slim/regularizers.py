"""The paper's sparsity penalty on BatchNormalization scaling factors."""
from __future__ import annotations

import numbers

import keras
from keras import ops
from keras_slim.errors import ArgumentError, ArgumentTypeError


@keras.saving.register_keras_serializable(package="keras_slim", name="BNL1")
class BNL1(keras.regularizers.Regularizer):
    """L1 penalty `strength * sum(|gamma|)` on BN scaling factors.

    This is the sparsity term of Network Slimming (Liu et al., 2017, eq. 1):
    it pushes unimportant channels' scaling factors towards zero so that the
    channels can later be removed. Autodiff of `abs` yields the paper's
    sub-gradient `strength * sign(gamma)`.

    Registered as `keras_slim>BNL1`, so a saved `.keras` file that uses it
    loads without `custom_objects` once `keras_slim` is imported.

    Args:
        strength: the paper's lambda; 1e-4 for VGG, 1e-5 for ResNet/DenseNet.
    """

    def __init__(self, strength: float = 1e-4):
        if isinstance(strength, bool) or not isinstance(strength, numbers.Real):
            raise ArgumentTypeError(
                f"bn_l1 strength must be a number, got {type(strength).__name__}: "
                f"{strength!r}. The paper uses 1e-4 (VGG) or 1e-5 (ResNet, DenseNet).")
        strength = float(strength)
        if not strength >= 0.0:  # also rejects NaN
            raise ArgumentError(
                f"bn_l1 strength must be a non-negative number, got {strength!r}. "
                "The paper uses 1e-4 (VGG) or 1e-5 (ResNet, DenseNet)."
            )
        self.strength = strength

    def __call__(self, x):
        return self.strength * ops.sum(ops.abs(x))

    def get_config(self) -> dict:
        return {"strength": self.strength}

    def __repr__(self) -> str:
        return f"BNL1(strength={self.strength:g})"


def bn_l1(strength: float = 1e-4) -> BNL1:
    """Return the BN-scale L1 regularizer, for `BatchNormalization(gamma_regularizer=...)`."""
    return BNL1(strength)
