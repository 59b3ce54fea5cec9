"""The core promise: removing channels with gamma = beta = 0 changes nothing."""
import warnings

import keras
import numpy as np
import pytest
from keras import layers

import keras_slim
from keras_slim import testing
from keras_slim.training.cifar import models

pytestmark = pytest.mark.backend_agnostic  # pytest.ini; also run on KERAS_BACKEND=jax


def conv_bn(x, c, k=3, name=None, stride=1, act="relu"):
    x = layers.Conv2D(c, k, strides=stride, padding="same", use_bias=False,
                      name=None if name is None else name + "_conv")(x)
    x = layers.BatchNormalization(name=None if name is None else name + "_bn")(x)
    return layers.Activation(act)(x) if act else x


def vgg_flatten():
    """Sequential VGG whose Flatten sees a 4x4 map (channels spread over positions)."""
    return keras.Sequential([
        keras.Input((16, 16, 3)),
        layers.Conv2D(8, 3, padding="same"), layers.BatchNormalization(), layers.ReLU(),
        layers.MaxPooling2D(),
        layers.Conv2D(12, 3, padding="same"), layers.BatchNormalization(), layers.ReLU(),
        layers.MaxPooling2D(),
        layers.Flatten(), layers.Dense(16), layers.BatchNormalization(), layers.ReLU(),
        layers.Dropout(0.5), layers.Dense(5),
    ], name="vgg_flatten")


def resnet_v1_bottleneck():
    inp = keras.Input((16, 16, 3))
    x = conv_bn(inp, 16, name="stem")
    for i, (c, stride) in enumerate([(8, 1), (8, 1), (16, 2)]):
        y = conv_bn(x, c, 1, name=f"b{i}a")
        y = conv_bn(y, c, 3, stride=stride, name=f"b{i}b")
        y = conv_bn(y, 4 * c, 1, name=f"b{i}c", act=None)
        if stride != 1 or x.shape[-1] != 4 * c:
            sc = conv_bn(x, 4 * c, 1, stride=stride, name=f"b{i}proj", act=None)
        else:
            sc = x
        x = layers.ReLU()(layers.Add()([y, sc]))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, layers.Dense(10)(x), name="resnet_v1")


def mobilenet_v2_block():
    inp = keras.Input((16, 16, 3))
    x = conv_bn(inp, 8, act="relu6")
    for i in range(2):
        y = conv_bn(x, 24, 1, act="relu6")
        y = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(y)
        y = layers.BatchNormalization()(y)
        y = layers.ReLU(6.0)(y)
        y = conv_bn(y, 8, 1, act=None)
        x = layers.Add()([x, y])
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, layers.Dense(4)(x), name="mbv2")


def se_block():
    inp = keras.Input((12, 12, 3))
    x = conv_bn(inp, 16, act="swish")
    s = layers.GlobalAveragePooling2D()(x)
    s = layers.Dense(4, activation="relu")(s)
    s = layers.Dense(16, activation="sigmoid")(s)
    s = layers.Reshape((1, 1, 16))(s)
    x = layers.Multiply()([x, s])
    x = conv_bn(x, 8, 1)
    return keras.Model(inp, layers.Dense(3)(layers.Flatten()(x)), name="se")


def hard_swish_ops():
    """MobileNetV3-style SE with keras.ops in the graph (x + 3, * 1/6)."""
    inp = keras.Input((8, 8, 3))
    x = conv_bn(inp, 12, act=None)
    x = layers.Multiply()([x, layers.ReLU(6.0)(x + 3.0) * (1.0 / 6.0)])
    s = layers.GlobalAveragePooling2D(keepdims=True)(x)
    s = layers.Conv2D(4, 1, activation="relu")(s)
    s = layers.Conv2D(12, 1)(s)
    s = layers.ReLU(6.0)(s + 3.0) * (1.0 / 6.0)
    x = layers.Multiply()([x, s])
    x = conv_bn(x, 6, 1)
    return keras.Model(inp, layers.Dense(3)(layers.GlobalAveragePooling2D()(x)), name="hswish")


def nested():
    inner_in = keras.Input((8, 8, 6))
    inner = keras.Model(inner_in, conv_bn(conv_bn(inner_in, 10), 7), name="inner")
    inp = keras.Input((8, 8, 3))
    x = conv_bn(inp, 6)
    x = inner(x)
    x = conv_bn(x, 5)
    return keras.Model(inp, layers.Dense(2)(layers.GlobalAveragePooling2D()(x)), name="outer")


