"""Surgery writes each rebuilt weight exactly once, from the sliced values.

Stock layers are built with the sliced values as their initial values (no
random initialization to overwrite); any other layer is built normally and
its weights are set afterwards. Both paths must give the original weights.
"""
import keras
import numpy as np
import pytest

import keras_slim
from keras_slim import _keras, testing

pytestmark = pytest.mark.backend_agnostic  # pytest.ini; also run on KERAS_BACKEND=jax


class OverwritesInBuild(keras.layers.Layer):
    """A custom layer whose build assigns its weight after creating it."""

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(input_shape[-1],), initializer="ones")
        self.scale.assign(np.full((input_shape[-1],), 7.0, np.float32))

    def call(self, x):
        return x * keras.ops.tanh(x) * self.scale


def _model():
    x = inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="c1")(x)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(6, 1, name="c2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = OverwritesInBuild(name="odd")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(4, name="head")(x)
    m = keras.Model(inp, out)
    testing.randomize_batchnorm(m, seed=3)
    m.get_layer("odd").scale.assign(np.linspace(0.5, 2.0, 6).astype(np.float32))
    return m


def test_rebuild_keeps_every_weight_when_nothing_is_removed():
    m = _model()
    small = keras_slim.prune(m, threshold=1e-30, trace=False)
    for old, new in zip(m.layers, small.layers):
        assert old.name == new.name
        assert len(old.weights) == len(new.weights)
        for a, b in zip(old.weights, new.weights):
            assert a is not b
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=f"{old.name}/{a.name}")


def test_custom_layer_that_assigns_in_build_gets_the_original_weights():
    m = _model()
    small = keras_slim.prune(m, threshold=1e-30, trace=False)
    np.testing.assert_array_equal(small.get_layer("odd").scale.numpy(),
                                  m.get_layer("odd").scale.numpy())


def test_sliced_weights_are_the_kept_positions():
    m = _model()
    gamma = m.get_layer("bn1").gamma.numpy()
    gamma[[1, 4]] = 0.0
    m.get_layer("bn1").gamma.assign(gamma)
    m.get_layer("bn1").beta.assign(np.where(gamma == 0, 0.0, m.get_layer("bn1").beta.numpy()))
    small = keras_slim.prune(m, threshold=1e-12, trace=False)
    keep = [0, 2, 3, 5, 6, 7]
    np.testing.assert_array_equal(small.get_layer("c1").kernel.numpy(),
                                  m.get_layer("c1").kernel.numpy()[..., keep])
    np.testing.assert_array_equal(small.get_layer("c2").kernel.numpy(),
                                  m.get_layer("c2").kernel.numpy()[:, :, keep, :])
    for name in ("gamma", "beta", "moving_mean", "moving_variance"):
        np.testing.assert_array_equal(_keras.weight(small.get_layer("bn1"), name),
                                      _keras.weight(m.get_layer("bn1"), name)[keep])
    x = testing.random_inputs(m)
    assert testing.max_difference(m, small, x) < 1e-5


def test_initial_values_falls_back_for_custom_layers():
    layer = OverwritesInBuild()
    with _keras.initial_values(layer, ["scale"], [np.ones(3, np.float32)]) as created:
        layer(keras.Input((3,)))
    assert created == []  # not a stock layer: built normally, set by the caller
    dense = keras.layers.Dense(2)
    values = [np.arange(6, dtype=np.float32).reshape(3, 2), np.array([5.0, 6.0], np.float32)]
    with _keras.initial_values(dense, ["kernel", "bias"], values) as created:
        dense(keras.Input((3,)))
    assert created == ["kernel", "bias"]
    np.testing.assert_array_equal(dense.kernel.numpy(), values[0])
    np.testing.assert_array_equal(dense.bias.numpy(), values[1])
    assert "add_weight" not in vars(dense)  # the patch is gone after the block


def test_plan_counts_the_parameters_surgery_builds():
    """Planning counts parameters from shapes (`Handler.params`), without slicing:
    on random graphs of every built-in weighted layer the count matches the model."""
    checked = 0
    for seed in range(8):
        m = testing.random_model(seed, constants=True)
        testing.randomize_batchnorm(m, seed)
        testing.kill_channels(m, 0.4, seed=seed)  # gamma = beta = 0: nothing is folded
        p = keras_slim.plan(m, threshold=1e-12)
        small = keras_slim.prune(m, p)
        assert p.params_after == small.count_params(), f"seed {seed}"
        checked += p.params_after < p.params_before
    assert checked >= 6  # the check compared narrowed layers, not untouched ones


def _trainable_flag_model():
    inp = keras.Input((8, 8, 3))
    x = keras.layers.BatchNormalization()(keras.layers.Conv2D(8, 3)(inp))
    inner = keras.Model(inp, x, name="inner")
    i2 = keras.Input((8, 8, 3))
    y = keras.layers.Conv2D(4, 1)(inner(i2))
    y = keras.layers.BatchNormalization(name="bn2")(y)
    return inner, keras.Model(i2, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(y)))


def test_model_level_trainable_false_is_kept_for_the_model_and_nested_models():
    inner, m = _trainable_flag_model()
    inner.trainable = False
    small = keras_slim.prune(m, 0.5)
    assert small.get_layer("inner").trainable is False and small.trainable is True
    assert len(small.trainable_weights) == len(m.trainable_weights)
    m.trainable = False
    small = keras_slim.prune(m, 0.5)
    assert small.trainable is False and small.trainable_weights == []


def test_a_saved_plan_on_a_model_built_again_names_the_renamed_layers():
    def make():
        inp = keras.Input((8, 8, 3))
        x = keras.layers.BatchNormalization()(keras.layers.Conv2D(8, 3)(inp))
        return keras.Model(inp, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x)))

    m = make()
    saved = keras_slim.plan(m, 0.5).to_json()
    again = make()  # Keras numbers the auto-generated names: conv2d_1, batch_normalization_1
    with pytest.raises(keras_slim.errors.ModelError) as e:
        keras_slim.prune(again, keras_slim.Plan.from_json(saved))
    text = str(e.value)
    assert m.layers[1].name in text and again.layers[1].name in text
    assert "name your layers" in text
