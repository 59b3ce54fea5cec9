"""Models with dynamic spatial axes (keras.Input((None, None, 3)), the keras-hub default).

Channel flow never needs spatial sizes; MACs are counted at a reference input
size (224 per spatial axis unless `input_shape=` says otherwise) and exports
keep the axes dynamic (TFLite can fix them with `input_shape=`).
"""
import json

import keras
import numpy as np
import pytest
from keras import layers

import keras_slim
from keras_slim import cli, testing
from keras_slim.export import ExportError


def _conv_bn_relu(x, filters, name, strides=1):
    x = layers.Conv2D(filters, 3, strides=strides, padding="same", name=name)(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def fcn(gap: bool = True, upsample: bool = False) -> keras.Model:
    """conv-BN-relu x2 with a residual Add; GAP + Dense (classifier) or an output map
    (at half the input size, or upsampled back to it)."""
    inp = keras.Input((None, None, 3), name="image")
    x = _conv_bn_relu(inp, 16, "c1", strides=2)
    y = _conv_bn_relu(x, 16, "c2")
    x = layers.Add(name="add")([x, y])
    if gap:
        x = layers.GlobalAveragePooling2D(name="gap")(x)
        out = layers.Dense(5, name="head")(x)
    else:  # segmentation-style: a per-pixel map
        if upsample:
            x = layers.UpSampling2D(name="up")(x)
        out = layers.Conv2D(4, 1, name="head")(x)
    return keras.Model(inp, out, name="fcn_gap" if gap else "fcn_up" if upsample else "fcn_map")


def _dead(model, seed=0):
    """BN statistics randomised and 40% of the channel classes killed (gamma = beta = 0)."""
    testing.randomize_batchnorm(model, seed=seed)
    testing.kill_channels(model, 0.4, seed=seed)
    return model


def _x(h, w, n=2, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, h, w, 3)).astype("float32")


def _conv_macs(p):
    return {r.name: r.macs_before for r in p.layers if r.class_name == "Conv2D"}


@pytest.fixture(params=[(True, False), (False, False), (False, True)], ids=["gap", "map", "up"])
def model(request):
    return _dead(fcn(*request.param))


# ---------------------------------------------------------------- plan / prune
def test_prune_is_exact_and_keeps_the_axes_dynamic(model):
    p = keras_slim.plan(model, 0.4)
    assert p.removed_channels > 0
    small = keras_slim.prune(model, 0.4)
    assert small.count_params() < model.count_params()
    assert tuple(small.inputs[0].shape) == (None, None, None, 3)
    for h, w in [(16, 16), (24, 40)]:  # two sizes, one of them not square
        x = _x(h, w)
        assert testing.max_difference(model, small, x) < 1e-4
        assert small(x).shape == model(x).shape


def test_prune_accepts_a_plan_made_with_input_shape(model):
    p = keras_slim.plan(model, 0.4, input_shape=(32, 32, 3))
    a = keras_slim.prune(model, p)
    b = keras_slim.prune(model, 0.4, input_shape=(32, 32, 3))
    x = _x(20, 28)
    np.testing.assert_allclose(a(x), b(x), atol=1e-6)
    assert testing.max_difference(model, a, x) < 1e-4


def test_macs_scale_with_the_input_size(model):
    p64 = keras_slim.plan(model, 0.4, input_shape=(64, 64, 3))
    p32 = keras_slim.plan(model, 0.4, input_shape=(32, 32, 3))
    big, small = _conv_macs(p64), _conv_macs(p32)
    assert set(big) == ({"c1", "c2"} if model.name == "fcn_gap" else {"c1", "c2", "head"})
    for name in big:  # every conv: exactly 4x the pixels, 4x the MACs
        assert big[name] == 4 * small[name] > 0
    # the stride-2 first conv sees 32x32 outputs at 64x64: 32*32*9*3*16 MACs
    assert big["c1"] == 32 * 32 * 9 * 3 * 16
    if model.name == "fcn_up":  # the head works on the upsampled, full-size map
        assert big["head"] == 64 * 64 * 16 * 4
    if model.name != "fcn_gap":
        assert p64.macs_before == 4 * p32.macs_before
        assert p64.macs_after == 4 * p32.macs_after
    else:  # the Dense after GAP does not depend on the size
        dense = [r.macs_before for r in p64.layers if r.class_name == "Dense"]
        assert dense == [16 * 5]
        assert p64.macs_before - dense[0] == 4 * (p32.macs_before - dense[0])
    assert p64.macs_after < p64.macs_before