def shared_submodel_twice():
    """One nested model called on two branches: its channels must agree."""
    inner_in = keras.Input((8, 8, 6))
    inner = keras.Model(inner_in, conv_bn(inner_in, 9), name="shared_inner")
    inp = keras.Input((8, 8, 3))
    a = inner(conv_bn(inp, 6))
    b = inner(conv_bn(inp, 6))
    x = layers.Concatenate()([a, b])
    return keras.Model(inp, layers.Dense(2)(layers.GlobalAveragePooling2D()(x)), name="twice")


def two_in_two_out():
    a = keras.Input((8, 8, 3), name="image")
    b = keras.Input((10,), name="meta")
    x = conv_bn(a, 12)
    y = layers.Dense(8)(b)
    y = layers.BatchNormalization()(y)
    y = layers.ReLU()(y)
    g = layers.GlobalAveragePooling2D()(x)
    h = layers.Concatenate()([g, y])
    out1 = layers.Dense(3, name="cls")(h)
    out2 = layers.Conv2D(2, 1, name="seg")(conv_bn(x, 6))
    return keras.Model({"image": a, "meta": b}, {"cls": out1, "seg": out2}, name="multi")


def conv_family():
    """Conv1D / SeparableConv / Conv2DTranspose / depth_multiplier 2 / padding and crops."""
    inp = keras.Input((8, 8, 3))
    x = conv_bn(inp, 6)
    x = layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.SeparableConv2D(10, 3, padding="same")(x)
    x = layers.BatchNormalization()(x)
    x = layers.ZeroPadding2D(1)(layers.ReLU()(x))
    x = layers.Cropping2D(1)(x)
    x = layers.Conv2DTranspose(7, 3, strides=2, padding="same")(x)
    x = layers.BatchNormalization()(x)
    x = layers.LeakyReLU()(x)
    x = layers.UpSampling2D()(layers.MaxPooling2D()(x))
    x = layers.Reshape((16 * 16, 7))(x)
    x = layers.Conv1D(5, 3, padding="same")(x)
    x = layers.BatchNormalization()(x)
    x = layers.ELU()(x)
    return keras.Model(inp, layers.Dense(2)(layers.GlobalAveragePooling1D()(x)), name="family")


def conv3d():
    inp = keras.Input((4, 6, 6, 2))
    x = layers.Conv3D(6, 3, padding="same")(inp)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.Conv3D(4, 3, padding="valid")(x)
    x = layers.BatchNormalization()(x)
    return keras.Model(inp, layers.Dense(2)(layers.GlobalAveragePooling3D()(x)), name="c3d")


HAND_WRITTEN = {
    "vgg_flatten": vgg_flatten,
    "vgg11_paper": lambda: models.vgg(11, width=0.125),
    "resnet_v1_bottleneck": resnet_v1_bottleneck,
    "preact_resnet": lambda: models.preact_resnet(20, width=0.5),
    "densenet": lambda: models.densenet(10, growth_rate=4),
    "mobilenet_v2_block": mobilenet_v2_block,
    "se_block": se_block,
    "hard_swish_ops": hard_swish_ops,
    "nested": nested,
    "shared_submodel_twice": shared_submodel_twice,
    "two_in_two_out": two_in_two_out,
    "conv_family": conv_family,
    "conv3d": conv3d,
}

A = keras.applications
APPLICATIONS = {
    "ResNet50": lambda: A.ResNet50(weights=None, input_shape=(32, 32, 3), classes=10),
    "ResNet50V2": lambda: A.ResNet50V2(weights=None, input_shape=(32, 32, 3), classes=10),
    "MobileNet": lambda: A.MobileNet(weights=None, input_shape=(32, 32, 3), alpha=0.25, classes=10),
    "MobileNetV2": lambda: A.MobileNetV2(weights=None, input_shape=(32, 32, 3), alpha=0.35, classes=10),
    "MobileNetV3Small": lambda: A.MobileNetV3Small(weights=None, input_shape=(32, 32, 3), classes=10),
    "EfficientNetB0": lambda: A.EfficientNetB0(weights=None, input_shape=(32, 32, 3), classes=10),
    "DenseNet121": lambda: A.DenseNet121(weights=None, input_shape=(32, 32, 3), classes=10),
}


def _snapshot(model):
    return [np.array(w) for w in model.get_weights()], [len(l._inbound_nodes) for l in model._flatten_layers()]


