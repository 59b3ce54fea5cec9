"""keras_slim.qat: Keras 3 -> tf_keras translation, TFMOT QAT, int8 export.

TFMOT runs in this process: keras_slim.qat imports it without flipping
`tf.keras` / TF_USE_LEGACY_KERAS (tested here, in-process and in a fresh
interpreter), so the rest of the suite keeps running on Keras 3.
"""
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from keras import layers as L

import keras_slim
from keras_slim import testing
from keras_slim.training.cifar import models

pytest.importorskip("tf_keras")
qat = pytest.importorskip("keras_slim.qat")
from keras_slim.export.qat import tflite as qat_tflite  # noqa: E402


def _max_diff(k3_model, tk_model, x, training=False):
    a = keras.ops.convert_to_numpy(k3_model(x, training=training))
    b = np.asarray(tk_model(x, training=training))
    assert a.shape == b.shape
    return float(np.abs(a - b).max())


def _plain_cnn():
    return keras.Sequential([
        keras.Input((16, 16, 3), name="img"),
        L.Conv2D(8, 3, padding="same", use_bias=False, name="c1"),
        L.BatchNormalization(name="bn1"),
        L.ReLU(name="r1"),
        L.MaxPooling2D(name="mp"),
        L.ZeroPadding2D(1, name="pad"),
        L.Conv2D(12, 3, name="c2", kernel_regularizer=keras.regularizers.L2(1e-4)),
        L.BatchNormalization(name="bn2", gamma_regularizer=keras_slim.bn_l1(1e-4)),
        L.LeakyReLU(0.1, name="lrelu"),
        L.AveragePooling2D(2, name="ap"),
        L.Dropout(0.3, name="drop"),
        L.Flatten(name="flat"),
        L.Dense(10, name="fc"),
        L.Softmax(name="softmax"),
    ], name="plain_cnn")


def _resnet_add():
    inp = keras.Input((16, 16, 3), name="img")
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inp)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.Activation("relu", name="stem_relu")(x)
    for b in range(2):
        y = L.Conv2D(8, 3, padding="same", use_bias=False, name=f"b{b}_c1")(x)
        y = L.BatchNormalization(name=f"b{b}_bn1")(y)
        y = L.ReLU(name=f"b{b}_r1")(y)
        y = L.Conv2D(8, 3, padding="same", use_bias=False, name=f"b{b}_c2")(y)
        y = L.BatchNormalization(name=f"b{b}_bn2")(y)
        x = L.Add(name=f"b{b}_add")([x, y])
        x = L.ReLU(name=f"b{b}_out")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, L.Dense(10, name="fc")(x), name="resnet_add")


def _mobilenet_se():
    """MobileNetV2 inverted residual with squeeze-excitation, a separable conv and a concat."""
    inp = keras.Input((16, 16, 8), name="img")
    x = L.Conv2D(24, 1, use_bias=False, name="expand")(inp)
    x = L.BatchNormalization(name="expand_bn")(x)
    x = L.ReLU(6.0, name="expand_relu")(x)
    x = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    x = L.BatchNormalization(name="dw_bn")(x)
    x = L.ReLU(6.0, name="dw_relu")(x)
    s = L.GlobalAveragePooling2D(keepdims=True, name="se_gap")(x)
    s = L.Conv2D(6, 1, activation="relu", name="se_reduce")(s)
    s = L.Conv2D(24, 1, activation="sigmoid", name="se_expand")(s)
    x = L.Multiply(name="se_mul")([x, s])
    x = L.Conv2D(8, 1, use_bias=False, name="project")(x)
    x = L.BatchNormalization(name="project_bn")(x)
    x = L.Add(name="residual")([inp, x])
    z = L.SeparableConv2D(8, 3, padding="same", name="sep")(x)
    x = L.Concatenate(name="concat")([x, z])
    x = L.Reshape((8, 32, 16), name="reshape")(x)
    x = L.GlobalMaxPooling2D(name="gmp")(x)
    return keras.Model(inp, L.Dense(5, name="fc")(x), name="mobilenet_se")


@pytest.mark.parametrize("build", [_plain_cnn, _resnet_add, _mobilenet_se])
def test_to_tf_keras_matches_keras3(build):
    import tf_keras

    model = build()
    testing.randomize_batchnorm(model)
    tk = qat.to_tf_keras(model)
    assert isinstance(tk, tf_keras.Model)
    assert isinstance(tk, tf_keras.Sequential) == isinstance(model, keras.Sequential)
    assert [layer.name for layer in tk.layers if not isinstance(layer, tf_keras.layers.InputLayer)] \
        == [layer.name for layer in model.layers if not isinstance(layer, L.InputLayer)]
    assert tk.count_params() == model.count_params()
    x = np.random.default_rng(0).normal(size=(4,) + tuple(model.input_shape[1:])).astype("float32")
    assert _max_diff(model, tk, x) < 1e-5
    if build is _resnet_add:  # no dropout: training mode (batch statistics) must agree too
        assert _max_diff(model, tk, x, training=True) < 1e-5


