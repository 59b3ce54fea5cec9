"""Sparsity training: the BN-gamma L1 penalty."""
import keras
import numpy as np
import pytest
from keras import layers

import keras_slim
from keras_slim.training.cifar import models

pytestmark = pytest.mark.backend_agnostic  # pytest.ini; also run on KERAS_BACKEND=jax


def _gamma_l1(model):
    return sum(float(np.abs(l.gamma.numpy()).sum()) for l in model._flatten_layers()
               if isinstance(l, layers.BatchNormalization))


def test_bn_l1_value_and_config():
    reg = keras_slim.bn_l1(1e-2)
    x = np.array([1.0, -2.0, 0.5], "float32")
    assert float(reg(x)) == pytest.approx(1e-2 * 3.5)
    again = keras_slim.BNL1.from_config(reg.get_config())
    assert again.strength == reg.strength
    with pytest.raises(ValueError, match="non-negative"):
        keras_slim.bn_l1(-1.0)
    for bad in ("x", None, True, [1e-4]):  # SlimErrors naming what was passed
        with pytest.raises(keras_slim.ArgumentTypeError, match="must be a number"):
            keras_slim.bn_l1(bad)
    assert keras_slim.bn_l1(np.float32(1e-3)).strength == pytest.approx(1e-3)


def test_bn_l1_in_layer_saves_and_loads_without_custom_objects(tmp_path):
    m = models.vgg(11, width=0.125, gamma_regularizer=keras_slim.bn_l1(1e-4))
    path = str(tmp_path / "m.keras")
    m.save(path)
    loaded = keras.models.load_model(path)
    reg = loaded.get_layer("bn1").gamma_regularizer
    assert isinstance(reg, keras_slim.BNL1) and reg.strength == 1e-4
    assert len(loaded.losses) == 8


def test_add_bn_l1_puts_penalty_in_losses():
    m = models.vgg(11, width=0.125)
    assert len(m.losses) == 0
    assert keras_slim.add_bn_l1(m, 1e-3) is m
    assert len(m.losses) == 8
    assert float(sum(m.losses)) == pytest.approx(1e-3 * _gamma_l1(m), rel=1e-5)
    keras_slim.add_bn_l1(m, 1e-2)  # replaces, does not stack
    assert len(m.losses) == 8
    assert float(sum(m.losses)) == pytest.approx(1e-2 * _gamma_l1(m), rel=1e-5)
    assert m.get_layer("bn3").get_config()["gamma_regularizer"]["config"]["strength"] == 1e-2
    keras_slim.add_bn_l1(m, 0)  # removes
    assert len(m.losses) == 0


def test_add_bn_l1_reaches_nested_models():
    inner_in = keras.Input((8, 8, 4))
    inner = keras.Model(inner_in, layers.BatchNormalization()(layers.Conv2D(4, 3)(inner_in)))
    inp = keras.Input((8, 8, 3))
    x = layers.BatchNormalization()(layers.Conv2D(4, 1)(inp))
    m = keras.Model(inp, inner(x))
    keras_slim.add_bn_l1(m, 1e-4)
    assert len(m.losses) == 2


def test_add_bn_l1_errors():
    m = keras.Sequential([keras.Input((3,)), layers.Dense(2)])
    with pytest.raises(ValueError, match="no BatchNormalization"):
        keras_slim.add_bn_l1(m, 1e-4)
    with pytest.raises(ValueError, match="non-negative"):
        keras_slim.add_bn_l1(models.vgg(11, width=0.125), -1)


def test_penalty_shrinks_gammas_during_fit():
    """Same data, same seed: with the penalty the gammas end up smaller."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=64)
    results = []
    for strength in (0.0, 0.5):
        keras.utils.set_random_seed(1)
        m = models.vgg(11, width=0.125)
        start = _gamma_l1(m)
        if strength:
            keras_slim.add_bn_l1(m, strength)
        m.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        m.fit(x, y, batch_size=16, epochs=2, verbose=0)
        results.append(_gamma_l1(m))
    assert results[1] < 0.8 * results[0], results
    assert results[1] < start


def test_add_bn_l1_after_compile_retraces():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=16)
    m = models.vgg(11, width=0.125)
    m.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    plain = m.evaluate(x, y, verbose=0)
    m.fit(x, y, epochs=1, verbose=0)
    keras_slim.add_bn_l1(m, 1.0)
    loss = m.train_on_batch(x, y)
    assert float(np.ravel(loss)[0]) > plain + 0.5 * _gamma_l1(m)