def test_default_is_224_and_the_plan_says_so(model):
    p = keras_slim.plan(model, 0.4)
    assert p.input_shapes == [(224, 224, 3)] and p.dynamic_input
    assert p.macs_before == keras_slim.plan(model, 0.4, input_shape=(224, 224, 3)).macs_before
    assert _conv_macs(p)["c1"] == 112 * 112 * 9 * 3 * 16
    assert "MACs at input (224, 224, 3) (reference size for dynamic axes)" in p.summary()
    assert "MACs at input (224, 224, 3)" in str(p)
    assert not p.macs_uncounted


def test_static_model_reports_its_own_size_without_the_note():
    inp = keras.Input((32, 32, 3))
    x = _conv_bn_relu(inp, 8, "c1")
    m = keras.Model(inp, layers.Dense(3)(layers.GlobalAveragePooling2D()(x)))
    testing.randomize_batchnorm(m)
    p = keras_slim.plan(m, 0.25)
    assert p.input_shapes == [(32, 32, 3)] and not p.dynamic_input
    assert "MACs at input (32, 32, 3)" in p.summary()
    assert "reference size" not in p.summary()
    same = keras_slim.plan(m, 0.25, input_shape=(32, 32, 3))  # agreeing with the model is fine
    assert same.macs_before == p.macs_before and not same.dynamic_input
    with pytest.raises(ValueError, match=r"axis 1 is 32 in the model but 64 in input_shape"):
        keras_slim.plan(m, 0.25, input_shape=(64, 64, 3))


@pytest.mark.parametrize("bad, message", [
    ((64, 64, 4), r"input_shape \(64, 64, 4\) does not fit input 'image' of model 'fcn_gap', "
                  r"whose shape is \(None, None, None, 3\): axis 3 is 3 in the model but 4"),
    ((64, 64), r"has 2 axes but input 'image' .* has 3 without the batch axis"),
    ((1, 64, 64, 3), r"leave out the batch axis\)\. Give e\.g\. \(64, 64, 3\)"),
    ((64.0, 64, 3), r"every size a positive int; got \(64\.0, 64, 3\)"),
    ((0, 64, 3), r"every size a positive int"),
    ([(64, 64, 3), (8,)], r"got 2 shape\(s\) for the 1 input\(s\) \['image'\]"),
    ("224", r"input_shape is a shape without the batch axis, e\.g\. \(224, 224, 3\)"),
])
def test_bad_input_shape_is_a_clear_value_error(bad, message):
    m = fcn(True)
    with pytest.raises(ValueError, match=message):
        keras_slim.plan(m, 0.4, input_shape=bad)
    with pytest.raises(ValueError, match=message):
        keras_slim.prune(m, 0.4, input_shape=bad)


def test_plan_json_round_trip_keeps_the_size(model, tmp_path):
    p = keras_slim.plan(model, 0.4, input_shape=(48, 48, 3))
    q = keras_slim.Plan.from_json(p.to_json(str(tmp_path / "plan.json")))
    assert q.input_shapes == [(48, 48, 3)] and q.dynamic_input
    assert json.loads(p.to_json())["input_shapes"] == [[48, 48, 3]]
    assert q.summary() == p.summary()
    small = keras_slim.prune(model, keras_slim.Plan.from_json(str(tmp_path / "plan.json")))
    assert testing.max_difference(model, small, _x(16, 24)) < 1e-4


def test_plans_saved_without_the_size_still_load(model):
    d = keras_slim.plan(model, 0.4).to_dict()
    for key in ("input_shapes", "dynamic_input", "macs_uncounted"):
        del d[key]
    d["options"].pop("input_shape")
    old = keras_slim.Plan.from_dict(d)
    assert old.input_shapes is None and "MACs at" not in old.summary()
    small = keras_slim.prune(model, old)
    assert testing.max_difference(model, small, _x(16, 16)) < 1e-4


