"""TFLite export: round trips in LiteRT, quantization modes, errors and atomicity."""
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_slim.export import (
    ExportError, benchmark_tflite, compare_latency, export_tflite,
)
from keras_slim.export import _testmodels as tm

pytest.importorskip("ai_edge_litert")
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

BUILDERS = {"plain_cnn": tm.plain_cnn, "resnet_add": tm.resnet_add, "mbv2_se": tm.mbv2_se,
            "two_io": tm.two_io}


@pytest.fixture(scope="module")
def models():
    return {name: tm.randomize_bn(build(), seed=i) for i, (name, build) in enumerate(BUILDERS.items())}


def _inputs(model, n, seed=1):
    rng = np.random.default_rng(seed)
    if model.name == "two_io":
        return {"image": rng.uniform(0, 1, (n, 16, 16, 3)).astype("float32"),
                "meta": rng.normal(size=(n, 5)).astype("float32")}
    return rng.uniform(0, 1, (n, 16, 16, 3)).astype("float32")


def _run_litert(path, feeds):
    """Independent check: run each sample through the file's signature runner."""
    runner = Interpreter(model_path=str(path)).get_signature_runner()
    n = len(next(iter(feeds.values())))
    results = [runner(**{k: v[i:i + 1] for k, v in feeds.items()}) for i in range(n)]
    return {k: np.concatenate([r[k] for r in results]) for k in results[0]}


def _keras_dict(model, x):
    out = model(x, training=False)
    if isinstance(out, dict):
        return {k: keras.ops.convert_to_numpy(v) for k, v in out.items()}
    return {model.layers[-1].name: keras.ops.convert_to_numpy(out)}


def _assert_clean_dir(directory, expected):
    assert sorted(os.listdir(directory)) == sorted(expected)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_float32_round_trip_matches_keras(models, name, tmp_path):
    model = models[name]
    path = tmp_path / f"{name}.tflite"
    report = export_tflite(model, path)

    assert report.verified and report.max_rel_error < 1e-4
    assert report.size_bytes == path.stat().st_size
    assert report.folded_batchnorms > 0
    assert "CONV_2D" in report.op_histogram
    assert not [op for op in report.op_histogram if op.startswith("Flex")]
    x = _inputs(model, 3)
    feeds = x if isinstance(x, dict) else {report.inputs[0].name: x}
    got, want = _run_litert(path, feeds), _keras_dict(model, x)
    assert sorted(got) == sorted(want)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-4)
    _assert_clean_dir(tmp_path, [path.name])


def test_channel_gather_is_a_builtin_gather(models, tmp_path):
    report = export_tflite(models["plain_cnn"], tmp_path / "g.tflite", fold_bn=False)
    assert report.op_histogram.get("GATHER") == 1
    assert report.folded_batchnorms == 0 and report.max_rel_error < 1e-4


def test_unrebuildable_custom_layer_is_exported_unfolded(tmp_path, caplog):
    class Scale(keras.layers.Layer):  # no get_config(): cannot be re-created from config
        def __init__(self, factor):
            super().__init__()
            self.factor = factor

        def call(self, x):
            return x * self.factor

    inp = keras.Input((8, 8, 3))
    out = Scale(0.5)(keras.layers.BatchNormalization()(keras.layers.Conv2D(4, 3)(inp)))
    model = tm.randomize_bn(keras.Model(inp, out))
    with caplog.at_level("WARNING", logger="keras_slim.export.fold"):
        report = export_tflite(model, tmp_path / "s.tflite")
    assert "without BatchNormalization folding" in caplog.text and "Scale" in caplog.text
    assert report.folded_batchnorms == 0 and report.max_rel_error < 1e-4


def test_float16_and_dynamic_shrink_weights(models, tmp_path):
    model = models["plain_cnn"]
    fp32 = export_tflite(model, tmp_path / "fp32.tflite")
    fp16 = export_tflite(model, tmp_path / "fp16.tflite", quantize="float16")
    dyn = export_tflite(model, tmp_path / "dyn.tflite", quantize="dynamic")

    assert fp16.quantize == "float16" and "DEQUANTIZE" in fp16.op_histogram
    assert fp16.size_bytes < 0.75 * fp32.size_bytes
    assert dyn.size_bytes < 0.6 * fp32.size_bytes
    for rep in (fp16, dyn):
        assert rep.verified and 0 < rep.max_rel_error < 0.05
        assert rep.inputs[0].dtype == "float32"


