"""The LiteRT latency model (keras_slim.export.latency_model) behind plan(target_latency_ms=...)."""
import json
import os
import warnings

import keras
import numpy as np
import pytest

import keras_slim
from keras_slim.export import _latency_probes as probes
from keras_slim.export import _latency_graph as graph_
from keras_slim.export import latency_check
from keras_slim.export import latency_model as lat

pytest.importorskip("ai_edge_litert")


def _model():
    x = inp = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(32, 3, padding="same", use_bias=False, name="c1")(x)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn1")(x))
    x = keras.layers.Conv2D(48, 3, strides=2, padding="same", activation="relu", name="c2")(x)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(x)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn2")(x))
    x = keras.layers.SeparableConv2D(32, 3, padding="same", activation="relu6", name="sep")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    out = keras.layers.Dense(4, name="head")(keras.layers.Dense(12, name="fc")(x))
    m = keras.Model(inp, out, name="latency_net")
    keras_slim.testing.randomize_batchnorm(m, seed=2)
    return m


def _reachable_ms(m, lm):
    """A target between the full model's estimate and that with every prunable channel cut."""
    full = lm.estimate(keras_slim.plan(m, 0.0).layers)
    with warnings.catch_warnings():  # every layer cut to its last channel: warned about
        warnings.simplefilter("ignore")
        least = lm.estimate(keras_slim.plan(m, threshold=1e30).layers)
    return max((full + least) / 2, least * 1.001)


def test_fit_recovers_the_coefficients_and_never_grows_when_narrower():
    curve = probes.WidthCurve([8, 16, 24, 32], [1.0, 1.0, 2.0, 1.5])
    assert [curve(w) for w in (1, 8, 9, 16, 17, 32)] == [1.0, 1.0, 1.0, 1.0, 2.0, 1.5]
    assert curve(64) == pytest.approx(3.0)  # beyond the last width: proportional
    truth = (0.01, 0.002, 0.03, 0.004)
    points = [[i, o, truth[0] + truth[1] * i + (truth[2] + truth[3] * i) * curve(o)]
              for i in (4, 8, 16) for o in (8, 16, 24, 32)]
    np.testing.assert_allclose(lat.fit(points, curve), truth, rtol=1e-6, atol=1e-9)
    noisy = [[i, o, 1.0 - 0.01 * i] for i in (1, 2, 3) for o in (8, 16)]  # faster when wider
    coef = lat.fit(noisy)
    assert min(coef[1:]) >= 0.0 and coef[0] == pytest.approx(0.98)


def test_probe_files_are_the_layers_litert_runs():
    from ai_edge_litert.interpreter import Interpreter

    m = _model()
    calls, _, unmodelled, shapes = lat._read(m, None)
    kinds = {name: (spec.kind, cin, cout) for name, _, _, spec, cin, cout in calls}
    assert kinds == {"c1": ("conv", 3, 32), "c2": ("conv", 32, 48), "dw": ("depthwise", 48, 96),
                     "sep": ("separable", 96, 32), "fc": ("dense", 32, 12),
                     "head": ("dense", 12, 4)}
    assert shapes == [[32, 32, 3]] and unmodelled == []
    specs = {name: spec for name, _, _, spec, _, _ in calls}
    assert specs["c2"].strides == (2, 2) and specs["c2"].out_hw == (16, 16)
    assert specs["c2"].activation == "relu" and specs["sep"].activation == "relu6"
    for name, _, _, spec, cin, cout in calls:
        interp = Interpreter(model_content=probes.probe_file(spec, cin, cout))
        interp.allocate_tensors()
        interp.invoke()
        out = interp.get_output_details()[0]["shape"]
        keras_out = m.get_layer(name).output.shape
        assert out[-1] == cout and np.prod(out) == np.prod(keras_out[1:]), name
    assert probes.time_file(probes.probe_file(specs["c1"], 3, 8), 1, 2, 0) > 0