def test_several_inputs_take_a_list_of_shapes():
    a, b = keras.Input((None, None, 3), name="a"), keras.Input((None, None, 3), name="b")
    x = layers.Concatenate()([_conv_bn_relu(a, 8, "ca"), _conv_bn_relu(b, 8, "cb")])
    m = keras.Model([a, b], layers.Dense(2)(layers.GlobalAveragePooling2D()(x)))
    testing.randomize_batchnorm(m)
    p = keras_slim.plan(m, 0.25, input_shape=[(32, 32, 3), (16, 16, 3)])
    assert p.input_shapes == [(32, 32, 3), (16, 16, 3)]
    assert _conv_macs(p) == {"ca": 32 * 32 * 27 * 8, "cb": 16 * 16 * 27 * 8}
    assert "MACs at inputs (32, 32, 3), (16, 16, 3)" in p.summary()
    with pytest.raises(ValueError, match=r"model .* has 2 inputs \['a', 'b'\]"):
        keras_slim.plan(m, 0.25, input_shape=(32, 32, 3))


def test_a_layer_whose_shape_cannot_be_computed_counts_zero_and_is_named(monkeypatch):
    m = _dead(fcn(True))
    full = keras_slim.plan(m, 0.4)

    def fails(*args, **kwargs):
        raise RuntimeError("output spec unavailable")

    monkeypatch.setattr(m.get_layer("c2"), "compute_output_spec", fails)
    p = keras_slim.plan(m, 0.4)
    assert p.macs_uncounted == ["c2"]
    assert p.macs_before == full.macs_before - _conv_macs(full)["c2"]
    assert "counted as 0): c2" in p.summary()
    assert p.kept == full.kept  # the channels removed do not depend on it


# ---------------------------------------------------------------- command line
@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "fcn.keras"
    _dead(fcn(False, upsample=True)).save(path)
    return path


def test_cli_inspect_on_a_dynamic_model(saved, capsys):
    code = cli.main(["inspect", str(saved), "--ratios", "0.4", "-q"])
    out = capsys.readouterr().out
    assert code == 0
    assert "MACs at input (224, 224, 3) (reference size for dynamic axes" in out

    out_json = saved.parent / "inspect.json"
    code = cli.main(["inspect", str(saved), "--ratios", "0.4", "--input-shape", "64,64,3",
                     "--json", str(out_json), "-q"])
    out = capsys.readouterr().out
    assert code == 0 and "MACs at input (64, 64, 3)" in out
    data = json.loads(out_json.read_text())
    assert data["input_shapes"] == [[64, 64, 3]] and data["dynamic_input"] is True
    assert data["macs"] == keras_slim.plan(keras.models.load_model(saved), 0.0,
                                           input_shape=(64, 64, 3)).macs_before


def test_cli_prune_prints_the_size(saved, capsys):
    out_path = saved.parent / "small.keras"
    code = cli.main(["prune", str(saved), "--ratio", "0.4", "--input-shape", "32,32,3",
                     "-o", str(out_path), "-q"])
    assert code == 0 and out_path.exists()
    assert "MACs at input (32, 32, 3) (reference size for dynamic axes)" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--input-shape", "64,64,4"], "--input-shape: input_shape (64, 64, 4) does not fit input"),
    (["--input-shape", "64,x,3"], "expected an input size without the batch axis"),
])
def test_cli_bad_input_shape_is_a_usage_error(saved, capsys, args, message):
    code = cli.main(["inspect", str(saved), "-q"] + args)
    assert code == cli.EXIT_USAGE
    assert message in capsys.readouterr().err


# ---------------------------------------------------------------- export
@pytest.fixture(scope="module")
def pruned_map():
    """Pruned, with an output map at half the input size."""
    keras.utils.set_random_seed(0)
    return keras_slim.prune(_dead(fcn(False), seed=1), 0.4)


@pytest.fixture(scope="module")
def pruned_up():
    """Pruned, with an upsampled output map at the input size."""
    keras.utils.set_random_seed(0)
    return keras_slim.prune(_dead(fcn(False, upsample=True), seed=1), 0.4)


