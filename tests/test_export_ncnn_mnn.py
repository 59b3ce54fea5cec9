"""ncnn (through pnnx) and MNN export: round trips, fp16, failures, latency.

Each test model is converted once per format (module fixtures). The written
files are then run again here, in ncnn's and MNN's own Python APIs as an app
would feed them (channels-first; ncnn without a batch axis, blob in0), on
inputs the exporter never saw, and compared with Keras.
"""
import os
import signal

import keras
import numpy as np
import pytest

from keras_slim import ArgumentError, MissingDependencyError
from keras_slim.export import ExportError, compare_latency, export_mnn, export_ncnn
from keras_slim.export import _mobile, _onnx_fixes
from keras_slim.export import _testmodels as tm
from keras_slim.export import mnn as mnn_export
from keras_slim.export import ncnn as ncnn_export

pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")
ncnn = pytest.importorskip("ncnn")
pytest.importorskip("MNN")
try:
    _mobile.pnnx_executable()
except MissingDependencyError:  # in CI (strict extras) this import fails the run instead
    pytest.importorskip("pnnx", reason="pnnx (ONNX -> ncnn converter) is not installed: "
                                       "pip install --no-deps pnnx")

BUILDERS = {"plain_cnn": tm.plain_cnn, "resnet_add": tm.resnet_add, "mbv2_se": tm.mbv2_se}


@pytest.fixture(scope="module")
def models():
    return {name: tm.randomize_bn(build(), seed=20 + i)
            for i, (name, build) in enumerate(BUILDERS.items())}


