"""ONNX export: round trips in onnxruntime, NCHW input, BN folding, atomicity."""
import os

import keras
import numpy as np
import pytest

from keras_slim.export import ExportError, benchmark_onnx, compare_latency, export_onnx
from keras_slim.export import onnx as onnx_export
from keras_slim.export import _testmodels as tm

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")

BUILDERS = {"plain_cnn": tm.plain_cnn, "resnet_add": tm.resnet_add, "mbv2_se": tm.mbv2_se,
            "two_io": tm.two_io}


@pytest.fixture(scope="module")
def models():
    return {name: tm.randomize_bn(build(), seed=10 + i)
            for i, (name, build) in enumerate(BUILDERS.items())}


def _inputs(model, n, seed=1):
    rng = np.random.default_rng(seed)
    x = {"image": rng.uniform(0, 1, (n, 16, 16, 3)).astype("float32")}
    if model.name == "two_io":
        x["meta"] = rng.normal(size=(n, 5)).astype("float32")
    return x


def _keras_dict(model, x):
    out = model(x if model.name == "two_io" else x["image"], training=False)
    if isinstance(out, dict):
        return {k: keras.ops.convert_to_numpy(v) for k, v in out.items()}
    return {model.layers[-1].name: keras.ops.convert_to_numpy(out)}


def _run_ort(path, feeds, nchw=False):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    if nchw:
        feeds = {k: v.transpose(0, 3, 1, 2) if v.ndim == 4 else v for k, v in feeds.items()}
    n = len(next(iter(feeds.values())))
    names = [o.name for o in session.get_outputs()]
    rows = [session.run(None, {k: v[i:i + 1] for k, v in feeds.items()}) for i in range(n)]
    return {name: np.concatenate([r[j] for r in rows]) for j, name in enumerate(names)}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_onnx_round_trip_matches_keras(models, name, tmp_path):
    model = models[name]
    path = tmp_path / f"{name}.onnx"
    report = export_onnx(model, path)

    assert report.format == "onnx" and report.details["opset"] == 17
    assert report.verified and report.max_rel_error < 1e-4
    assert report.size_bytes == path.stat().st_size
    assert "BatchNormalization" not in report.op_histogram and "Conv" in report.op_histogram
    x = _inputs(model, 3)
    got, want = _run_ort(path, x), _keras_dict(model, x)
    assert sorted(got) == sorted(want)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-4)
    assert os.listdir(tmp_path) == [path.name]


def test_nchw_input_for_channels_first_runtimes(models, tmp_path):
    model = models["two_io"]
    path = tmp_path / "nchw.onnx"
    report = export_onnx(model, path, nchw_input=True, opset=13)
    shapes = {i.name: i.shape for i in report.inputs}
    assert shapes == {"image": (1, 3, 16, 16), "meta": (1, 5)}
    x = _inputs(model, 2)
    got, want = _run_ort(path, x, nchw=True), _keras_dict(model, x)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-4)


def test_depthwise_bn_is_folded_before_tf2onnx(models, tmp_path):
    folded = export_onnx(models["mbv2_se"], tmp_path / "f.onnx")
    unfolded = export_onnx(models["mbv2_se"], tmp_path / "u.onnx", fold_bn=False)
    assert folded.folded_batchnorms == 4 and unfolded.folded_batchnorms == 0
    # tf2onnx leaves the depthwise conv's BN as a Mul + Add pair when it is not folded
    assert unfolded.op_histogram["Mul"] == folded.op_histogram.get("Mul", 0) + 1
    assert unfolded.op_histogram["Add"] == folded.op_histogram.get("Add", 0) + 1
    assert unfolded.max_rel_error < 1e-4


def test_dynamic_batch_and_labelled_data(models, tmp_path):
    model = models["resnet_add"]
    x = _inputs(model, 20)
    y = np.argmax(next(iter(_keras_dict(model, x).values())), axis=-1)  # Keras' own labels
    report = export_onnx(model, tmp_path / "d.onnx", batch_size=None, labelled_data=(x, y))
    assert report.inputs[0].shape == (-1, 16, 16, 3)
    assert report.top1_agreement == report.keras_accuracy == report.exported_accuracy == 1.0


