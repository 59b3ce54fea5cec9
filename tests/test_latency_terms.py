"""The latency model's terms beyond conv/dense layers: ops without MACs and the graph's extra."""
import keras
import numpy as np
import pytest

import keras_slim
from keras_slim.export import _latency_elementwise as ew
from keras_slim.export import _latency_graph as graph_
from keras_slim.export import _latency_probes as probes
from keras_slim.export import latency_model as lat
from keras_slim.export._flatbuffer import tflite_op_histogram

pytest.importorskip("ai_edge_litert")


def _preact():
    """Pre-activation blocks (BN after Add: not foldable), a concat, pools, a GAP."""
    x = inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False, name="stem")(x)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)  # follows a conv: folds
    for i in range(2):
        y = keras.layers.ReLU()(keras.layers.BatchNormalization(name=f"pre{i}")(x))
        y = keras.layers.Conv2D(16, 3, padding="same", name=f"conv{i}")(y)
        x = keras.layers.Add(name=f"add{i}")([x, y])
    z = keras.layers.Conv2D(8, 1, name="side")(x)
    x = keras.layers.Concatenate(name="cat")([x, z])
    x = keras.layers.BatchNormalization(name="cat_bn")(x)  # after a concat: MUL + ADD
    x = keras.layers.MaxPooling2D(name="maxpool")(x)
    x = keras.layers.AveragePooling2D(3, strides=1, padding="same", name="avgpool")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    m = keras.Model(inp, keras.layers.Dense(5, name="head")(x), name="preact_terms")
    keras_slim.testing.randomize_batchnorm(m, seed=0)
    return m


def test_ops_without_macs_are_the_ones_the_exported_file_runs(tmp_path):
    m = _preact()
    _, ops, _, _ = lat._read(m, None)
    found = {name: (spec.op, channels) for name, _, _, spec, channels in ops}
    assert found == {"pre0": ("bn", 16), "pre1": ("bn", 16), "add0": ("add", 16),
                     "add1": ("add", 16), "cat": ("concat", 24), "cat_bn": ("bn", 24),
                     "maxpool": ("pool_max", 24), "avgpool": ("pool_avg", 24),
                     "gap": ("mean", 24)}
    specs = {name: spec for name, _, _, spec, _ in ops}
    assert specs["cat"].shares == (pytest.approx(16 / 24), pytest.approx(8 / 24))
    assert specs["avgpool"].same and specs["avgpool"].pool == (3, 3)
    assert specs["maxpool"].strides == (2, 2) and specs["avgpool"].hw == (8, 8)
    # the converter's file has exactly these ops besides the convs: 3 unfolded BNs
    # (MUL + ADD each) and 2 residual adds, one concat, two pools, one mean
    path = tmp_path / "m.tflite"
    keras_slim.export_tflite(m, path, verify=False)
    hist = tflite_op_histogram(path.read_bytes())
    assert hist["MUL"] == 3 and hist["ADD"] == 3 + 2
    assert hist["CONCATENATION"] == 1 and hist["MAX_POOL_2D"] == 1
    assert hist["AVERAGE_POOL_2D"] == 1 and hist["MEAN"] == 1


def test_a_bn_whose_input_is_also_a_nested_model_output_counts_as_unfolded():
    """fold.py keeps such a BN (its conv's output is needed as is); the latency model agrees."""
    from keras_slim.export.fold import fold_batchnorm_counted

    i = keras.Input((8, 8, 4))
    c = keras.layers.Conv2D(8, 3, padding="same", name="c")(i)
    inner = keras.Model(i, [c, keras.layers.BatchNormalization(name="bn")(c)], name="inner")
    x = keras.Input((8, 8, 4))
    o1, o2 = inner(x)
    y = keras.layers.Add(name="add")([keras.layers.Conv2D(8, 1, name="p")(o1), o2])
    m = keras.Model(x, keras.layers.GlobalAveragePooling2D(name="gap")(y))
    _, ops, _, _ = lat._read(m, None)
    assert [(name, spec.op) for name, _, _, spec, _ in ops] == [
        ("inner/bn", "bn"), ("add", "add"), ("gap", "mean")]
    assert fold_batchnorm_counted(m)[1] == 0