def test_export_onnx_keeps_the_axes_dynamic(pruned_up, tmp_path):
    pytest.importorskip("tf2onnx")
    ort = pytest.importorskip("onnxruntime")
    path = tmp_path / "fcn.onnx"
    report = keras_slim.export.export_onnx(pruned_up, path)
    assert report.verified and report.max_rel_error < 1e-4
    assert report.input_size == "dynamic"
    assert report.verified_shapes == [[(224, 224, 3)], [(160, 160, 3)]]
    assert report.inputs[0].shape == (1, -1, -1, 3)
    assert "input size   dynamic" in str(report) and "at 224x224x3, 2 at 160x160x3" in str(report)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for h, w in [(24, 40), (64, 48)]:  # independent run at sizes never verified
        x = _x(h, w, n=1, seed=h)
        out = session.run(None, {"image": x})[0]
        assert out.shape == (1, h, w, 4)
        np.testing.assert_allclose(out, pruned_up(x), atol=1e-4)


def test_export_tflite_dynamic_and_fixed(pruned_map, tmp_path):
    pytest.importorskip("ai_edge_litert")
    from ai_edge_litert.interpreter import Interpreter

    path = tmp_path / "fcn.tflite"
    report = keras_slim.export_tflite(pruned_map, path)
    assert report.verified and report.max_rel_error < 1e-4
    assert report.input_size == "dynamic" and report.inputs[0].shape == (1, -1, -1, 3)
    assert report.verified_shapes == [[(224, 224, 3)], [(160, 160, 3)]]
    assert "input size   dynamic" in str(report)
    interp = Interpreter(model_path=str(path))  # resize at run time, as an app would
    x = _x(24, 40, n=1)
    index = interp.get_input_details()[0]["index"]
    interp.resize_tensor_input(index, x.shape)
    interp.allocate_tensors()
    interp.set_tensor(index, x)
    interp.invoke()
    out = interp.get_tensor(interp.get_output_details()[0]["index"])
    assert out.shape == (1, 12, 20, 4)
    np.testing.assert_allclose(out, pruned_map(x), atol=1e-4)


def test_export_tflite_at_a_fixed_size_where_dynamic_cannot_convert(pruned_up, tmp_path):
    pytest.importorskip("ai_edge_litert")
    dynamic = tmp_path / "up.tflite"
    with pytest.raises(ExportError, match=r"(?s)tf\.Conv2D.*dynamic axes \(\(None, None, None, 3\)\)"
                                          r".*export_tflite\(\.\.\., input_shape=\(224, 224, 3\)\)"):
        keras_slim.export_tflite(pruned_up, dynamic)
    assert not dynamic.exists()

    fixed = keras_slim.export_tflite(pruned_up, tmp_path / "fixed.tflite", input_shape=(64, 48, 3))
    assert fixed.input_size == "fixed" and fixed.inputs[0].shape == (1, 64, 48, 3)
    assert fixed.outputs[0].shape == (1, 64, 48, 4)
    assert fixed.verified_shapes == [[(64, 48, 3)]] and fixed.max_rel_error < 1e-4
    assert "fixed by input_shape=" in str(fixed)

    bad = tmp_path / "bad.tflite"
    with pytest.raises(ValueError, match=r"axis 3 is 3 in the model but 1 in input_shape"):
        keras_slim.export_tflite(pruned_up, bad, input_shape=(64, 64, 1))
    assert not bad.exists()


def test_export_tflite_int8_calibrates_at_the_data_size(pruned_map, tmp_path):
    pytest.importorskip("ai_edge_litert")
    calib = _x(32, 32, n=32, seed=5)
    report = keras_slim.export_tflite(pruned_map, tmp_path / "int8.tflite", quantize="int8",
                                      representative_data=calib)
    assert report.input_size == "dynamic" and report.inputs[0].shape == (1, -1, -1, 3)
    assert report.verified_shapes == [[(32, 32, 3)], [(160, 160, 3)]]  # calibration size first
    assert report.max_rel_error < 0.1
