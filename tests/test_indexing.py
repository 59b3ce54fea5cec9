"""Indexing (`x[...]`, GetItem) and grouped convs: channels pass, slice, or stay; never a different model."""
import keras
import numpy as np
import pytest
from keras import layers

import keras_slim
from keras_slim import testing

pytestmark = pytest.mark.backend_agnostic  # pytest.ini; also run on KERAS_BACKEND=jax

X = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32")


def _dead_then(index, constant=False):
    """conv -> BN (3 dead or constant channels of 8) -> ReLU -> index -> conv -> head."""
    inp = keras.Input((16, 16, 3))
    x = layers.ReLU()(layers.BatchNormalization(name="bn")(
        layers.Conv2D(8, 3, padding="same", name="c1")(inp)))
    x = layers.Conv2D(4, 1, name="reader")(index(x))
    m = keras.Model(inp, layers.Dense(3)(layers.GlobalAveragePooling2D()(x)))
    testing.randomize_batchnorm(m, seed=0)
    bn = m.get_layer("bn")
    g, b, mean, var = bn.get_weights()
    g[:3] = 0.0
    b[:3] = [0.5, -0.3, 0.7] if constant else 0.0
    bn.set_weights([g, b, mean, var])
    return m


def _relative(a, b):
    ya, yb = np.asarray(a(X)), np.asarray(b(X))
    return float(np.abs(ya - yb).max() / np.abs(ya).max())


@pytest.mark.parametrize("index", [lambda t: t[:, 2:14], lambda t: t[:, ::2],
                                   lambda t: t[:, 1:-1, 3:], lambda t: t[:, :, ::3, :],
                                   lambda t: t[:, 4:12, ...]],
                         ids=["rows", "every-other-row", "rows-and-cols", "step-cols",
                              "ellipsis-last"])
@pytest.mark.parametrize("constant", [False, True])
def test_indexing_other_axes_passes_every_channel(index, constant):
    """A spatial slice is not a channel slice: the dead/constant channels go, the rows stay."""
    m = _dead_then(index, constant)
    small = keras_slim.prune(m, threshold=1e-12)
    assert small.get_layer("reader").kernel.shape[2] == 5
    assert small.get_layer("reader").output.shape == m.get_layer("reader").output.shape
    assert _relative(m, small) < 1e-5


def test_a_channel_slice_is_rebuilt_to_the_kept_channels():
    m = _dead_then(lambda t: t[..., 1:6])
    small = keras_slim.prune(m, threshold=1e-12)
    assert small.get_layer("reader").kernel.shape[2] == 3  # 1, 2 of 1..5 were dead
    assert _relative(m, small) < 1e-5


@pytest.mark.parametrize("index", [lambda t: t[..., ::2], lambda t: t[..., 0:8:3],
                                   lambda t: t[:, :, :, ::2]],
                         ids=["step-2", "step-3", "full-key-step"])
def test_a_strided_channel_slice_is_a_barrier(index):
    """Every other channel is no run of the kept ones: the channels stay, the model is the same."""
    m = _dead_then(index)
    p = keras_slim.plan(m, threshold=1e-12)
    assert [name for name, _ in p.barriers] == ["get_item"]
    small = keras_slim.prune(m, p)
    assert small.get_layer("c1").filters == 8
    assert _relative(m, small) < 1e-6


@pytest.mark.parametrize("groups", [2, 4])
def test_a_grouped_conv_is_a_barrier_that_rebuilds(groups):
    """groups < inputs: kept whole (before: a crash rebuilding its kernel)."""
    inp = keras.Input((8, 8, 3))
    x = layers.ReLU()(layers.BatchNormalization(name="bn1")(
        layers.Conv2D(8, 3, padding="same")(inp)))
    x = layers.ReLU()(layers.BatchNormalization(name="bn2")(
        layers.Conv2D(8, 3, groups=groups, name="grouped")(x)))
    x = layers.ReLU()(layers.BatchNormalization(name="bn3")(layers.Conv2D(8, 1)(x)))
    m = keras.Model(inp, layers.Conv2D(4, 1, name="head")(x))
    testing.randomize_batchnorm(m, seed=1)
    for name in ("bn1", "bn2", "bn3"):
        bn = m.get_layer(name)
        g, b, mean, var = bn.get_weights()
        g[[1, 6]] = b[[1, 6]] = 0.0
        bn.set_weights([g, b, mean, var])
    p = keras_slim.plan(m, threshold=1e-12)
    assert ("grouped", "grouped conv") in p.barriers
    small = keras_slim.prune(m, p)
    assert small.get_layer("grouped").groups == groups
    assert small.get_layer("head").kernel.shape[2] == 6  # after the barrier: pruned
    row = next(r for r in p.layers if r.name == "grouped")  # 6x6 out, 3x3 taps, 8/g inputs
    assert row.macs_before == row.macs_after == 6 * 6 * 9 * (8 // groups) * 8
    x8 = X[:, :8, :8]
    np.testing.assert_allclose(small(x8), m(x8), rtol=1e-5, atol=1e-5)


def test_batchnorm_with_renorm_slices_its_renorm_statistics():
    """renorm=True adds moving_stddev, renorm_mean and renorm_stddev: each is per channel."""
    inp = keras.Input((8, 8, 3))
    x = layers.BatchNormalization(renorm=True, name="bn")(layers.Conv2D(16, 3, name="c1")(inp))
    m = keras.Model(inp, layers.Dense(4)(layers.GlobalAveragePooling2D()(layers.ReLU()(x))))
    testing.randomize_batchnorm(m, seed=2)
    g, b, *rest = m.get_layer("bn").get_weights()
    g[:5] = b[:5] = 0.0
    m.get_layer("bn").set_weights([g, b, *rest])
    p = keras_slim.plan(m, threshold=1e-12)
    small = keras_slim.prune(m, p)
    assert [tuple(w.shape) for w in small.get_layer("bn").weights] == [(11,)] * 7
    assert small.count_params() == p.params_after
    x8 = X[:, :8, :8]
    np.testing.assert_allclose(small(x8), m(x8), rtol=1e-5, atol=1e-5)
