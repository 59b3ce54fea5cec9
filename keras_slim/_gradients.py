"""Gradients of a loss with respect to chosen weights, on each Keras backend.

The one place keras_slim differentiates (the "taylor" criterion needs
dLoss/dW). The forward pass is the model's own call in inference mode
(`training=False`: BN uses its moving statistics, dropout is off), run
inside `keras.StatelessScope` with the chosen variables mapped to plain
tensors, so nothing is assigned and frozen (non-trainable) weights
differentiate as well as trainable ones. Each backend then differentiates
with its own means: `tf.GradientTape` (TensorFlow is imported only when
Keras already runs on it), `jax.value_and_grad`, `torch.autograd.grad`.
tf_keras (Keras 2) models are TensorFlow only and are taped directly.
"""
from __future__ import annotations

from typing import Callable, Sequence

import keras
import numpy as np

from keras_slim import _keras


class LossGradients:
    """`(loss, [dloss/dv as numpy for v in variables])` for one batch at a time.

    `loss_fn(y_true, y_pred, sample_weight)` returns a scalar. A variable the
    loss does not depend on gets a zero gradient. On JAX the step is compiled
    once per batch shape (eager JAX would compile every op instead).
    """

    def __init__(self, model, variables: Sequence, loss_fn: Callable):
        self.model, self.variables, self.loss_fn = model, list(variables), loss_fn
        self._step = None
        if not _keras.is_tf_keras(model):
            backend = keras.backend.backend()
            if backend not in _BACKENDS:
                from keras_slim.errors import MissingDependencyError

                raise MissingDependencyError(f"gradients on the {backend!r} Keras backend are "
                                             f"not supported; use one of {sorted(_BACKENDS)}")
            self._step = _BACKENDS[backend](self._forward)

    def _forward(self, values, x, y, weight):
        with keras.StatelessScope(state_mapping=list(zip(self.variables, values))):
            return self.loss_fn(y, self.model(x, training=False), weight)

    def __call__(self, x, y, sample_weight=None) -> tuple[float, list[np.ndarray]]:
        if self._step is None:
            loss, grads = _tf_keras(self.model, self.variables, x, y, self.loss_fn,
                                    sample_weight)
        else:
            loss, grads = self._step([v.value for v in self.variables], x, y, sample_weight)
        return float(loss), [np.zeros(tuple(v.shape), np.float32) if g is None
                             else np.asarray(g, np.float32).reshape(tuple(v.shape))
                             for v, g in zip(self.variables, grads)]


def _tensorflow(forward):
    import tensorflow as tf  # the running backend: Keras has imported it already

    def step(values, x, y, weight):
        values = [tf.convert_to_tensor(v) for v in values]
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(values)
            loss = forward(values, x, y, weight)
        grads = tape.gradient(loss, values)
        return loss.numpy(), [None if g is None else g.numpy() for g in grads]

    return step


def _jax(forward):
    import jax

    compiled = jax.jit(jax.value_and_grad(forward))

    def step(values, x, y, weight):
        loss, grads = compiled(list(values), x, y, weight)
        return np.asarray(loss), [np.asarray(g) for g in grads]

    return step


def _torch(forward):
    import torch

    def step(values, x, y, weight):
        leaves = [v.detach().clone().requires_grad_(True) for v in values]
        loss = forward(leaves, x, y, weight)
        grads = torch.autograd.grad(loss, leaves, allow_unused=True)
        return loss.detach().cpu().numpy(), [None if g is None else g.detach().cpu().numpy()
                                             for g in grads]

    return step


_BACKENDS = {"tensorflow": _tensorflow, "jax": _jax, "torch": _torch}


def _tf_keras(model, variables, x, y, loss_fn, sample_weight):
    import tensorflow as tf  # a tf_keras model: TensorFlow is its runtime

    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(variables)
        loss = loss_fn(y, model(x, training=False), sample_weight)
    grads = tape.gradient(loss, variables)
    return loss.numpy(), [None if g is None else g.numpy() for g in grads]