@pytest.mark.parametrize("spec, channels, op_names", [
    (ew.OpSpec("bn", (8, 8)), 12, {"MUL": 1, "ADD": 1}),
    (ew.OpSpec("add", (8, 8), inputs=3), 12, {"ADD": 2}),
    (ew.OpSpec("add", (8, 8), inputs=2, average=True), 12, {"ADD": 1, "MUL": 1}),
    (ew.OpSpec("max", (8, 8), inputs=2), 12, {"MAXIMUM": 1}),
    (ew.OpSpec("concat", (8, 8), inputs=3, shares=(0.5, 0.25, 0.25)), 12,
     {"CONCATENATION": 1}),
    (ew.OpSpec("pool_max", (8, 8), pool=(2, 2), strides=(2, 2)), 12, {"MAX_POOL_2D": 1}),
    (ew.OpSpec("pool_avg", (8, 8), pool=(3, 3), strides=(1, 1), same=True), 12,
     {"AVERAGE_POOL_2D": 1}),
    (ew.OpSpec("mean", (8, 8)), 12, {"MEAN": 1}),
])
def test_elementwise_probes_run_in_litert(spec, channels, op_names):
    from ai_edge_litert.interpreter import Interpreter

    content = ew.probe_file(spec, channels)
    assert tflite_op_histogram(content) == op_names
    interp = Interpreter(model_content=content)
    interp.allocate_tensors()
    for d in interp.get_input_details():
        interp.set_tensor(d["index"], np.ones(d["shape"], np.float32))
    interp.invoke()
    out = interp.get_tensor(interp.get_output_details()[0]["index"])
    assert out.shape[-1] == channels and np.isfinite(out).all()
    if spec.op == "mean":  # the MEAN of ones over H, W: the axes tensor is read right
        np.testing.assert_allclose(out, 1.0)
    assert probes.time_file(content, 1, 2, 0) > 0


def test_a_concatenation_is_never_probed_below_one_channel_per_input():
    spec = ew.OpSpec("concat", (4, 4), inputs=4, shares=(0.25,) * 4)
    assert ew.grid(spec, 4) == [4] and ew.grid(spec, 16) == [4, 8, 12, 16]
    assert ew.grid(ew.OpSpec("add", (4, 4), inputs=2), 4) == [1, 2, 3, 4]
    for c in ew.grid(spec, 4):
        assert tflite_op_histogram(ew.probe_file(spec, c)) == {"CONCATENATION": 1}
        assert probes.time_file(ew.probe_file(spec, c), 1, 1, 0) > 0


def test_elementwise_fit_and_graph_extra():
    a, b = ew.fit([[4, 0.011], [8, 0.013], [12, 0.015], [16, 0.017]])
    assert (a, b) == (pytest.approx(0.009), pytest.approx(0.0005))
    assert ew.fit([[4, 0.02], [8, 0.01]]) == (pytest.approx(0.015), 0.0)  # falls: the mean
    points = [[10.0, 1.0], [5.0, 0.2], [2.5, 0.3], [1.0, -0.1]]  # noise: 2.5 > 5, 1.0 < 0
    assert graph_.extra_ms(points, 0.0) == 0.0 and graph_.extra_ms([], 50.0) == 0.0
    assert graph_.extra_ms(points, 1.0) == pytest.approx(0.0)  # negative gaps count 0
    assert graph_.extra_ms(points, 5.0) == pytest.approx(0.3)  # made non-decreasing
    assert graph_.extra_ms(points, 7.5) == pytest.approx(0.65)  # linear between points
    assert graph_.extra_ms(points, 20.0) == pytest.approx(2.0)  # beyond: proportional
    spec = probes.ProbeSpec("conv", (8, 8), (8, 8), (3, 3))
    assert graph_.weights_mb(spec, 16, 32) == pytest.approx(4 * 9 * 16 * 32 / 2 ** 20)
    dw = probes.ProbeSpec("depthwise", (8, 8), (8, 8), (3, 3), multiplier=2)
    assert graph_.weights_mb(dw, 16, 32) == pytest.approx(4 * 9 * 32 / 2 ** 20)