def test_to_tf_keras_translates_settings():
    import tf_keras

    tk = qat.to_tf_keras(_plain_cnn())
    assert isinstance(tk.get_layer("c2").kernel_regularizer, tf_keras.regularizers.L2)
    l1 = tk.get_layer("bn2").gamma_regularizer  # keras_slim's BN penalty becomes an exact L1
    assert isinstance(l1, tf_keras.regularizers.L1)
    assert float(l1.l1) == pytest.approx(1e-4)
    assert tk.get_layer("lrelu").alpha == pytest.approx(0.1)
    assert len(tk.losses) == 2


def test_to_tf_keras_pruned_preact_resnet_with_channel_selection():
    model = models.preact_resnet(20, width=0.5)
    testing.randomize_batchnorm(model)
    testing.kill_channels(model, 0.5)
    small = keras_slim.prune(model, 0.5)
    selections = [layer for layer in small.layers if isinstance(layer, keras_slim.ChannelSelection)]
    assert selections, "the pruned pre-activation ResNet should contain ChannelSelection layers"
    tk = qat.to_tf_keras(small)
    assert tk.count_params() == small.count_params()
    for layer in selections:
        assert type(tk.get_layer(layer.name)).__name__ == "ChannelSelection"
        assert tk.get_layer(layer.name).indices == layer.indices
    x = np.random.default_rng(1).normal(size=(4, 32, 32, 3)).astype("float32")
    assert _max_diff(small, tk, x) < 1e-5


def _zoo():
    """Every other entry of TRANSLATABLE_LAYERS, by input rank."""
    seq = lambda shape, *layers: keras.Sequential([keras.Input(shape)] + list(layers))  # noqa: E731
    return [
        seq((16, 4), L.Conv1D(4, 3, padding="same"), L.DepthwiseConv1D(3), L.SeparableConv1D(5, 3),
            L.Conv1DTranspose(3, 3, strides=2), L.MaxPooling1D(), L.AveragePooling1D(2),
            L.UpSampling1D(2), L.ZeroPadding1D(1), L.Cropping1D(1), L.SpatialDropout1D(0.1),
            L.GlobalAveragePooling1D()),
        seq((16, 4), L.GlobalMaxPooling1D()),
        seq((6, 6, 6, 2), L.Conv3D(3, 3, padding="same"), L.Conv3DTranspose(2, 2, strides=2),
            L.MaxPooling3D(), L.AveragePooling3D(2), L.ZeroPadding3D(1), L.Cropping3D(1),
            L.UpSampling3D(2), L.SpatialDropout3D(0.1), L.GlobalMaxPooling3D()),
        seq((6, 6, 6, 2), L.GlobalAveragePooling3D()),
        seq((8, 8, 3), L.Conv2DTranspose(4, 3, strides=2, output_padding=1),
            L.LayerNormalization(), L.PReLU(), L.ELU(0.5), L.Activation("gelu"),
            L.SpatialDropout2D(0.2), L.GaussianNoise(0.1), L.GaussianDropout(0.1),
            L.ActivityRegularization(0.01), L.Rescaling(0.5, 0.1), L.Permute((2, 1, 3)),
            L.UpSampling2D(2, interpolation="bilinear"), L.Cropping2D(1), L.Activation("silu")),
        seq((4,), L.Dense(4, activation="elu"), L.Dense(4, activation="selu"),
            L.Dense(4, activation="mish"), L.Dense(4, activation="tanh")),
    ]


def _merges_nested_multi_io():
    sub = keras.Sequential([keras.Input((4,)), L.Dense(3, name="sub_fc")], name="sub")
    a_in, b_in = keras.Input((4,), name="a"), keras.Input((4,), name="b")
    a, b = sub(a_in), sub(L.Dense(4, name="pre")(b_in))  # a nested model called twice
    merged = L.Concatenate(name="cat")([L.Subtract()([a, b]), L.Average()([a, b]),
                                        L.Maximum()([a, b]), L.Minimum()([a, b])])
    return keras.Model({"a": a_in, "b": b_in}, {"y": L.Dense(2, name="y")(merged), "z": a})


