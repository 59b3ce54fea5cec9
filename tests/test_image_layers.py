"""Keras' image preprocessing layers inside a network (augmentation in the model, resizing
between stages): channel-wise, so channels prune through them, exactly at inference.

Random geometric augmentations are identity at inference; Resizing and CenterCrop
resample each channel with taps that sum to 1 (a constant channel stays constant, a zero
one zero), except Resizing(pad_to_aspect_ratio=True), whose fill reaches the border.
RandomCrop does not crop at inference in Keras 3.15 although its output shape says it
does (keras-team/keras#21868): it is a barrier, and no constant is folded in its model.
"""
import warnings

import keras
import numpy as np
import pytest
from keras import layers

import keras_slim
from keras_slim import testing

pytestmark = pytest.mark.backend_agnostic  # pytest.ini; also run on KERAS_BACKEND=jax

MIDDLE = {
    "RandomFlip": lambda: layers.RandomFlip(),
    "RandomRotation": lambda: layers.RandomRotation(0.2, fill_mode="constant", fill_value=3.0),
    "RandomTranslation": lambda: layers.RandomTranslation(0.2, 0.2),
    "RandomZoom": lambda: layers.RandomZoom(0.2),
    "RandomShear": lambda: layers.RandomShear(0.2),  # its config does not round-trip
    "RandomPerspective": lambda: layers.RandomPerspective(),
    "RandomGaussianBlur": lambda: layers.RandomGaussianBlur(),
    "Resizing bilinear": lambda: layers.Resizing(12, 5),
    "Resizing bicubic": lambda: layers.Resizing(6, 6, interpolation="bicubic"),
    "Resizing nearest": lambda: layers.Resizing(4, 4, interpolation="nearest"),
    "Resizing lanczos3": lambda: layers.Resizing(5, 7, interpolation="lanczos3"),
    "Resizing crop_to_aspect_ratio": lambda: layers.Resizing(4, 8, crop_to_aspect_ratio=True),
    "CenterCrop": lambda: layers.CenterCrop(6, 6),
    "CenterCrop larger": lambda: layers.CenterCrop(10, 10),
}


def _model(make):
    inp = keras.Input((8, 8, 3))
    x = layers.BatchNormalization(name="bn1")(layers.Conv2D(8, 3, padding="same")(inp))
    x = layers.Activation("sigmoid")(x)  # sigmoid(0) = 0.5: dead channels turn constant
    x = make()(x)
    x = layers.ReLU()(layers.BatchNormalization(name="bn2")(layers.Conv2D(6, 3)(x)))
    return keras.Model(inp, layers.Dense(2)(layers.GlobalAveragePooling2D()(x)))


@pytest.mark.parametrize("name", sorted(MIDDLE))
@pytest.mark.parametrize("constants", [False, True])
def test_channels_prune_through_image_layers_exactly(name, constants):
    m = _model(MIDDLE[name])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = testing.exactness(m, 0.5, seed=1, constants=constants)
    assert not r.plan.barriers and r.killed > 0
    assert len(r.plan.kept["bn1"]) < 8  # cut through the image layer
    assert r.difference < 1e-4, (name, r.difference)


def test_resizing_that_pads_folds_only_away_from_the_border():
    def make():
        return layers.Resizing(4, 8, pad_to_aspect_ratio=True, fill_value=2.0)

    m = _model(make)
    bn = m.get_layer("bn1")
    gamma = bn.gamma.numpy()
    gamma[:4] = 0.0  # constant channels: sigmoid(beta), then padded with 2.0
    bn.gamma.assign(gamma)
    bn.beta.assign(np.linspace(-1, 1, 8).astype("float32"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        strict = keras_slim.plan(m, threshold=1e-12, border_folds=False)
        loose = keras_slim.plan(m, threshold=1e-12)
    assert strict.removed_channels == 0  # the fill makes them non-constant at the border
    assert loose.removed_channels == 4 and loose.border_folds
    x = testing.random_inputs(m, seed=0)
    assert testing.max_difference(m, keras_slim.prune(m, strict), x) < 1e-5


def test_a_dead_channel_padded_with_a_non_zero_fill_is_not_dead():
    inp = keras.Input((8, 8, 3))
    x = layers.BatchNormalization(name="bn1")(layers.Conv2D(8, 3, padding="same")(inp))
    x = layers.Resizing(4, 8, pad_to_aspect_ratio=True, fill_value=2.0)(x)
    x = layers.GlobalAveragePooling2D()(x)
    m = keras.Model(inp, layers.Dense(2, name="head")(x))
    testing.kill_channels(m, 0.5, seed=0)  # gamma = beta = 0
    x = testing.random_inputs(m, seed=0)
    for border_folds in (False, True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = keras_slim.plan(m, threshold=1e-12, border_folds=border_folds)
        # dead before the fill, 2.0 at the border after it: kept (it once passed for a
        # zero channel and went without a fold: 0.4 off)
        assert p.removed_channels == 0
        assert testing.max_difference(m, keras_slim.prune(m, p), x) < 1e-6


def test_random_crop_is_a_barrier_and_keeps_every_constant_of_its_model():
    # the graph says (5, 5) after it, inference runs at (8, 8): a sum over positions folded
    # by the graph's count was 13.4 off
    inp = keras.Input((8, 8, 3))
    x = layers.RandomCrop(5, 5, name="crop")(inp)
    x = layers.BatchNormalization(name="bn")(layers.Conv2D(8, 3, padding="same")(x))
    x = keras.ops.sum(layers.Activation("sigmoid")(x), axis=(1, 2))
    m = keras.Model(inp, layers.Dense(2)(x))
    testing.randomize_batchnorm(m, seed=0)
    bn = m.get_layer("bn")
    gamma = bn.gamma.numpy()
    gamma[:3] = 0.0  # constant channels: sigmoid(beta)
    bn.gamma.assign(gamma)
    x = np.random.default_rng(0).uniform(size=(2, 8, 8, 3)).astype("float32")
    with pytest.warns(UserWarning, match="keras-team/keras#21868"):
        p = keras_slim.plan(m, threshold=1e-12)
    assert p.removed_channels == 0 and "crop" in dict(p.barriers)
    assert testing.max_difference(m, keras_slim.prune(m, p), x) < 1e-5
    beta = bn.beta.numpy()
    beta[:3] = 0.0  # gamma = beta = 0: dead, and ReLU keeps them zero
    bn.beta.assign(beta)
    dead = keras.Model(m.inputs, layers.Dense(2)(layers.GlobalAveragePooling2D()(
        layers.ReLU()(bn.output))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = keras_slim.plan(dead, threshold=1e-12)
    assert p.removed_channels == 3  # zero channels still go
    assert testing.max_difference(dead, keras_slim.prune(dead, p), x) < 1e-5
