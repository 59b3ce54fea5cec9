"""Layers whose channels are not what their last axis or their kernel says.

channels_first convolutions (the last axis is not the channels), activations that
normalise over the channels (softmax as a producer's `activation=`), Softmax over a
spatial axis, and layers whose weights are more than a kernel and a bias (int8
quantized, LoRA). Each was pruned or folded wrongly, or crashed, before; each must
now be exact, keeping what cannot go.
"""
import warnings

import keras
import numpy as np
import pytest
from keras import layers

import keras_slim
from keras_slim import testing

pytestmark = pytest.mark.backend_agnostic  # pytest.ini; also run on KERAS_BACKEND=jax


def _set_bn(model, name, dead=(), const=(), seed=0):
    """Trained-looking BN statistics; `dead` channels gamma = beta = 0, `const` gamma = 0."""
    bn = model.get_layer(name)
    rng = np.random.default_rng(seed)
    n = bn.gamma.shape[0]
    gamma, beta = rng.uniform(0.5, 1.5, n), rng.uniform(-1, 1, n)
    gamma[list(dead) + list(const)] = 0.0
    beta[list(dead)] = 0.0
    bn.set_weights([gamma.astype("float32"), beta.astype("float32"),
                    rng.uniform(-0.5, 0.5, n).astype("float32"),
                    rng.uniform(0.5, 2, n).astype("float32")])