def test_to_tf_keras_layer_zoo():
    rng = np.random.default_rng(4)
    for model in _zoo():
        x = rng.normal(size=(2,) + tuple(model.input_shape[1:])).astype("float32")
        assert _max_diff(model, qat.to_tf_keras(model), x) < 1e-5, model.layers
    model = _merges_nested_multi_io()
    tk = qat.to_tf_keras(model)
    x = {k: rng.normal(size=(3, 4)).astype("float32") for k in ("a", "b")}
    ref, out = model(x), tk(x)
    for key in ("y", "z"):
        assert np.abs(keras.ops.convert_to_numpy(ref[key]) - np.asarray(out[key])).max() < 1e-5
    assert tk.count_params() == model.count_params()


def test_to_tf_keras_refuses_inexact_translations():
    inp = keras.Input((4,), name="x")
    with pytest.raises(qat.TranslationError, match="hard_sigmoid"):
        qat.to_tf_keras(keras.Model(inp, L.Activation("hard_sigmoid", name="hs")(inp)))
    with pytest.raises(qat.TranslationError, match="keras.ops operation"):
        qat.to_tf_keras(keras.Model(inp, L.Dense(3)(inp) * 2.0))
    lora = L.Dense(3, name="lora")
    model = keras.Model(inp, lora(inp))
    lora.enable_lora(2)
    with pytest.raises(qat.TranslationError, match="lora_rank"):
        qat.to_tf_keras(model)


def test_to_tf_keras_names_the_layer_it_cannot_translate():
    inp = keras.Input((4,), name="x")
    h = L.Dense(3, name="fc")(inp)
    out = L.Lambda(lambda t: t * 2.0, name="double")(h)
    with pytest.raises(qat.TranslationError, match=r"'double'.*Lambda.*translators="):
        qat.to_tf_keras(keras.Model(inp, out))


def test_to_tf_keras_custom_translator():
    import tf_keras

    class Scale(L.Layer):
        def build(self, shape):
            self.scale = self.add_weight(shape=(shape[-1],), initializer="ones", name="scale")

        def call(self, x):
            return x * self.scale

    class TFScale(tf_keras.layers.Layer):
        def build(self, shape):
            self.scale = self.add_weight(shape=(shape[-1],), initializer="ones", name="scale")

        def call(self, x):
            return x * self.scale

    inp = keras.Input((4,), name="x")
    model = keras.Model(inp, Scale(name="scale")(L.Dense(3, name="fc")(inp)))
    model.get_layer("scale").set_weights([np.array([1.0, -2.0, 3.0], "float32")])
    tk = qat.to_tf_keras(model, translators={Scale: lambda layer: TFScale(name=layer.name)})
    x = np.random.default_rng(2).normal(size=(3, 4)).astype("float32")
    assert _max_diff(model, tk, x) < 1e-6


def test_to_tf_keras_rejects_wrong_input():
    with pytest.raises(TypeError, match="keras.Model"):
        qat.to_tf_keras(L.Dense(3))


def _tiny_slim_net():
    """Conv-BN-ReLU, a ChannelSelection feeding a standalone BN, SE Multiply, residual Add."""
    inp = keras.Input((12, 12, 3), name="img")
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="c1")(inp)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU(name="r1")(x)
    y = keras_slim.ChannelSelection([0, 2, 3, 5, 6, 7], name="select")(x)
    y = L.BatchNormalization(name="pre_bn")(y)
    y = L.ReLU(name="pre_relu")(y)
    y = L.Conv2D(8, 3, padding="same", use_bias=False, name="c2")(y)
    s = L.GlobalAveragePooling2D(keepdims=True, name="se_gap")(y)
    s = L.Conv2D(8, 1, activation="sigmoid", name="se")(s)
    y = L.Multiply(name="se_mul")([y, s])
    x = L.Add(name="add")([x, y])
    x = L.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inp, L.Dense(4, name="fc")(x), name="tiny_slim")
    testing.randomize_batchnorm(model)  # an identity BN would be optimised away
    return model