@pytest.fixture(scope="module")
def ncnn_files(models, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ncnn") / "out"  # created by the first export
    return folder, {name: export_ncnn(m, folder) for name, m in models.items()}


@pytest.fixture(scope="module")
def mnn_files(models, tmp_path_factory):
    folder = tmp_path_factory.mktemp("mnn")
    return {name: (folder / f"{name}.mnn", export_mnn(m, folder / f"{name}.mnn"))
            for name, m in models.items()}


def _fresh(n=3, seed=7):
    return np.random.default_rng(seed).uniform(0, 1, (n, 16, 16, 3)).astype("float32")


def _rel(out, ref):
    return float(np.abs(out - ref).max() / max(1.0, np.abs(ref).max()))


def _ncnn_run(param, weights, x):
    """What an app does: fp16 options off, one CHW Mat per image into in0, out0 back."""
    net = ncnn.Net()
    net.opt.use_fp16_storage = net.opt.use_fp16_packed = net.opt.use_fp16_arithmetic = False
    assert net.load_param(str(param)) == 0 and net.load_model(str(weights)) == 0
    outs = []
    for image in x:
        chw = np.ascontiguousarray(image.transpose(2, 0, 1))  # kept alive: Mat borrows it
        ex = net.create_extractor()
        ex.input("in0", ncnn.Mat(chw))
        ret, mat = ex.extract("out0")
        assert ret == 0
        outs.append(np.array(mat))
    return np.stack(outs)


def _mnn_run(path, x):
    import MNN.expr as F
    import MNN.nn as nn

    net = nn.load_module_from_file(str(path), [], [])
    outs = []
    for image in x:
        nchw = np.ascontiguousarray(image.transpose(2, 0, 1)[None])
        (out,) = net.forward([F.const(nchw, list(nchw.shape), F.NCHW)])
        outs.append(np.array(out.read()))
    return np.concatenate(outs)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_ncnn_round_trip_matches_keras(models, ncnn_files, name):
    folder, reports = ncnn_files
    report = reports[name]
    param, weights = folder / f"{name}.ncnn.param", folder / f"{name}.ncnn.bin"
    assert report.path == str(param) and report.details["bin"] == str(weights)
    assert report.format == "ncnn" and report.verified and report.max_rel_error < 1e-4
    assert report.size_bytes == param.stat().st_size + weights.stat().st_size
    assert sorted(report.details["blobs"]) == ["in0", "out0"]
    assert report.details["blobs"]["in0"] == "image"
    assert [i.shape for i in report.inputs] == [(3, 16, 16)]
    assert "0=16 1=16 2=3" in param.read_text()  # the Input layer documents its shape
    # the exporter's ONNX step, its temp files and pnnx's side files are gone
    assert sorted(os.listdir(folder)) == sorted(f"{n}.ncnn.{e}" for n in reports
                                                for e in ("param", "bin"))
    x = _fresh()
    ref = keras.ops.convert_to_numpy(models[name](x))
    assert _rel(_ncnn_run(param, weights, x), ref) < 1e-4
    # ncnn's default options (fp16 storage) are measured too, and cost precision
    default = report.details["ncnn_default_options"]["max_rel_error"]
    assert report.max_rel_error <= default < 1e-2
    text = str(report)  # what the CLI prints: the blob names an app needs, both errors
    assert "in0 = image" in text and f"max rel err {default:.3g} with fp16" in text


@pytest.mark.parametrize("name", list(BUILDERS))
def test_mnn_round_trip_matches_keras(models, mnn_files, name):
    path, report = mnn_files[name]
    assert report.format == "mnn" and report.verified and report.max_rel_error < 1e-4
    assert report.size_bytes == path.stat().st_size
    assert [i.shape for i in report.inputs] == [(1, 3, 16, 16)]
    assert report.details["precision"] == "high"
    x = _fresh()
    ref = keras.ops.convert_to_numpy(models[name](x))
    assert _rel(_mnn_run(path, x), ref) < 1e-4


def test_channel_gather_is_split_for_ncnn(models, ncnn_files, tmp_path, monkeypatch):
    """pnnx turns a Gather of an index vector into a one-index Crop; the split is needed."""
    report = ncnn_files[1]["plain_cnn"]
    assert report.details["gathers_split"] == 1 and report.details["onnx_ops"]["Gather"] == 1
    assert report.op_histogram["Crop"] == 16  # indices 0, 2, ..., 30: 16 runs of one channel
    monkeypatch.setattr(_onnx_fixes, "split_gathers", lambda proto: 0)
    with pytest.raises(ExportError, match="ncnn"):
        export_ncnn(models["plain_cnn"], tmp_path / "raw")
    assert not (tmp_path / "raw").exists()  # the folder it created is removed again


def test_float16_and_int8_weights_report_their_error(models, ncnn_files, mnn_files, tmp_path):
    model = models["resnet_add"]
    fp32_ncnn, fp32_mnn = ncnn_files[1]["resnet_add"], mnn_files["resnet_add"][1]
    half = export_ncnn(model, tmp_path, quantize="float16")
    assert half.quantize == "float16" and half.details["weights"] == "float16"
    assert half.details["runtime_options"] == "ncnn defaults"
    assert os.path.getsize(half.details["bin"]) < 0.6 * os.path.getsize(fp32_ncnn.details["bin"])
    for q in ("float16", "dynamic"):
        r = export_mnn(model, tmp_path / f"{q}.mnn", quantize=q)
        assert r.quantize == q and r.size_bytes < 0.7 * fp32_mnn.size_bytes
        assert r.details["precision"] == mnn_export.PRECISION[q]
        assert fp32_mnn.max_rel_error < r.max_rel_error < 1e-2
    assert fp32_ncnn.max_rel_error < half.max_rel_error < 1e-2


def test_mismatch_fails_loudly_and_writes_nothing(models, tmp_path, monkeypatch):
    model = models["resnet_add"]
    (tmp_path / "keep").mkdir()
    old = tmp_path / "keep" / "resnet_add.ncnn.param"
    old.write_text("old")
    convert = ncnn_export._convert

    def scaled_weights(*args):  # fp32 blobs * 1.5; their zero tags stay 0
        param, weights, ignored = convert(*args)
        return param, (np.frombuffer(weights, np.float32) * 1.5).tobytes(), ignored

    monkeypatch.setattr(ncnn_export, "_convert", scaled_weights)
    with pytest.raises(ExportError, match="Verification failed: the ncnn output differs"):
        export_ncnn(model, tmp_path / "keep")
    assert os.listdir(tmp_path / "keep") == ["resnet_add.ncnn.param"] and old.read_text() == "old"
    path = tmp_path / "m.mnn"
    with pytest.raises(ExportError, match="Verification failed: the .mnn output differs"):
        export_mnn(model, path, tolerance=1e-12)
    assert os.listdir(tmp_path) == ["keep"]


class _CumSum(keras.layers.Layer):
    def call(self, x):
        return keras.ops.cumsum(x, axis=-1)


def test_unsupported_ops_are_named(models, tmp_path, monkeypatch):
    inp = keras.Input((8, 8, 3), name="image")
    model = keras.Model(inp, _CumSum()(keras.layers.Conv2D(4, 3, padding="same")(inp)))
    with pytest.raises(ExportError, match="ncnn has no layer 'CumSum'"):
        export_ncnn(model, tmp_path / "a")
    assert "Conv" in mnn_export.supported_onnx_ops()
    monkeypatch.setattr(mnn_export, "supported_onnx_ops", lambda: frozenset({"Relu"}))
    with pytest.raises(ExportError, match="cannot convert the ONNX op.*Conv"):
        export_mnn(models["mbv2_se"], tmp_path / "c.mnn")
    assert os.listdir(tmp_path) == []


def test_crashes_become_export_errors(models, ncnn_files, tmp_path, monkeypatch):
    """A converter or runtime that dies (pnnx segfaults on TopK today) is an ExportError."""
    crash = tmp_path / "crash.sh"
    crash.write_text("#!/bin/sh\necho converting\nkill -SEGV $$\n")
    crash.chmod(0o755)
    monkeypatch.setattr(_mobile, "pnnx_executable", lambda: str(crash))
    crashed = r"(?s)pnnx crashed \(SIGSEGV\) converting.*output:\nconverting"
    with pytest.raises(ExportError, match=crashed):
        export_ncnn(models["resnet_add"], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    report = ncnn_files[1]["resnet_add"]
    runner = ncnn_export._runner(report.path, report.details["bin"], _iface(models),
                                 [(1, 4)], False, None)
    runner.process._proc.kill()
    with pytest.raises(ExportError, match=r"ncnn crashed \(SIGKILL\) while asked to run"):
        runner([_fresh(1)])
    # a runtime that hangs instead (here: stopped) is killed after its timeout
    runner = ncnn_export._runner(report.path, report.details["bin"], _iface(models),
                                 [(1, 4)], False, None)
    runner.process.timeout_s = 0.5
    os.kill(runner.process._proc.pid, signal.SIGSTOP)
    with pytest.raises(ExportError, match=r"ncnn did not answer within 0.5 s while asked to run"):
        runner([_fresh(1)])


def _iface(models):
    from keras_slim.export._model_io import describe_model

    return describe_model(models["resnet_add"])


def test_bad_arguments_name_what_is_allowed(models, tmp_path):
    with pytest.raises(ArgumentError, match="ncnn2table"):
        export_ncnn(models["resnet_add"], tmp_path, quantize="int8")
    with pytest.raises(ArgumentError, match="mnnquant"):
        export_mnn(models["resnet_add"], tmp_path / "m.mnn", quantize="int8")
    with pytest.raises(ArgumentError, match="name must be a non-empty str"):
        export_ncnn(models["resnet_add"], tmp_path, name="")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="is a file"):
        export_ncnn(models["resnet_add"], tmp_path / "file")


def test_dynamic_sizes_and_zero_padding(tmp_path):
    """None spatial axes verified at two sizes; MobileNetV2's ZeroPadding2D before a
    stride-2 depthwise conv (an ONNX Pad, which pnnx leaves unconverted) folded into it."""
    inp = keras.Input((None, None, 3), name="image")
    x = keras.layers.Conv2D(6, 3, padding="same", use_bias=False)(inp)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    x = keras.layers.ZeroPadding2D(((0, 1), (0, 1)))(x)
    x = keras.layers.DepthwiseConv2D(3, strides=2)(x)
    model = tm.randomize_bn(keras.Model(inp, keras.layers.Conv2D(5, 1)(x)))
    x = _fresh(2)[:, :12]  # 12x16, then (as every dynamic export) 160x160
    ncnn_report = export_ncnn(model, tmp_path, sample_inputs=x)
    assert ncnn_report.details["pads_folded"] == 1 and "Pad" not in ncnn_report.op_histogram
    for report in (ncnn_report, export_mnn(model, tmp_path / "d.mnn", sample_inputs=x)):
        assert report.input_size == "dynamic" and report.max_rel_error < 1e-4
        assert [s[0] for s in report.verified_shapes] == [(12, 16, 3), (160, 160, 3)]


def _padded_pool(act):
    """keras.applications ResNet-50's stem: conv, BN, `act`, ZeroPadding2D(1), MaxPool 3/2."""
    inp = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(6, 3, strides=2, padding="same", use_bias=False)(inp)
    x = keras.layers.BatchNormalization()(x)
    x = x if act is None else keras.layers.Activation(act)(x)
    x = keras.layers.MaxPooling2D(3, strides=2)(keras.layers.ZeroPadding2D(1)(x))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 1)(x))
    return tm.randomize_bn(keras.Model(inp, keras.layers.Dense(5)(x)), seed=3)