def test_int8_with_int8_io_on_two_inputs_two_outputs(models, tmp_path):
    model = models["two_io"]
    x = _inputs(model, 64, seed=2)
    y = np.argmax(_keras_dict(model, x)["logits"], axis=-1)
    report = export_tflite(model, tmp_path / "q.tflite", quantize="int8",
                           representative_data=x, int8_io=True, labelled_data=(x, y),
                           label_output="logits")

    assert {i.name: i.dtype for i in report.inputs} == {"image": "int8", "meta": "int8"}
    assert {o.name for o in report.outputs} == {"logits", "score"}
    assert all(t.scale > 0 and t.zero_point is not None for t in report.inputs + report.outputs)
    assert report.max_rel_error < 0.1
    assert report.keras_accuracy == 1.0  # labels are Keras' own predictions
    assert report.top1_agreement == report.exported_accuracy >= 0.8
    assert "FULLY_CONNECTED" in report.op_histogram


def test_int8_accepts_dataset_and_generator(models, tmp_path):
    model = models["mbv2_se"]
    x = _inputs(model, 16, seed=3)
    ds = tf.data.Dataset.from_tensor_slices((x, np.zeros(16, "int64"))).batch(4)  # (x, y)
    uint8 = export_tflite(model, tmp_path / "u8.tflite", quantize="int8",
                          representative_data=ds, int8_io="uint8")
    assert uint8.inputs[0].dtype == "uint8" and uint8.outputs[0].dtype == "uint8"
    assert uint8.max_rel_error < 0.1

    def samples():
        for i in range(8):
            yield [x[i]]  # the TFLiteConverter convention: a list of unbatched inputs
    floatio = export_tflite(model, tmp_path / "f.tflite", quantize="int8",
                            representative_data=samples)
    assert floatio.inputs[0].dtype == "float32" and floatio.max_rel_error < 0.1
    assert floatio.num_verify_samples == 8


def test_dynamic_batch_axis(models, tmp_path):
    path = tmp_path / "dyn_batch.tflite"
    report = export_tflite(models["resnet_add"], path, batch_size=None)
    assert report.inputs[0].shape == (-1, 16, 16, 3)
    x = _inputs(models["resnet_add"], 3)
    out = Interpreter(model_path=str(path)).get_signature_runner()(image=x)
    assert next(iter(out.values())).shape == (3, 4)


def test_static_batch_larger_than_one_pads_the_last_chunk(models, tmp_path):
    x = _inputs(models["resnet_add"], 3)
    report = export_tflite(models["resnet_add"], tmp_path / "b2.tflite", batch_size=2,
                           sample_inputs=x)
    assert report.inputs[0].shape == (2, 16, 16, 3)
    assert report.num_verify_samples == 3 and report.max_rel_error < 1e-4


def test_report_is_printable_and_serialisable(models, tmp_path):
    report = export_tflite(models["mbv2_se"], tmp_path / "r.tflite")
    text = str(report)
    assert "DEPTHWISE_CONV_2D" in text and "max rel err" in text and "image" in text
    data = json.loads(json.dumps(report.to_dict()))
    assert data["format"] == "tflite" and data["inputs"][0]["shape"] == [1, 16, 16, 3]


@pytest.mark.parametrize("kwargs, match", [
    ({"quantize": "int4"}, "quantize='int4'"),
    ({"quantize": "int8"}, "representative_data"),
    ({"int8_io": True}, "needs quantize='int8'"),
    ({"quantize": "int8", "representative_data": np.zeros((2, 16, 16, 3)), "int8_io": "int16"},
     "int8_io='int16'"),
    ({"batch_size": 0}, "batch_size"),
])
def test_bad_arguments_raise_clear_errors(models, tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        export_tflite(models["mbv2_se"], tmp_path / "bad.tflite", **kwargs)
    _assert_clean_dir(tmp_path, [])


def test_non_model_and_wrong_sample_shape(models, tmp_path):
    with pytest.raises(TypeError, match="keras.Model"):
        export_tflite("model.keras", tmp_path / "x.tflite")
    with pytest.raises(ExportError, match=r"sample_inputs.*\(2, 8, 8, 3\)"):
        export_tflite(models["mbv2_se"], tmp_path / "x.tflite", sample_inputs=np.zeros((2, 8, 8, 3)))
    _assert_clean_dir(tmp_path, [])


def test_failed_verification_leaves_no_file(models, tmp_path):
    path = tmp_path / "strict.tflite"
    x = _inputs(models["mbv2_se"], 16)
    with pytest.raises(ExportError, match="Verification failed"):
        export_tflite(models["mbv2_se"], path, quantize="int8", representative_data=x,
                      tolerance=1e-9)
    _assert_clean_dir(tmp_path, [])


def test_a_dynamic_model_that_fails_verification_is_told_to_give_its_size(tmp_path):
    inp = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inp)
    m = keras.Model(inp, keras.layers.GlobalAveragePooling2D()(x))
    with pytest.raises(ExportError, match="input size is dynamic.*sample_inputs="):
        export_tflite(m, tmp_path / "dyn.tflite", tolerance=1e-12)
    _assert_clean_dir(tmp_path, [])