def test_graph_files_are_timed_once_per_distinct_width_and_under_the_file_cap(monkeypatch):
    """One layer keeps its input and output widths at every fraction: one file, not four."""
    import types

    timed = []
    monkeypatch.setattr(graph_, "time_file", lambda buf, *a: timed.append(len(buf)) or 1.0)
    spec = probes.ProbeSpec("conv", (8, 8), (8, 8), (3, 3))
    layer = types.SimpleNamespace(spec=spec, cin=16, cout=32, ms=lambda cin, cout: 0.5)
    points = graph_.measure([layer], 0.1, 1, 1, 0)
    assert len(timed) == 1 and points == [[pytest.approx(graph_.weights_mb(spec, 16, 32)),
                                           pytest.approx(0.9 - 0.4)]]
    two = [layer, types.SimpleNamespace(spec=spec, cin=32, cout=8, ms=lambda cin, cout: 0.5)]
    timed.clear()
    assert len(graph_.measure(two, 0.1, 1, 1, 0)) == 4 and len(timed) == 4
    # files over the cap are not written; extra_ms extends the largest point measured
    full_mb = sum(graph_.weights_mb(spec, *w) for w in graph_.widths_at(two, 1.0))
    monkeypatch.setattr(graph_, "MAX_FILE_MB", 0.6 * full_mb)
    timed.clear()
    capped = graph_.measure(two, 0.1, 1, 1, 0)
    assert len(capped) == len(timed) == 2 and max(mb for mb, _ in capped) <= 0.6 * full_mb
    monkeypatch.setattr(graph_, "MAX_FILE_MB", 0.0)
    assert graph_.measure(two, 0.1, 1, 1, 0) == [] and graph_.extra_ms([], full_mb) == 0.0


def test_estimates_add_the_terms_and_follow_the_plan(tmp_path):
    m = _preact()
    lm = lat.LatencyModel.measure(m, cache_dir=tmp_path, runs=3, warmup=1)
    base = lat.LatencyModel.measure(m, cache_dir=tmp_path, elementwise=False, graph=False)
    assert not base.ops and not base.graph and len(lm.ops) == 9
    assert [mb for mb, _ in lm.graph] == sorted(mb for mb, _ in lm.graph)
    assert "9 elementwise + graph term" in lm.description and "graph term" in lm.table()
    full, cut = keras_slim.plan(m, 0.0), keras_slim.plan(m, 0.5)
    ops = {o.name: o for o in lm.ops}
    rows = {r.name: r for r in cut.layers}
    # the ops' term at the plan's widths: each counted row at its channels_after
    expected_ops = sum(max(o.ms(rows[n].channels_after) - lm.overhead_ms, 0)
                       for n, o in ops.items())
    no_graph = lat.LatencyModel.measure(m, cache_dir=tmp_path, graph=False)
    assert no_graph.estimate(cut.layers) == pytest.approx(base.estimate(cut.layers)
                                                          + expected_ops)
    layer_costs = {c.name: c for c in lm.layers}  # one call per layer here
    mb = sum(graph_.weights_mb(c.spec, *c.widths(r.channels_after, r.macs_after))
             for r in cut.layers if (c := layer_costs.get(r.name)) and r.channels_after)
    assert lm.estimate(cut.layers) == pytest.approx(no_graph.estimate(cut.layers)
                                                    + graph_.extra_ms(lm.graph, mb))
    assert lm.estimate(cut.layers) < lm.estimate(full.layers)
    assert rows["pre0"].channels_after < 16  # the pre-activation BNs narrow with the plan
    small = keras_slim.prune(m, cut)
    assert lm.estimate_model(small) == pytest.approx(lm.estimate(cut.layers), rel=1e-6)
    # a latency target plans with all terms
    p = keras_slim.plan(m, target_latency_ms="80%", latency_model=lm)
    assert p.target["reached"]["latency_ms"] <= 0.8 * lm.estimate(full.layers) + 1e-9