def _prune(model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = keras_slim.plan(model, threshold=1e-12)
        return p, keras_slim.prune(model, p)


def _diff(model, small, shape, batch=3):
    x = np.random.default_rng(1).normal(size=(batch,) + shape).astype("float32")
    a, b = keras.tree.flatten(model(x)), keras.tree.flatten(small(x))
    assert [tuple(t.shape) for t in a] == [tuple(t.shape) for t in b]
    return max(float(np.max(np.abs(np.asarray(u) - np.asarray(v)))) for u, v in zip(a, b))


@pytest.mark.parametrize("make", [
    lambda: layers.Conv2D(8, 3, data_format="channels_first", name="cf"),
    lambda: layers.DepthwiseConv2D(3, data_format="channels_first", name="cf"),
    lambda: layers.SeparableConv2D(8, 3, data_format="channels_first", name="cf"),
    lambda: layers.Conv2DTranspose(8, 3, data_format="channels_first", name="cf"),
])
def test_channels_first_convs_are_kept_as_they_are(make):
    # Input (8, 8, 8): the conv's last axis has as many entries as a channel count, which
    # once made the rebuild set filters = W (a different model, even at ratio 0).
    inp = keras.Input((8, 8, 8))
    y = make()(inp)
    z = layers.BatchNormalization(name="bn")(layers.Dense(6, name="d")(layers.Flatten()(inp)))
    m = keras.Model(inp, [y, layers.Dense(2)(z)])
    _set_bn(m, "bn", dead=[1, 4])
    p, small = _prune(m)
    assert p.removed_channels == 2 and "cf" in dict(p.barriers)
    assert small.get_layer("cf").get_config() == m.get_layer("cf").get_config()
    assert _diff(m, small, (8, 8, 8)) < 1e-5


@pytest.mark.parametrize("activation", ["softmax", "log_softmax"])
def test_a_producer_with_softmax_activation_keeps_its_outputs_and_prunes_its_inputs(activation):
    inp = keras.Input((6, 6, 3))
    x = layers.BatchNormalization(name="bn0")(layers.Conv2D(8, 3, name="c0")(inp))
    x = layers.Dense(6, activation=activation, name="head")(x)
    x = layers.BatchNormalization(name="bn1")(x)  # dead channels here cannot go
    m = keras.Model(inp, layers.Dense(2)(layers.GlobalAveragePooling2D()(x)))
    _set_bn(m, "bn0", dead=[2], const=[5])
    _set_bn(m, "bn1", dead=[0, 3], seed=1)
    p, small = _prune(m)
    assert small.get_layer("head").units == 6
    assert small.get_layer("c0").filters == 6  # its dead and constant inputs still go
    assert _diff(m, small, (6, 6, 3)) < 1e-5


def test_a_zero_filter_under_softmax_is_not_removed_by_a_filter_criterion():
    inp = keras.Input((12,))
    d = layers.Dense(8, activation="softmax", name="head")
    m = keras.Model(inp, d(layers.Dense(12)(inp)))
    kernel, bias = d.get_weights()
    kernel[:, :4] = 0.0
    d.set_weights([kernel, bias])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = keras_slim.prune(m, keras_slim.plan(m, threshold=1e-12, criterion="l1"))
    assert small.get_layer("head").units == 8
    assert _diff(m, small, (12,)) < 1e-6


def test_depthwise_with_softmax_activation_is_a_barrier():
    inp = keras.Input((6, 6, 3))
    x = layers.BatchNormalization(name="bn0")(layers.Conv2D(6, 1, name="c0")(inp))
    x = layers.DepthwiseConv2D(3, activation="softmax", name="dw")(x)
    m = keras.Model(inp, layers.Conv2D(2, 1)(x))
    _set_bn(m, "bn0", dead=[1, 2])
    p, small = _prune(m)
    assert "dw" in dict(p.barriers) and p.removed_channels == 0
    assert _diff(m, small, (6, 6, 3)) < 1e-6


def test_sparsemax_activation_layer_is_a_barrier():
    inp = keras.Input((6, 6, 3))
    x = layers.BatchNormalization(name="bn0")(layers.Conv2D(6, 1, name="c0")(inp))
    m = keras.Model(inp, layers.Conv2D(2, 1)(layers.Activation("sparsemax", name="sm")(x)))
    _set_bn(m, "bn0", dead=[1], const=[3])
    p, small = _prune(m)
    assert "sm" in dict(p.barriers) and p.removed_channels == 0
    assert _diff(m, small, (6, 6, 3)) < 1e-6


@pytest.mark.parametrize("axis", [1, -2, (1, 2)])
def test_softmax_over_spatial_axes_turns_a_constant_into_one_over_its_length(axis):
    inp = keras.Input((8, 7, 3))
    x = layers.BatchNormalization(name="bn0")(layers.Conv2D(6, 3, name="c0")(inp))  # 6 x 5
    x = layers.Softmax(axis=axis)(x)
    m = keras.Model(inp, layers.Conv2D(4, 1, name="reader")(x))
    for dead, const in (([1, 2], []), ([], [1, 2, 4])):
        _set_bn(m, "bn0", dead=dead, const=const)
        p, small = _prune(m)
        assert p.removed_channels == len(dead) + len(const)
        assert _diff(m, small, (8, 7, 3)) < 1e-5, (axis, dead, const)


@pytest.mark.parametrize("state", ["int8", "lora"])
def test_quantized_and_lora_dense_layers_are_barriers(state):
    inp = keras.Input((6, 6, 3))
    x = layers.BatchNormalization(name="bn1")(layers.Conv2D(8, 3, name="c1")(inp))
    x = layers.BatchNormalization(name="bn2")(layers.Dense(5, name="r")(x))
    m = keras.Model(inp, layers.Dense(3)(layers.Conv2D(4, 1, name="after")(x)))
    _set_bn(m, "bn1", dead=[1], const=[2])
    _set_bn(m, "bn2", dead=[0], seed=1)
    if state == "int8":
        m.get_layer("r").quantize("int8")  # folding used the raw int8 kernel: off by ~50
    else:
        m.get_layer("r").enable_lora(2)  # the low-rank factors were not sliced: crashed
    p, small = _prune(m)
    assert "r" in dict(p.barriers)
    assert small.get_layer("c1").filters == 8 and small.get_layer("r").units == 5
    assert _diff(m, small, (6, 6, 3)) < 1e-5
    r = testing.exactness(m, 0.5, seed=0)  # the rest of the model still prunes exactly
    assert r.difference < 1e-4


def test_an_adapted_normalization_keeps_its_statistics():
    x = np.random.default_rng(1).uniform(0, 255, (4, 8, 8, 3)).astype("float32")
    norm = layers.Normalization(axis=-1)
    norm.adapt(x)
    inp = keras.Input((8, 8, 3))
    h = layers.BatchNormalization(name="bn")(layers.Conv2D(8, 3, name="c")(norm(inp)))
    m = keras.Model(inp, layers.Dense(2)(layers.GlobalAveragePooling2D()(h)))
    _set_bn(m, "bn", dead=[0, 5])
    p, small = _prune(m)
    assert p.removed_channels == 2
    out = lambda model: np.asarray(model(x))  # noqa: E731
    np.testing.assert_allclose(out(small), out(m), rtol=1e-5, atol=1e-5)  # was mean 0, var 1


def test_a_dropout_noise_shape_naming_the_channels_follows_them():
    inp = keras.Input((6, 6, 3))
    h = layers.BatchNormalization(name="bn")(layers.Conv2D(8, 3, name="c")(inp))
    h = layers.Dropout(0.5, noise_shape=(None, 1, 1, 8), name="drop")(h)
    m = keras.Model(inp, layers.Dense(2)(layers.GlobalAveragePooling2D()(h)))
    _set_bn(m, "bn", dead=[1, 4, 6])
    p, small = _prune(m)
    assert list(small.get_layer("drop").noise_shape) == [None, 1, 1, 5]
    assert _diff(m, small, (6, 6, 3)) < 1e-5
    small(np.ones((2, 6, 6, 3), "float32"), training=True)  # crashed in fit before


@pytest.mark.parametrize("kind", ["l1", "l2"])
def test_activity_regularization_keeps_the_constant_channels_its_loss_reads(kind):
    inp = keras.Input((6, 6, 3))
    h = layers.BatchNormalization(name="bn")(layers.Conv2D(8, 3, name="c")(inp))
    h = layers.ActivityRegularization(**{kind: 0.01}, name="reg")(h)
    m = keras.Model(inp, layers.Dense(2)(layers.GlobalAveragePooling2D()(h)))
    _set_bn(m, "bn", dead=[1, 4], const=[2, 6])
    p, small = _prune(m)
    # the dead channels add 0 to the loss and go; the constant ones stay (their |c| terms
    # left model.losses before: 3.16 -> 2.33 on a model like this)
    assert p.removed_channels == 2 and p.kept["bn"] == [0, 2, 3, 5, 6, 7]
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype("float32")
    m(x), small(x)
    np.testing.assert_allclose([float(v) for v in small.losses], [float(v) for v in m.losses],
                               rtol=1e-5)
    assert _diff(m, small, (6, 6, 3)) < 1e-5


@pytest.mark.parametrize("axis", [-1, [1, 2]])
def test_unit_normalization_lets_zero_channels_go_and_constants_only_off_the_channel_axis(axis):
    inp = keras.Input((6, 6, 3))
    h = layers.BatchNormalization(name="bn")(layers.Conv2D(8, 3, name="c")(inp))
    h = layers.UnitNormalization(axis=axis, name="unit")(h)
    m = keras.Model(inp, layers.Dense(2)(layers.GlobalAveragePooling2D()(layers.Conv2D(4, 1)(h))))
    _set_bn(m, "bn", dead=[1, 4], const=[2, 6])
    p, small = _prune(m)
    # over the channels the norm mixes them: a zero channel adds nothing to it, a constant
    # one does (kept); over space each channel is normalised alone (constants fold)
    assert p.kept["bn"] == ([0, 2, 3, 5, 6, 7] if axis == -1 else [0, 3, 5, 7])
    assert not p.barriers
    assert _diff(m, small, (6, 6, 3)) < 1e-5


@pytest.mark.parametrize("invert", [False, True])
@pytest.mark.parametrize("stats", ["adapted", "given"])
def test_dead_and_constant_channels_fold_through_a_normalization_in_the_network(invert, stats):
    rng = np.random.default_rng(2)
    if stats == "adapted":
        norm = layers.Normalization(invert=invert, name="norm")
        norm.adapt(rng.normal(2.0, 3.0, size=(32, 6, 6, 8)).astype("float32"))
    else:
        norm = layers.Normalization(mean=rng.normal(size=8).tolist(), invert=invert,
                                    variance=rng.uniform(0.5, 2.0, 8).tolist(), name="norm")
    inp = keras.Input((8, 8, 3))
    h = layers.BatchNormalization(name="bn")(layers.Conv2D(8, 3, name="c")(inp))
    h = layers.Conv2D(4, 1)(norm(h))
    m = keras.Model(inp, layers.Dense(2)(layers.GlobalAveragePooling2D()(h)))
    _set_bn(m, "bn", dead=[0, 5], const=[3])
    p, small = _prune(m)
    # a dead channel leaves it as -mean/std (or mean): a constant, folded into the 1x1
    # conv like any other (these were kept before)
    assert p.kept["norm"] == [1, 2, 4, 6, 7]
    assert small.get_layer("norm").mean.shape[-1] == 5
    assert _diff(m, small, (8, 8, 3)) < 1e-5


@pytest.mark.parametrize("target", [(6, 48), (288,), (6, 6, 8)])
def test_a_reshape_merging_the_channels_with_the_axes_before_them_keeps_them_prunable(target):
    # (B, 6, 6, 8) -> (B, 6, 48): channel c sits at w * 8 + c (CRNN heads do this before an
    # RNN or a Dense); it was a barrier unless everything was flattened
    inp = keras.Input((6, 6, 3))
    h = layers.BatchNormalization(name="bn")(layers.Conv2D(8, 3, padding="same", name="c")(inp))
    h = layers.Dense(4, name="reader")(layers.Reshape(target)(layers.Activation("sigmoid")(h)))
    m = keras.Model(inp, layers.Dense(2)(layers.Flatten()(h) if len(target) > 1 else h))
    _set_bn(m, "bn", dead=[1, 4], const=[6])
    p, small = _prune(m)
    assert not p.barriers and p.kept["bn"] == [0, 2, 3, 5, 7]
    assert small.get_layer("reader").kernel.shape[0] == target[-1] // 8 * 5  # rows per position
    assert _diff(m, small, (6, 6, 3)) < 1e-5


def test_a_reshape_that_moves_the_channel_axis_is_still_a_barrier():
    inp = keras.Input((6, 6, 3))
    h = layers.BatchNormalization(name="bn")(layers.Conv2D(8, 3, padding="same", name="c")(inp))
    h = layers.Reshape((8, 36), name="moved")(h)  # not a merge of trailing axes
    m = keras.Model(inp, layers.Dense(2)(layers.Flatten()(layers.Dense(4)(h))))
    _set_bn(m, "bn", dead=[1, 4])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = keras_slim.plan(m, threshold=1e-12)
    assert p.removed_channels == 0 and "moves the channel axis" in dict(p.barriers)["moved"]


def test_any_layers_activity_regularizer_keeps_the_constant_channels_it_reads():
    inp = keras.Input((6, 6, 3))
    h = layers.BatchNormalization(name="bn")(layers.Conv2D(8, 3, name="c")(inp))
    h = layers.Activation("sigmoid", activity_regularizer=keras.regularizers.L1(0.01),
                          name="act")(h)  # sigmoid(0) = 0.5: dead channels turn constant
    m = keras.Model(inp, layers.Dense(2)(layers.GlobalAveragePooling2D()(h)))
    _set_bn(m, "bn", dead=[1, 4])
    p, small = _prune(m)
    assert p.removed_channels == 0  # 0.5 each: model.losses went 1.23 -> 0.51 before
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype("float32")
    m(x), small(x)
    np.testing.assert_allclose([float(v) for v in small.losses], [float(v) for v in m.losses],
                               rtol=1e-5)


@pytest.mark.parametrize("dtype", ["float16", "int32", "bool"])
def test_a_cast_passes_channels_and_their_constants(dtype):
    # ops.cast (mixed precision inside custom layers, masks) was a barrier
    inp = keras.Input((6, 6, 3))
    h = layers.BatchNormalization(name="bn")(layers.Conv2D(8, 3, name="c")(inp))
    h = keras.ops.cast(keras.ops.cast(layers.Activation("sigmoid")(h) * 3.0, dtype), "float32")
    m = keras.Model(inp, layers.Dense(2)(layers.GlobalAveragePooling2D()(h)))
    _set_bn(m, "bn", dead=[1, 4], const=[6])  # sigmoid: every one of them a constant
    p, small = _prune(m)
    assert not p.barriers and p.kept["bn"] == [0, 2, 3, 5, 7]
    assert _diff(m, small, (6, 6, 3)) < 1e-5