def test_flex_ops_are_refused_by_name(tmp_path):
    class Det(keras.layers.Layer):
        def call(self, x):
            return tf.linalg.det(tf.reshape(x, (-1, 2, 2)))[:, None]

    inp = keras.Input((4,))
    model = keras.Model(inp, Det(name="det")(inp))
    with pytest.raises(ExportError, match=r"tf\.MatrixDeterminant.*Android"):
        export_tflite(model, tmp_path / "flex.tflite")
    _assert_clean_dir(tmp_path, [])


def test_missing_directory_is_reported_before_converting(models, tmp_path):
    with pytest.raises(ExportError, match="does not exist"):
        export_tflite(models["mbv2_se"], tmp_path / "no" / "such" / "m.tflite")
    _assert_clean_dir(tmp_path, [])


def test_benchmark_tflite_and_compare(models, tmp_path):
    path = tmp_path / "b.tflite"
    export_tflite(models["mbv2_se"], path)
    lat = benchmark_tflite(path, threads=2, runs=5, warmup=1)
    assert lat.runtime == "litert" and lat.threads == 2 and lat.accelerated
    assert 0 < lat.min_ms <= lat.median_ms <= lat.p90_ms
    plain = benchmark_tflite(path, runs=3, warmup=0, use_xnnpack=False)
    assert not plain.accelerated and plain.median_ms > 0
    table = compare_latency([path], threads=(1, 2), runs=3, warmup=1)
    assert len(table.reports) == 2 and "1T median" in str(table)
    with pytest.raises(ValueError, match="threads"):
        benchmark_tflite(path, threads=0)
    with pytest.raises(FileNotFoundError):
        benchmark_tflite(tmp_path / "missing.tflite")


# ---------------------------------------------------------------- XNNPACK partitioning
@pytest.fixture(scope="module")
def pruned_preact():
    import keras_slim
    from keras_slim import testing
    from keras_slim.training.cifar import models as cifar_models

    m = cifar_models.preact_resnet(20, width=0.5)
    testing.randomize_batchnorm(m)
    testing.kill_channels(m, 0.4)
    return keras_slim.prune(m, threshold=1e-12)


def test_selection_exports_as_slices_in_one_xnnpack_partition(pruned_preact, tmp_path):
    r = export_tflite(pruned_preact, tmp_path / "ordered.tflite")
    assert r.verified and r.max_rel_error < 1e-4
    assert "GATHER" not in r.op_histogram and r.op_histogram["STRIDED_SLICE"] > 0
    assert r.xnnpack == {"partitions": 1, "delegated_nodes": sum(r.op_histogram.values()),
                         "cpu_ops": {}, "source": "interpreter"}
    assert "as slices, 0 as GATHER" in r.details["channel_order"]
    text = str(r)
    assert "XNNPACK      1 partition," in text and "selections" in text
    assert json.dumps(r.to_dict())


def test_gathers_are_reported_on_the_cpu(pruned_preact, tmp_path):
    r = export_tflite(pruned_preact, tmp_path / "gather.tflite", order_channels=False)
    assert r.op_histogram.get("GATHER", 0) > 0
    assert r.xnnpack["cpu_ops"] == {"GATHER": r.op_histogram["GATHER"]}
    assert r.xnnpack["partitions"] > 1
    assert f"on the CPU: GATHERx{r.op_histogram['GATHER']}" in str(r)


def test_partitioning_falls_back_to_the_op_histogram(pruned_preact, tmp_path, monkeypatch):
    from keras_slim.export import _litert

    path = tmp_path / "gather.tflite"
    export_tflite(pruned_preact, path, order_channels=False)

    def missing(self):
        raise AttributeError("_get_ops_details")

    monkeypatch.setattr(Interpreter, "_get_ops_details", missing)
    info = _litert.xnnpack_partitions(str(path))
    assert info["source"] == "op histogram" and info["partitions"] is None
    assert set(info["cpu_ops"]) == {"GATHER"}
    from keras_slim.export.report import xnnpack_text
    assert xnnpack_text(info).startswith("partitioning not readable")


def test_plain_model_reports_one_partition(models, tmp_path):
    r = export_tflite(models["resnet_add"], tmp_path / "r.tflite")
    assert r.xnnpack["partitions"] == 1 and r.xnnpack["cpu_ops"] == {}
    assert "channel_order" not in r.details
