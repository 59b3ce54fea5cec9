"""tf_keras (Keras 2) models: same API, same flavour back, same exactness."""
import os
import warnings

import numpy as np
import pytest

tf_keras = pytest.importorskip("tf_keras")
L = tf_keras.layers

import keras_slim  # noqa: E402
from keras_slim import testing  # noqa: E402


def conv_bn(x, c, k=3, act="relu"):
    x = L.Conv2D(c, k, padding="same", use_bias=False)(x)
    x = L.BatchNormalization()(x)
    return L.Activation(act)(x) if act else x


def vgg_seq():
    return tf_keras.Sequential([
        tf_keras.Input((16, 16, 3)),
        L.Conv2D(8, 3, padding="same"), L.BatchNormalization(), L.ReLU(), L.MaxPooling2D(),
        L.Conv2D(12, 3, padding="same"), L.BatchNormalization(), L.ReLU(), L.MaxPooling2D(),
        L.Flatten(), L.Dense(5)])


def resnet_preact_dense():
    inp = tf_keras.Input((16, 16, 3))
    x = conv_bn(inp, 16)
    y = conv_bn(conv_bn(x, 16), 16, act=None)
    x = L.ReLU()(L.Add()([x, y]))
    z = L.Conv2D(8, 1)(L.ReLU()(L.BatchNormalization()(x)))  # pre-activation: selection
    x = L.Concatenate()([x, z])
    x = L.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    x = L.BatchNormalization()(x)
    s = L.Dense(24, activation="sigmoid")(L.Dense(6, activation="relu")(L.GlobalAveragePooling2D()(x)))
    x = L.Multiply()([x, L.Reshape((1, 1, 24))(s)])
    return tf_keras.Model(inp, L.Dense(4)(L.Flatten()(L.MaxPooling2D(4)(x))))


def nested():
    inner_in = tf_keras.Input((8, 8, 6))
    inner = tf_keras.Model(inner_in, conv_bn(inner_in, 10), name="inner")
    inp = tf_keras.Input((8, 8, 3))
    x = conv_bn(inner(conv_bn(inp, 6)), 5)
    return tf_keras.Model(inp, L.Dense(2)(L.GlobalAveragePooling2D()(x)))


def mobilenet_v2():
    return tf_keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), alpha=0.35,
                                             classes=10)


@pytest.mark.parametrize("build", [vgg_seq, resnet_preact_dense, nested, mobilenet_v2],
                         ids=lambda f: f.__name__)
def test_tf_keras_models_prune_exactly_and_stay_tf_keras(build):
    model = build()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        diff, plan, small = testing.check_exact(model, fraction=0.4)
    assert plan.removed_channels > 0
    assert diff < 1e-5
    assert isinstance(small, tf_keras.Model)
    assert type(small).__module__.startswith("tf_keras")
    assert small.count_params() == plan.params_after
    if build is vgg_seq:
        assert isinstance(small, tf_keras.Sequential)


def test_tf_keras_selection_layer_saves_and_loads(tmp_path):
    model = resnet_preact_dense()
    testing.randomize_batchnorm(model)
    testing.kill_channels(model, 0.5)
    small = keras_slim.prune(model, threshold=1e-12)
    assert any(type(l).__name__ == "ChannelSelection" for l in small.layers)
    path = os.path.join(tmp_path, "small.keras")
    small.save(path)
    loaded = tf_keras.models.load_model(path)
    x = testing.random_inputs(model)
    assert testing.max_difference(small, loaded, x) == 0.0


def test_add_bn_l1_on_tf_keras():
    model = vgg_seq()
    keras_slim.add_bn_l1(model, 1e-3)
    assert len(model.losses) == 2
    gammas = sum(float(np.abs(l.gamma.numpy()).sum()) for l in model.layers
                 if isinstance(l, L.BatchNormalization))
    assert float(sum(model.losses)) == pytest.approx(1e-3 * gammas, rel=1e-5)
    keras_slim.add_bn_l1(model, 1e-2)  # replaces
    assert len(model.losses) == 2
    assert float(sum(model.losses)) == pytest.approx(1e-2 * gammas, rel=1e-5)
    keras_slim.add_bn_l1(model, 0.0)
    assert len(model.losses) == 0


def test_tf_keras_sparsity_training_runs_and_saves(tmp_path):
    model = vgg_seq()
    keras_slim.add_bn_l1(model, 1e-4)
    model.compile("sgd", "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    model.fit(rng.normal(size=(8, 16, 16, 3)), rng.integers(0, 5, 8), epochs=1, verbose=0)
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = tf_keras.models.load_model(path)
    reg = loaded.layers[1].gamma_regularizer
    assert type(reg).__name__ == "BNL1" and reg.strength == 1e-4


def test_keras_slim_does_not_import_tf_keras_by_itself():
    import subprocess
    import sys

    code = ("import os; os.environ['TF_CPP_MIN_LOG_LEVEL']='3'; import sys, keras_slim; "
            "from keras_slim.training.cifar import models; m = models.vgg(11, width=0.125); keras_slim.prune(m, 0.3); "
            "print('tf_keras' in sys.modules, os.environ.get('TF_USE_LEGACY_KERAS'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip().splitlines()[-1] == "False None", out.stderr[-2000:]


def test_exporters_say_a_tf_keras_model_is_not_keras_3(tmp_path):
    pytest.importorskip("ai_edge_litert")
    with pytest.raises(keras_slim.ArgumentTypeError, match="tf_keras .*export_qat_tflite"):
        keras_slim.export_tflite(vgg_seq(), tmp_path / "m.tflite")
    assert not list(tmp_path.iterdir())