def test_failed_verification_leaves_no_file(models, tmp_path, monkeypatch):
    real_call = onnx_export._OrtRunner.__call__
    monkeypatch.setattr(onnx_export._OrtRunner, "__call__",
                        lambda self, flat: [o + 1.0 for o in real_call(self, flat)])
    with pytest.raises(ExportError, match="Verification failed"):
        export_onnx(models["mbv2_se"], tmp_path / "m.onnx")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("opset", [9, 99, "17"])
def test_bad_opset(models, tmp_path, opset):
    with pytest.raises(ValueError, match="opset"):
        export_onnx(models["mbv2_se"], tmp_path / "m.onnx", opset=opset)
    assert os.listdir(tmp_path) == []


def test_missing_extra_names_the_pip_extra(models, tmp_path, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # makes `import tf2onnx` fail
    with pytest.raises(ImportError, match=r"keras-slim\[export\]"):
        export_onnx(models["mbv2_se"], tmp_path / "m.onnx")


def test_non_model_raises_type_error(tmp_path):
    with pytest.raises(TypeError, match="keras.Model"):
        export_onnx(object(), tmp_path / "m.onnx")


def test_benchmark_onnx(models, tmp_path):
    path = tmp_path / "b.onnx"
    export_onnx(models["plain_cnn"], path, batch_size=None)
    lat = benchmark_onnx(path, threads=1, runs=5, warmup=1)
    assert lat.runtime == "onnxruntime" and lat.threads == 1
    assert 0 < lat.min_ms <= lat.median_ms <= lat.p90_ms
    table = compare_latency([path], threads=(1,), runs=3, warmup=0)
    assert table.reports[0].runtime == "onnxruntime" and "b.onnx" in str(table)
    with pytest.raises(ValueError, match=r"expected a .tflite, .onnx, .param \(ncnn"):
        compare_latency([tmp_path / "m.pb"])


def test_selection_exports_as_slices_not_gather(tmp_path):
    """export_onnx orders channels like export_tflite: no Gather, same function."""
    import keras_slim
    from keras_slim import testing
    from keras_slim.training.cifar import models as cifar_models

    m = cifar_models.preact_resnet(20, width=0.5)
    testing.randomize_batchnorm(m)
    testing.kill_channels(m, 0.4)
    pruned = keras_slim.prune(m, threshold=1e-12)
    assert any(type(l).__name__ == "ChannelSelection" for l in pruned.layers)
    ordered = export_onnx(pruned, tmp_path / "ordered.onnx")
    assert ordered.verified and ordered.max_rel_error < 1e-4
    assert "Gather" not in ordered.op_histogram and ordered.op_histogram.get("Slice", 0) > 0
    assert "as slices, 0 as GATHER" in ordered.details["channel_order"]
    plain = export_onnx(pruned, tmp_path / "gather.onnx", order_channels=False)
    assert plain.verified and plain.op_histogram.get("Gather", 0) > 0
    assert "channel_order" not in plain.details


def test_outputs_keep_the_model_order_whatever_their_names(tmp_path):
    """The serving dict comes back sorted by name; the file lists the outputs in model order."""
    i = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(i)
    m = keras.Model(i, [keras.layers.Dense(2, name="zz_head")(keras.layers.Flatten()(x)),
                        keras.layers.Conv2D(2, 1, name="aa_map")(x)])
    path = tmp_path / "order.onnx"
    report = export_onnx(m, path)
    assert report.max_rel_error < 1e-4
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["zz_head", "aa_map"]
    x = np.random.default_rng(0).normal(size=(1, 8, 8, 3)).astype("float32")
    got = sess.run(None, {sess.get_inputs()[0].name: x})  # by position, as apps read them
    for a, b in zip(got, m(x)):
        np.testing.assert_allclose(a, np.asarray(b), rtol=1e-4, atol=1e-5)


def test_exported_files_get_the_mode_open_would_give(tmp_path):
    """Written through a 0600 temp file, the result still follows the umask (as open() does)."""
    from keras_slim.export._atomic import atomic_file

    old = os.umask(0o022)
    try:
        with atomic_file(str(tmp_path / "a.bin")) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"x")
        with open(tmp_path / "b.bin", "wb") as f:
            f.write(b"x")
    finally:
        os.umask(old)
    mode = lambda name: os.stat(tmp_path / name).st_mode & 0o777  # noqa: E731
    assert mode("a.bin") == mode("b.bin") == 0o644
