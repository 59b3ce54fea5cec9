"""BatchNormalization folding: exact equivalence, what is (not) folded, no mutation."""
import keras
import numpy as np
import pytest
from keras import layers

from keras_slim.export import fold_batchnorm
from keras_slim.export import _testmodels as tm


def _bn_count(model):
    return sum(isinstance(l, layers.BatchNormalization) for l in tm._all_layers(model))


def _assert_same_function(a, b, shape, seed=0):
    x = np.random.default_rng(seed).uniform(-1, 1, (2,) + shape).astype("float32")
    ya, yb = (keras.ops.convert_to_numpy(m(x, training=False)) for m in (a, b))
    assert np.abs(ya - yb).max() <= 1e-5 * max(1.0, np.abs(ya).max())


def _functional(body, shape):
    inp = keras.Input(shape)
    return tm.randomize_bn(keras.Model(inp, body(inp)))


def test_conv_bn_relu_folds_and_gains_a_bias():
    model = _functional(lambda x: layers.ReLU()(layers.BatchNormalization()(
        layers.Conv2D(6, 3, use_bias=False)(x))), (8, 8, 3))
    folded = fold_batchnorm(model)
    assert _bn_count(folded) == 0
    conv = [l for l in folded.layers if isinstance(l, layers.Conv2D)][0]
    assert conv.use_bias and len(conv.get_weights()) == 2
    _assert_same_function(model, folded, (8, 8, 3))


def test_depthwise_with_multiplier_2():
    model = _functional(lambda x: layers.BatchNormalization()(
        layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same")(x)), (8, 8, 3))
    folded = fold_batchnorm(model)
    assert _bn_count(folded) == 0
    _assert_same_function(model, folded, (8, 8, 3))


def test_dense_bn():
    model = _functional(lambda x: layers.BatchNormalization(center=False)(layers.Dense(7)(x)),
                        (5,))
    folded = fold_batchnorm(model)
    assert _bn_count(folded) == 0
    _assert_same_function(model, folded, (5,))


def test_residual_add_model_and_input_model_untouched():
    model = tm.randomize_bn(tm.resnet_add())
    before = [w.copy() for w in model.get_weights()]
    nodes_before = [len(l._inbound_nodes) for l in model.layers]
    folded = fold_batchnorm(model)

    assert _bn_count(model) == 6 and _bn_count(folded) == 0
    assert any(isinstance(l, layers.Add) for l in folded.layers)
    _assert_same_function(model, folded, (16, 16, 3))
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert [len(l._inbound_nodes) for l in model.layers] == nodes_before
    assert not {id(w) for w in folded.weights} & {id(w) for w in model.weights}


def test_mobilenet_v2():
    model = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), alpha=0.35,
                                           classifier_activation=None)
    tm.randomize_bn(model, seed=3)
    folded = fold_batchnorm(model)
    assert _bn_count(model) == 52 and _bn_count(folded) == 0
    assert len(folded.layers) == len(model.layers) - 52
    _assert_same_function(model, folded, (96, 96, 3))


def test_sequential_stays_sequential_with_1d_3d_and_separable():
    seq1d = tm.randomize_bn(keras.Sequential([
        keras.Input((12, 4)), layers.Conv1D(6, 3), layers.BatchNormalization(), layers.ReLU(),
        layers.SeparableConv1D(5, 3, depth_multiplier=2), layers.BatchNormalization()]))
    seq3d = tm.randomize_bn(keras.Sequential([
        keras.Input((4, 6, 6, 2)), layers.Conv3D(3, 2), layers.BatchNormalization(),
        layers.Flatten(), layers.Dense(3),
        layers.BatchNormalization()]))
    for model, shape in ((seq1d, (12, 4)), (seq3d, (4, 6, 6, 2))):
        folded = fold_batchnorm(model)
        assert isinstance(folded, keras.Sequential) and _bn_count(folded) == 0
        _assert_same_function(model, folded, shape)


def test_unfoldable_patterns_are_kept():
    def body(x):
        a = layers.Conv2D(4, 3, activation="relu")(x)  # activation before BN
        a = layers.BatchNormalization()(a)
        b = layers.Conv2D(4, 3)(x)  # conv output used twice
        b = layers.Add()([layers.BatchNormalization()(b), b])
        c = layers.Conv2D(4, 3)(x)
        c = layers.BatchNormalization(axis=1)(c)  # not the channel axis
        return layers.Concatenate()([a, b, c])

    model = _functional(body, (8, 8, 3))
    folded = fold_batchnorm(model)
    assert _bn_count(folded) == 3
    _assert_same_function(model, folded, (8, 8, 3))


def test_keras_ops_nodes_are_recreated():
    def body(x):
        x = layers.BatchNormalization()(layers.Conv2D(4, 3)(x))
        y = x * 2.0 + keras.ops.mean(x, axis=-1, keepdims=True)  # Operation nodes, no layers
        return keras.ops.concatenate([x, y], axis=-1)

    model = _functional(body, (8, 8, 3))
    folded = fold_batchnorm(model)
    assert _bn_count(folded) == 0
    _assert_same_function(model, folded, (8, 8, 3))


def test_nested_model_is_folded_inside():
    inner = tm.randomize_bn(tm.mbv2_se())
    inp = keras.Input((16, 16, 3))
    outer = keras.Model(inp, layers.Dense(2)(inner(inp)))
    folded = fold_batchnorm(outer)
    assert _bn_count(outer) == 4 and _bn_count(folded) == 0
    assert isinstance(folded.layers[1], keras.Model) and folded.layers[1] is not inner
    _assert_same_function(outer, folded, (16, 16, 3))


def test_multi_input_output_dict_structure_is_kept():
    model = tm.randomize_bn(tm.two_io())
    folded = fold_batchnorm(model)
    assert _bn_count(folded) == 0
    rng = np.random.default_rng(0)
    x = {"image": rng.uniform(size=(2, 16, 16, 3)).astype("float32"),
         "meta": rng.normal(size=(2, 5)).astype("float32")}
    ya, yb = model(x), folded(x)
    assert sorted(yb) == ["logits", "score"]
    for k in ya:
        np.testing.assert_allclose(ya[k], yb[k], rtol=1e-5, atol=1e-5)


def test_rejects_non_models():
    with pytest.raises(TypeError, match="keras.Model"):
        fold_batchnorm(layers.Dense(3))


def test_an_adapted_normalization_keeps_its_statistics_through_folding():
    x = np.random.default_rng(1).uniform(0, 255, (4, 8, 8, 3)).astype("float32")
    norm = keras.layers.Normalization(axis=-1)
    norm.adapt(x)
    inp = keras.Input((8, 8, 3))
    h = keras.layers.BatchNormalization()(keras.layers.Conv2D(4, 3)(norm(inp)))
    m = keras.Model(inp, keras.layers.GlobalAveragePooling2D()(h))
    folded = fold_batchnorm(m)  # its Normalization normalised with mean 0, variance 1 before
    np.testing.assert_allclose(np.asarray(folded(x)), np.asarray(m(x)), rtol=1e-4, atol=1e-4)