def test_measure_plan_cache_and_estimates(tmp_path, monkeypatch, caplog):
    m = _model()
    monkeypatch.setenv("KERAS_SLIM_CACHE", str(tmp_path))
    # the core measures nothing: a latency target needs a latency model
    with pytest.raises(keras_slim.ArgumentError, match="needs latency_model=.*LatencyModel.measure"):
        keras_slim.plan(m, target_latency_ms="95%")
    # LiteRT's, measured (1 thread) and cached in $KERAS_SLIM_CACHE
    share = keras_slim.plan(m, target_latency_ms="95%",
                            latency_model=lat.LatencyModel.measure(m))
    files = os.listdir(tmp_path)
    assert len(files) == 1 and files[0].startswith("latency-")
    with open(tmp_path / files[0]) as f:
        saved = json.load(f)
    assert saved["machine"] == lat.machine_info() and len(saved["entries"]) >= 8

    def no_timing(*args):
        raise AssertionError("timed again instead of reading the cache")

    monkeypatch.setattr(lat, "time_file", no_timing)
    monkeypatch.setattr(probes, "time_file", no_timing)
    monkeypatch.setattr(graph_, "time_file", no_timing)
    lm = lat.LatencyModel.measure(m)  # every layer, the overhead and the curves from the cache
    assert [c.name for c in lm.layers] == ["c1", "c2", "dw", "sep", "fc", "head"]
    assert share.target["estimate"] == lm.description and "1 thread" in lm.description
    assert share.target["goals"]["latency_ms"] == pytest.approx(
        0.95 * share.target["before"]["latency_ms"])
    p = keras_slim.plan(m, target_latency_ms=_reachable_ms(m, lm), latency_model=lm)
    assert p.target["reached"]["latency_ms"] <= p.target["goals"]["latency_ms"]
    assert p.removed_channels > 0 and "estimated" in p.summary()
    full = keras_slim.plan(m, 0.0)
    # the three terms: conv/dense layers, ops without MACs (here the GAP's MEAN: both BNs
    # fold), the graph's extra at the full model's weights
    assert [(o.name, o.spec.op) for o in lm.ops] == [("gap", "mean")]
    weights = sum(graph_.weights_mb(c.spec, c.cin, c.cout) for c in lm.layers)
    expected = (lm.overhead_ms + sum(max(c.ms(c.cin, c.cout) - lm.overhead_ms, 0)
                                     for c in lm.layers)
                + sum(max(o.ms(o.channels) - lm.overhead_ms, 0) for o in lm.ops)
                + graph_.extra_ms(lm.graph, weights))
    assert len(lm.graph) == len(graph_.FRACTIONS)
    assert lm.estimate(full.layers) == pytest.approx(expected)
    assert lm.estimate(p.layers) == pytest.approx(p.target["reached"]["latency_ms"])
    # the pruned model's own widths give the plan's estimate (input widths read back from MACs)
    small = keras_slim.prune(m, p)
    assert lm.estimate_model(small) == pytest.approx(lm.estimate(p.layers), rel=1e-6)
    assert "c2 (Conv2D) 32->48" in lm.table(p.layers)
    # an unreadable cache is measured again, with a warning
    monkeypatch.undo()
    with open(tmp_path / files[0], "w") as f:
        f.write("{not json")
    again = lat.LatencyModel.measure(m, cache_dir=tmp_path, runs=1, warmup=0)
    assert "unreadable" in caplog.text and len(again.layers) == 6
    with pytest.raises(keras_slim.ArgumentError, match="threads must be an int >= 1"):
        lat.LatencyModel.measure(m, threads=0)


def test_check_latency_exports_and_compares(tmp_path):
    m = _model()
    lm = lat.LatencyModel.measure(m, cache_dir=tmp_path, runs=2, warmup=0)
    p = keras_slim.plan(m, target_latency_ms=_reachable_ms(m, lm), latency_model=lm)
    out = tmp_path / "pruned.tflite"
    c = latency_check.check_latency(p, lm, runs=5, warmup=1, path=out)
    assert out.exists() and c.measured_ms > 0 and c.min_ms <= c.measured_ms
    assert c.estimated_ms == pytest.approx(p.target["reached"]["latency_ms"])
    assert np.isfinite(c.error_pct) and "prediction error" in str(c)
    small = keras_slim.prune(m, p)
    by_model = latency_check.check_latency(small, lm, runs=3, warmup=0)
    assert by_model.estimated_ms == pytest.approx(c.estimated_ms, rel=1e-6)
    with pytest.raises(keras_slim.ArgumentError, match="pass the latency_model"):
        latency_check.check_latency(small)
    with pytest.raises(keras_slim.ArgumentError, match="read from JSON"):
        latency_check.check_latency(keras_slim.Plan.from_json(p.to_json()), lm)


def test_timings_record_the_load_and_refresh_measures_again(tmp_path, monkeypatch, caplog):
    """A cache timed on a busy machine says so, and refresh=True replaces it."""
    x = inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="c")(x)
    m = keras.Model(inp, keras.layers.Dense(2, name="d")(x), name="tiny")
    timed = []

    def fake_time(*args):
        timed.append(1)
        return 0.05

    for module in (lat, probes, graph_):
        monkeypatch.setattr(module, "time_file", fake_time)
    cores = os.cpu_count() or 1
    monkeypatch.setattr(lat, "load_average", lambda: 1.0 + 2.0 * cores)  # 2 per core besides us
    with caplog.at_level("WARNING", logger="keras_slim"):
        busy = lat.LatencyModel.measure(m, cache_dir=tmp_path, runs=1, warmup=0)
    assert busy.busy == pytest.approx(2.0) and "refresh=True" in caplog.text
    n = len(timed)
    assert n > 0
    caplog.clear()
    monkeypatch.setattr(lat, "load_average", lambda: 0.0)
    cached = lat.LatencyModel.measure(m, cache_dir=tmp_path, runs=1, warmup=0)
    assert len(timed) == n and cached.busy == pytest.approx(2.0)  # read back, still busy
    caplog.clear()
    with caplog.at_level("WARNING", logger="keras_slim"):
        quiet = lat.LatencyModel.measure(m, cache_dir=tmp_path, runs=1, warmup=0, refresh=True)
    assert len(timed) == 2 * n and quiet.busy == 0.0 and "refresh=True" not in caplog.text
    again = lat.LatencyModel.measure(m, cache_dir=tmp_path, runs=1, warmup=0)
    assert len(timed) == 2 * n and again.busy == 0.0  # the refreshed entries were saved
    with pytest.raises(keras_slim.ArgumentError, match="refresh must be True or False"):
        lat.LatencyModel.measure(m, cache_dir=tmp_path, refresh="yes")