def _check(build, fraction=0.4):
    model = build()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        testing.randomize_batchnorm(model)
        testing.kill_channels(model, fraction)
        before = _snapshot(model)
        x = testing.random_inputs(model)
        p = keras_slim.plan(model, threshold=1e-12)
        small = keras_slim.prune(model, p)
    assert p.removed_channels > 0, "nothing was pruned: the test would prove nothing"
    assert p.params_after < p.params_before
    assert small.count_params() == p.params_after  # beta = 0: nothing folded
    diff = testing.max_difference(model, small, x)
    scale = max(float(np.max(np.abs(keras.ops.convert_to_numpy(y)))) for y in keras.tree.flatten(model(x)))
    assert diff <= 1e-5 * max(1.0, scale), f"outputs differ by {diff}"
    after = _snapshot(model)
    assert all(np.array_equal(a, b) for a, b in zip(before[0], after[0])), "input model's weights changed"
    assert before[1] == after[1], "input model's layers were called into a new graph"
    return model, small, p


@pytest.mark.parametrize("name", sorted(HAND_WRITTEN))
def test_hand_written_architectures_are_exact(name):
    _check(HAND_WRITTEN[name])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(APPLICATIONS))
def test_keras_applications_are_exact(name):
    _check(APPLICATIONS[name], fraction=0.3)


def test_negative_control_live_channels_change_outputs():
    """Pruning channels that are alive must change the outputs (the check has teeth)."""
    model = HAND_WRITTEN["resnet_v1_bottleneck"]()
    testing.randomize_batchnorm(model)
    small = keras_slim.prune(model, 0.3)
    assert testing.max_difference(model, small, testing.random_inputs(model)) > 1e-3


def test_channel_selection_inserted_for_shared_inputs():
    model, small, p = _check(HAND_WRITTEN["preact_resnet"])
    selections = [l for l in small._flatten_layers() if isinstance(l, keras_slim.ChannelSelection)]
    assert selections, "pre-activation ResNet should prune through ChannelSelection"


def test_densenet_prunes_through_selection_without_it_barely():
    model = HAND_WRITTEN["densenet"]()
    testing.randomize_batchnorm(model)
    testing.kill_channels(model, 0.5)
    with_sel = keras_slim.plan(model, threshold=1e-12)
    without = keras_slim.plan(model, threshold=1e-12, channel_selection=False)
    assert with_sel.removed_channels > without.removed_channels


def test_nested_model_stays_nested():
    _, small, _ = _check(nested)
    inner = small.get_layer("inner")
    assert isinstance(inner, keras.Model)
    assert inner.output.shape[-1] < 7 or inner.layers[1].filters < 10


def test_sequential_stays_sequential():
    _, small, _ = _check(vgg_flatten)
    assert isinstance(small, keras.Sequential)


def test_multi_io_structure_preserved():
    _, small, _ = _check(two_in_two_out)
    assert set(small.output.keys() if isinstance(small.output, dict) else small.output_names) >= {"cls", "seg"}
    assert small.get_layer("seg").filters == 2  # outputs keep their width


def _beta_model():
    """Removed channels reach Dense (via GAP and Flatten) and 1x1 / 'valid' convs only."""
    inp = keras.Input((6, 6, 3))
    x = layers.Conv2D(8, 3, padding="valid", name="c1")(inp)
    x = layers.BatchNormalization(name="b1")(x)
    x = layers.Activation("sigmoid")(x)  # act(beta) != 0 for a dead channel
    x = layers.Conv2D(6, 1, use_bias=False, name="c2")(x)
    x = layers.BatchNormalization(name="b2")(x)
    x = layers.ReLU()(x)
    y = layers.Conv2D(5, 3, padding="valid", name="c3")(x)
    a = layers.Dense(3, name="d1")(layers.GlobalAveragePooling2D()(x))
    b = layers.Dense(2, name="d2")(layers.Flatten()(y))
    return keras.Model(inp, [a, b])


def test_constant_of_removed_channels_is_folded_exactly():
    model = _beta_model()
    testing.randomize_batchnorm(model)
    for name, dead in (("b1", [1, 4, 6]), ("b2", [0, 3])):
        w = model.get_layer(name).get_weights()
        w[0][dead] = 0.0  # gamma = 0, beta stays: the channel is the constant act(beta)
        model.get_layer(name).set_weights(w)
    x = testing.random_inputs(model)
    p = keras_slim.plan(model, threshold=1e-12)
    assert p.removed_channels == 5
    folded = keras_slim.prune(model, p)
    dropped = keras_slim.prune(model, p, fold_constants=False)
    assert testing.max_difference(model, folded, x) < 1e-5
    assert testing.max_difference(model, dropped, x) > 1e-2  # without folding it would shift
    assert not folded.get_layer("c2").use_bias  # c2 -> BN: its moving mean absorbed it
    assert folded.count_params() == p.params_after