@pytest.mark.parametrize("act", ["relu", "relu6"])
def test_zero_pad_before_a_max_pool_of_nonnegative_values_is_folded(tmp_path, act):
    """Max over zero padding = max over MaxPool's -inf padding where values are >= 0."""
    model = _padded_pool(act)
    report = export_ncnn(model, tmp_path)
    assert report.details["pads_folded"] == 1 and "Pad" not in report.op_histogram
    assert report.max_rel_error < 1e-4
    x = _fresh()
    out = _ncnn_run(tmp_path / f"{model.name}.ncnn.param", tmp_path / f"{model.name}.ncnn.bin", x)
    assert _rel(out, keras.ops.convert_to_numpy(model(x))) < 1e-4


def test_zero_pad_before_a_max_pool_of_signed_values_stays(tmp_path):
    """Without a Relu before it the pad is not -inf's equal: it stays, and ncnn's missing
    Pad layer is the export's error."""
    model = _padded_pool(None)
    with pytest.raises(ExportError, match="ncnn has no layer 'Pad'"):
        export_ncnn(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_compare_latency_covers_ncnn_and_mnn(ncnn_files, mnn_files):
    param = ncnn_files[1]["mbv2_se"].path
    table = compare_latency([param, mnn_files["mbv2_se"][0]], threads=(1, 2), runs=2,
                            warmup=1)
    got = {(r.runtime, r.threads) for r in table.reports}
    assert got == {("ncnn", 1), ("ncnn", 2), ("mnn", 1), ("mnn", 2)}
    assert all(r.median_ms > 0 and r.runs == 2 and r.accelerated for r in table.reports)
    assert "ncnn" in str(table) and "mnn" in str(table)
