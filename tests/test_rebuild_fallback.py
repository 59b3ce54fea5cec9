"""Layers whose config does not round-trip (keras-hub's `Identity(dtype=self.dtype_policy)`).

A layer kept as it is (a barrier, or a weightless stock layer) is copied with its
own weights; the input model is never touched. One that must change is a clear error.
"""
import warnings

import keras
import numpy as np
import pytest
from keras import layers

import keras_slim
from keras_slim import testing
from keras_slim.errors import PruneError

pytestmark = pytest.mark.backend_agnostic  # pytest.ini; also run on KERAS_BACKEND=jax


class PolicyScale(layers.Layer):
    """No get_config, built from a DTypePolicy object: its config cannot be made.

    Its weight goes through an op that is not an element-wise binary one (a reshape):
    it cannot be lifted into the trace, so the layer is a barrier.
    """

    def __init__(self, policy, **kwargs):
        super().__init__(dtype=policy, **kwargs)

    def build(self, shape):
        self.scale = self.add_weight(shape=(shape[-1],), initializer="ones", name="scale")

    def call(self, x):
        return x * keras.ops.reshape(self.scale, (1, 1, 1, -1))


def _model():
    policy = keras.DTypePolicy("float32")
    inp = keras.Input((None, None, 3))
    x = layers.BatchNormalization()(layers.Conv2D(8, 3, padding="same")(inp))
    x = layers.Identity(dtype=policy, name="ident")(x)  # stock, weightless; channels shrink
    x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(6, 3, padding="same")(x)))
    x = PolicyScale(policy, name="scaled")(x)  # barrier: kept whole
    x = layers.BatchNormalization()(layers.Conv2D(5, 1)(x))
    return keras.Model(inp, layers.Dense(2)(layers.GlobalAveragePooling2D()(x)))


def test_layers_whose_config_does_not_round_trip_are_copied_not_shared():
    m = _model()
    scaled = m.get_layer("scaled")
    scaled.scale.assign(np.linspace(0.5, 2.0, 6).astype("float32"))
    with pytest.raises(NotImplementedError):
        scaled.get_config()
    nodes = {layer.name: len(layer._inbound_nodes) for layer in m.layers}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = testing.exactness(m, 0.5, seed=1, input_size=8)
    assert r.difference < 1e-5 and r.plan.removed_channels > 0
    assert "scaled" in dict(r.plan.barriers)
    copy = r.model.get_layer("scaled")
    assert copy is not scaled and copy.scale is not scaled.scale
    np.testing.assert_array_equal(copy.scale.numpy(), scaled.scale.numpy())
    assert r.model.get_layer("ident") is not m.get_layer("ident")
    assert {layer.name: len(layer._inbound_nodes) for layer in m.layers} == nodes  # untouched
    before = scaled.scale.numpy().copy()
    r.model.compile("sgd", "mse")
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype("float32")
    r.model.fit(x, np.ones((4, 2)), epochs=1, verbose=0)
    assert np.abs(copy.scale.numpy() - before).max() > 0  # the copy trains ...
    np.testing.assert_array_equal(scaled.scale.numpy(), before)  # ... the original does not
    assert any(w is copy.scale for w in r.model.trainable_weights)


class PolicyBias(PolicyScale):
    """Per-channel weights, no config; a user handler passes channels through it."""

    def call(self, x):
        return x + self.scale


class PassHandler(keras_slim.Handler):
    shares_channels = True

    def flow(self, ctx, ins):
        return [ins[0]]


def test_a_layer_that_must_change_but_cannot_be_recreated_is_a_clear_error():
    policy = keras.DTypePolicy("float32")
    inp = keras.Input((8, 8, 3))
    x = layers.BatchNormalization()(layers.Conv2D(8, 3, padding="same")(inp))
    x = PolicyBias(policy, name="biased")(x)
    m = keras.Model(inp, layers.Dense(2)(layers.GlobalAveragePooling2D()(layers.Conv2D(4, 1)(x))))
    testing.kill_channels(m, 0.5, seed=0)
    with pytest.raises(PruneError) as e:
        keras_slim.prune(m, threshold=1e-12, custom_handlers={"biased": PassHandler()})
    text = str(e.value)
    assert "'biased'" in text and "PolicyBias" in text and "channels change" in text
    assert "get_config" in text


class Forgetful(layers.Layer):
    """Its get_config forgets `extra`: from_config builds a layer with one weight more."""

    def __init__(self, extra=1, **kwargs):
        super().__init__(**kwargs)
        self.extra = extra

    def build(self, shape):
        self.scale = self.add_weight(shape=(shape[-1],), initializer="ones", name="scale")
        for i in range(self.extra):
            self.add_weight(shape=(), initializer="zeros", name=f"extra{i}")

    def call(self, x):
        return x * keras.ops.reshape(self.scale, (1, 1, 1, -1))  # not liftable: a barrier

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable}


def test_a_barrier_that_from_config_rebuilds_differently_is_copied():
    inp = keras.Input((8, 8, 3))
    x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(8, 3, padding="same")(inp)))
    x = layers.BatchNormalization()(layers.Conv2D(6, 1)(x))
    x = Forgetful(extra=0, name="forgetful")(x)
    m = keras.Model(inp, layers.Dense(2)(layers.GlobalAveragePooling2D()(layers.Conv2D(4, 1)(x))))
    m.get_layer("forgetful").scale.assign(np.linspace(0.5, 2.0, 6).astype("float32"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = testing.exactness(m, 0.5, seed=0)
    assert r.difference < 1e-5 and r.plan.removed_channels > 0
    copy = r.model.get_layer("forgetful")
    assert len(copy.weights) == 1 and copy.scale is not m.get_layer("forgetful").scale


def test_random_shear_whose_config_keras_cannot_read_back_is_copied():
    # Keras 3.15's RandomShear.get_config() stores x_factor as (-0.2, 0.2), which its own
    # __init__ refuses (a barrier, kept as it is: copied); it holds a SeedGenerator and a
    # DynamicBackend (`self.backend`, whose copy once recursed in __getattr__)
    inp = keras.Input((8, 8, 3))
    x = layers.RandomShear(0.2, 0.1, seed=3, name="shear")(inp)
    x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(8, 3, padding="same")(x)))
    m = keras.Model(inp, layers.Dense(2)(layers.GlobalAveragePooling2D()(layers.Conv2D(4, 1)(x))))
    shear = m.get_layer("shear")
    if tuple(int(p) for p in keras.version().split(".")[:2]) < (3, 16):
        with pytest.raises((TypeError, ValueError)):
            layers.RandomShear.from_config(shear.get_config())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = testing.exactness(m, 0.5, seed=0)
    assert r.difference < 1e-5 and r.plan.removed_channels > 0
    copy = r.model.get_layer("shear")
    assert copy is not shear and copy.x_factor == shear.x_factor == (-0.2, 0.2)
    assert copy.generator is not shear.generator and copy.backend is shear.backend
    out = r.model(np.ones((2, 8, 8, 3), "float32"), training=True)  # the copy still shears
    assert out.shape == (2, 2)