def test_quantize_fit_export_int8(tmp_path):
    import tensorflow as tf

    env_before = os.environ.get("TF_USE_LEGACY_KERAS")
    model = _tiny_slim_net()
    q = qat.quantize_aware(model)
    assert os.environ.get("TF_USE_LEGACY_KERAS") == env_before
    names = {type(layer).__name__ for layer in q.layers}
    assert {"QuantizeLayer", "QuantizeWrapperV2"} <= names

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(64, 12, 12, 3)).astype("float32")
    y = rng.integers(0, 4, size=64)
    q.compile("adam", "sparse_categorical_crossentropy")
    history = q.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert np.isfinite(history.history["loss"][0])

    path = tmp_path / "qat_int8.tflite"
    report = qat.export_qat_tflite(q, path, representative_data=x[:32], sample_inputs=x[:8],
                                   labelled_data=(x[:16], y[:16]), tolerance=0.25)
    assert path.is_file() and report.size_bytes == path.stat().st_size
    assert report.verified and report.max_rel_error < 0.25
    assert report.details["float_ops"] == []
    # the selection was ordered into one slice (XNNPACK runs it), not a GATHER
    assert {"CONV_2D", "MUL"} <= set(report.op_histogram)
    assert "GATHER" not in report.op_histogram
    assert {"STRIDED_SLICE", "SLICE"} & set(report.op_histogram), report.op_histogram
    assert report.top1_agreement is not None
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner()
    (out,) = runner(img=x[:1]).values()
    assert out.shape == (1, 4) and np.isfinite(out).all()
    # every conv is int8 in the file
    from ai_edge_litert import schema_py_generated as schema

    fb = schema.Model.GetRootAs(bytearray(path.read_bytes()), 0)
    sub = fb.Subgraphs(0)
    conv_types = {sub.Tensors(sub.Operators(j).Inputs(1)).Type()
                  for j in range(sub.OperatorsLength())
                  if fb.OperatorCodes(sub.Operators(j).OpcodeIndex()).BuiltinCode()
                  == schema.BuiltinOperator.CONV_2D}
    assert conv_types == {schema.TensorType.INT8}

    # a Keras 3 model still trains after TFMOT was used in this process
    k3 = _resnet_add()
    k3.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    k3.fit(rng.normal(size=(8, 16, 16, 3)), rng.integers(0, 10, 8), verbose=0)
    if env_before is None:
        assert tf.keras.version().startswith("3.")


def test_export_calibration_and_int8_io(tmp_path):
    q = qat.quantize_aware(_tiny_slim_net())
    path = tmp_path / "m.tflite"
    # the standalone BN's MUL -> ADD intermediate has no QAT range: say what to pass
    with pytest.raises(keras_slim.ExportError, match="representative_data"):
        qat.export_qat_tflite(q, path)
    assert not path.exists() and not list(tmp_path.iterdir())
    x = np.random.default_rng(3).uniform(0, 1, size=(16, 12, 12, 3)).astype("float32")
    report = qat.export_qat_tflite(q, path, representative_data=x, int8_io=True)
    assert [i.dtype for i in report.inputs] == ["int8"]
    assert [o.dtype for o in report.outputs] == ["int8"]
    assert report.details["float_ops"] == [] and "QUANTIZE" not in report.op_histogram
    assert report.verified and np.isfinite(report.max_rel_error)
    assert report.max_rel_error < qat_tflite.SUSPECT_ERROR


def test_a_suspect_qat_file_is_warned_about(tmp_path, monkeypatch, caplog):
    """No tolerance: an error far beyond quantization is logged, not passed in silence."""
    from keras_slim.export import _pipeline

    q = qat.quantize_aware(_tiny_slim_net())
    x = np.random.default_rng(3).uniform(0, 1, size=(16, 12, 12, 3)).astype("float32")
    real = _pipeline.write_verified

    def off_by_two(buf, target, report, *args, **kwargs):
        real(buf, target, report, *args, **kwargs)
        report.max_rel_error = 2.0  # as a broken converter run gives

    monkeypatch.setattr(qat_tflite, "write_verified", off_by_two)
    with caplog.at_level("WARNING", logger="keras_slim"):
        qat.export_qat_tflite(q, tmp_path / "m.tflite", representative_data=x)
    assert "more than quantization explains" in caplog.text


def test_quantize_aware_arguments():
    model = _tiny_slim_net()
    with pytest.raises(ValueError, match="no layer"):
        qat.quantize_aware(model, skip=["nope"])
    with pytest.raises(TypeError, match="quantize_aware"):
        qat.export_qat_tflite(model, "x.tflite")


def test_fresh_process_keeps_keras3():
    """In a new interpreter, quantize_aware must leave tf.keras and the env var alone."""
    code = textwrap.dedent("""
        import os
        os.environ.pop("TF_USE_LEGACY_KERAS", None)
        import keras, tensorflow as tf
        from keras_slim.qat import quantize_aware
        inp = keras.Input((8, 8, 3))
        x = keras.layers.Conv2D(4, 3)(inp)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
        m = keras.Model(inp, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
        quantize_aware(m)
        print("ENV", os.environ.get("TF_USE_LEGACY_KERAS"))
        print("TFKERAS", tf.keras.version())
        print("DENSE", type(tf.keras.layers.Dense(1)).__module__.split(".")[0])
    """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_USE_LEGACY_KERAS", None)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = dict(ln.split(" ", 1) for ln in out.stdout.splitlines() if " " in ln)
    assert lines["ENV"] == "None"
    assert lines["TFKERAS"].startswith("3.")
    assert lines["DENSE"] == "keras"
