"""ChannelSelection as slices + concatenation, and the channel order that makes its runs long."""
import os

import keras
import numpy as np
import pytest

import keras_slim
from keras_slim import testing
from keras_slim.export.order import order_channels, selection_runs
from keras_slim.layers import CONCAT_FAN_IN, ChannelSelection, channel_runs, uses_slices
from keras_slim.training.cifar import models

DATA = os.path.join(os.path.dirname(__file__), "data")


def test_runs_and_the_choice_between_slices_and_gather():
    assert channel_runs([4, 5, 6, 0, 1, 9]) == [(4, 7), (0, 2), (9, 10)]
    assert channel_runs([3, 3]) == [(3, 4), (3, 4)]  # a repeated index is its own run
    assert uses_slices([7])  # one run is always a slice
    assert uses_slices(list(range(0, 8)) + list(range(12, 20)))  # 2 runs of 8
    assert not uses_slices([0, 2, 4, 6, 8, 10])  # runs of 1: a gather
    assert uses_slices([0, 2, 4, 6, 8, 10], min_mean_run=1)
    assert not uses_slices(list(range(0, 8)) + list(range(12, 20)), min_mean_run=9)


@pytest.mark.parametrize("indices", [
    [5], list(range(3, 11)), list(range(0, 40, 2)),  # one run, one long run, a gather
    [i for a in range(0, 48, 8) for i in range(a, a + 5)],  # 6 runs: a tree of concatenations
    [9, 10, 11, 12, 0, 1, 2, 3, 20, 21, 22, 23, 5, 5, 5, 5],  # unsorted and repeated
])
def test_selection_equals_take_either_way(indices):
    x = np.random.default_rng(0).normal(size=(2, 3, 3, 48)).astype("float32")
    layer = ChannelSelection(indices)
    y = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_array_equal(y, np.take(x, indices, axis=-1))  # bit-exact: only copies
    assert layer.as_slices == uses_slices(indices)


def test_wide_concatenations_are_a_tree_of_delegable_ones():
    import tensorflow as tf

    indices = [i for a in range(0, 120, 5) for i in range(a, a + 4)]  # 24 runs of 4
    layer = ChannelSelection(indices)
    assert layer.as_slices and len(layer.runs) == 24
    graph = tf.function(layer).get_concrete_function(
        tf.TensorSpec((1, 2, 2, 120))).graph
    widths = [len(op.inputs) - 1 for op in graph.get_operations() if op.type == "ConcatV2"]
    assert widths and max(widths) <= CONCAT_FAN_IN


def test_config_round_trip_and_errors():
    layer = ChannelSelection([3, 1, 2], name="sel")
    clone = ChannelSelection.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert set(layer.get_config()) - set(keras.layers.Layer().get_config()) == {"indices"}
    with pytest.raises(ValueError, match="at least one"):
        ChannelSelection([])
    with pytest.raises(ValueError, match=">= 0"):
        ChannelSelection([0, -1])
    with pytest.raises(ValueError, match="out of range"):
        ChannelSelection([0, 8])(keras.Input((4, 4, 8)))


def test_file_saved_before_slices_loads_and_gives_the_same_outputs():
    """tests/data/channel_selection_v1.keras was saved by the gather-only layer."""
    model = keras.models.load_model(os.path.join(DATA, "channel_selection_v1.keras"))
    ref = np.load(os.path.join(DATA, "channel_selection_v1.npz"))
    sel = {layer.name: layer for layer in model.layers if isinstance(layer, ChannelSelection)}
    assert sel["sel_runs"].as_slices and not sel["sel_scattered"].as_slices
    np.testing.assert_allclose(model.predict(ref["x"], verbose=0), ref["y"], rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def pruned():
    m = models.preact_resnet(20, width=0.5)
    testing.randomize_batchnorm(m)
    testing.kill_channels(m, 0.4)
    return m, keras_slim.prune(m, threshold=1e-12)


def test_order_channels_makes_runs_few_and_keeps_the_outputs(pruned):
    original, small = pruned
    before = [w.copy() for w in small.get_weights()]
    ordered, report = order_channels(small)
    assert ordered is not small
    assert report.selections == len(selection_runs(small)) > 0
    assert report.runs_after < report.runs_before
    assert sum(selection_runs(ordered)) == report.runs_after
    assert report.sliced == report.selections  # every selection became slices
    x = testing.random_inputs(original)
    assert testing.max_difference(small, ordered, x) < 1e-5
    assert testing.max_difference(original, ordered, x) < 1e-5
    assert all(np.array_equal(a, b) for a, b in zip(before, small.get_weights()))  # untouched


def test_concatenated_streams_are_ordered_through_the_concatenation():
    """DenseNet: selections read concatenations of every earlier layer's output."""
    m = models.densenet(depth=10, growth_rate=8)
    testing.randomize_batchnorm(m, seed=1)
    testing.kill_channels(m, 0.5)
    small = keras_slim.prune(m, threshold=1e-12)
    ordered, report = order_channels(small)
    assert report.selections == len(selection_runs(small)) > 0
    # each layer's output is ordered for every selection of every concatenation it is in
    assert report.runs_after < 0.6 * report.runs_before
    assert all(a <= b for a, b in zip(selection_runs(ordered), selection_runs(small)))
    x = testing.random_inputs(m)
    assert testing.max_difference(small, ordered, x) < 1e-5
    assert testing.max_difference(m, ordered, x) < 1e-5


def test_concatenation_fixed_by_another_writer_keeps_its_inputs_in_order():
    """A concatenation added to a conv's output: its order is fixed, so its inputs' are too."""
    inp = keras.Input((4, 4, 3))
    a = keras.layers.Conv2D(4, 1, name="a")(inp)
    b = keras.layers.Conv2D(4, 1, name="b")(inp)
    cat = keras.layers.Concatenate()([a, b])
    s = keras.layers.Add()([cat, keras.layers.Conv2D(8, 1, name="c")(inp)])
    y = ChannelSelection([0, 2, 4, 6])(s)
    z = ChannelSelection([1, 3])(a)
    m = keras.Model(inp, [keras.layers.Conv2D(2, 1)(y), keras.layers.Conv2D(2, 1)(z)])
    ordered, report = order_channels(m)
    assert report.runs_after == report.runs_before == 6  # nothing could move
    x0 = np.random.default_rng(0).normal(size=(2, 4, 4, 3)).astype("float32")
    for got, want in zip(ordered.predict(x0, verbose=0), m.predict(x0, verbose=0)):
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_random_concatenation_graphs_stay_exact_when_ordered():
    """Random dense-block graphs: concatenations (nested, repeated inputs, one joined to a
    conv by an Add), selections on them and on their inputs, BN and conv readers."""
    reordered = 0
    for seed in range(8):
        reordered += _check_random_concatenation_graph(seed)
    assert reordered >= 8  # the orders did move (not a vacuous pass)


def _check_random_concatenation_graph(seed: int) -> int:
    rng = np.random.default_rng(seed)
    inp = keras.Input((6, 6, 3))
    feats = [keras.layers.Conv2D(int(rng.integers(3, 9)), 1)(inp)]
    outs = []
    for _ in range(int(rng.integers(3, 6))):
        picks = [feats[int(i)] for i in rng.choice(len(feats), int(rng.integers(1, 4)))]
        x = keras.layers.Concatenate()(picks) if len(picks) > 1 else picks[0]
        width = x.shape[-1]
        if rng.random() < 0.25:
            x = keras.layers.Add()([x, keras.layers.Conv2D(width, 1)(inp)])
        if rng.random() < 0.8:
            keep = sorted(rng.choice(width, int(rng.integers(1, width + 1)), replace=False))
            x = ChannelSelection([int(i) for i in keep])(x)
        x = keras.layers.BatchNormalization()(x)
        y = keras.layers.Conv2D(int(rng.integers(2, 7)), 3, padding="same")(
            keras.layers.ReLU()(x))
        feats.append(y)
        if rng.random() < 0.3:
            outs.append(keras.layers.GlobalAveragePooling2D()(y))
    outs.append(keras.layers.GlobalAveragePooling2D()(keras.layers.Concatenate()(feats[-2:])))
    m = keras.Model(inp, outs)
    testing.randomize_batchnorm(m, seed=seed)
    ordered, report = order_channels(m)
    assert report.runs_after <= report.runs_before, (seed, str(report))
    x0 = rng.normal(size=(2, 6, 6, 3)).astype("float32")
    for got, want in zip(ordered.predict(x0, verbose=0), m.predict(x0, verbose=0)):
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=f"seed {seed}: {report}")
    return report.streams


def test_ordered_model_saves_and_reloads(pruned, tmp_path):
    original, small = pruned
    ordered, _ = order_channels(small)
    path = str(tmp_path / "ordered.keras")
    ordered.save(path)
    loaded = keras.models.load_model(path)
    x = testing.random_inputs(original)
    assert testing.max_difference(ordered, loaded, x) == 0.0


def test_model_without_selection_is_returned_as_is():
    m = models.vgg(11, width=0.125)
    same, report = order_channels(m)
    assert same is m and report.selections == 0 and str(report) == "no ChannelSelection"


def test_stream_read_by_an_unknown_layer_keeps_its_order():
    """A Reshape reads the shared stream: no reordering there, still exact."""
    inp = keras.Input((4, 4, 8))
    x = keras.layers.Conv2D(8, 1)(inp)
    a = ChannelSelection([0, 2, 4, 6])(x)
    b = keras.layers.Reshape((16, 8))(x)
    out = keras.layers.Concatenate()([keras.layers.Flatten()(a), keras.layers.Flatten()(b)])
    m = keras.Model(inp, out)
    ordered, report = order_channels(m)
    assert report.streams == 0 and report.runs_after == report.runs_before == 4
    x0 = np.random.default_rng(0).normal(size=(2, 4, 4, 8)).astype("float32")
    np.testing.assert_array_equal(ordered.predict(x0, verbose=0), m.predict(x0, verbose=0))


def _block(selected, spatial=32, width=64, scale=True):
    """shared stream -> selection -> BN -> ReLU -> 1x1 conv (+ the stream read again)."""
    inp = keras.Input((spatial, spatial, width))
    x = keras.layers.Conv2D(width, 1, name="writer")(inp)
    y = ChannelSelection(selected, name="sel")(x)
    y = keras.layers.BatchNormalization(scale=scale, name="bn")(y)
    y = keras.layers.Conv2D(16, 1, name="reader")(keras.layers.ReLU()(y))
    m = keras.Model(inp, keras.layers.Concatenate()([keras.layers.Flatten()(y),
                                                     keras.layers.Flatten()(x)]))
    testing.randomize_batchnorm(m)
    return m


def test_absorbed_selection_is_exact_and_removes_the_layer():
    from keras_slim.export.absorb import absorb_selections

    m = _block(list(range(0, 60)))  # most channels of a large map: absorbing is cheaper
    absorbed, n = absorb_selections(m)
    assert n == 1
    assert not any(isinstance(layer, ChannelSelection) for layer in absorbed.layers)
    assert absorbed.get_layer("reader").kernel.shape[2] == 64
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 64)).astype("float32")
    np.testing.assert_allclose(absorbed.predict(x, verbose=0), m.predict(x, verbose=0),
                               rtol=0, atol=1e-5)
    assert m.get_layer("reader").kernel.shape[2] == 60  # the input model is left as it was


def test_selection_is_kept_where_absorbing_costs_more_or_is_not_exact():
    from keras_slim.export.absorb import absorb_selections

    few_on_small_map = _block(list(range(0, 8)), spatial=2, width=256)
    assert absorb_selections(few_on_small_map) == (few_on_small_map, 0)
    no_gamma = _block(list(range(0, 60)), scale=False)  # a dropped channel would not be 0
    assert absorb_selections(no_gamma) == (no_gamma, 0)


def test_the_layout_follows_the_thread_count_it_is_exported_for(tmp_path):
    """At 2 threads a slice costs a hand-off (~2 us) the convs do not: absorbed there."""
    from keras_slim.export.absorb import absorb_selections, costs_for

    m = _block(list(range(0, 32)), spatial=8)
    assert absorb_selections(m, threads=1) == (m, 0)  # one slice is cheaper at 1 thread
    absorbed, n = absorb_selections(m, threads=2)
    assert n == 1 and costs_for(4) == costs_for(2) != costs_for(1)
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 64)).astype("float32")
    np.testing.assert_allclose(absorbed.predict(x, verbose=0), m.predict(x, verbose=0),
                               rtol=0, atol=1e-5)
    report = keras_slim.export_tflite(m, tmp_path / "m2.tflite", for_threads=2)
    assert "1 absorbed" in report.details["channel_order"]
    with pytest.raises(keras_slim.ArgumentError, match="for_threads must be an int >= 1.*0"):
        keras_slim.export_tflite(m, tmp_path / "bad.tflite", for_threads=0)
    assert not (tmp_path / "bad.tflite").exists()


@pytest.mark.parametrize("exporter, suffix", [("export_tflite", ".tflite"),
                                              ("export_onnx", ".onnx")])
def test_a_bad_for_threads_fails_before_any_work(tmp_path, monkeypatch, exporter, suffix):
    """The value is checked first: no BN fold, no conversion, no file."""
    from keras_slim.export import onnx as onnx_module, tflite as tflite_module

    if exporter == "export_onnx":
        pytest.importorskip("tf2onnx")
    module = tflite_module if exporter == "export_tflite" else onnx_module

    def must_not_run(*args, **kwargs):
        raise AssertionError("maybe_fold ran before for_threads was checked")

    monkeypatch.setattr(module, "maybe_fold", must_not_run)
    m = _block(list(range(0, 32)), spatial=8)
    for bad in (0, 1.5, True, "2"):
        with pytest.raises(keras_slim.ArgumentError, match="for_threads must be an int >= 1"):
            getattr(keras_slim, exporter)(m, tmp_path / f"bad{suffix}", for_threads=bad)
    assert not list(tmp_path.iterdir())


def test_streams_are_reversed_where_that_joins_runs_across_a_concatenation(monkeypatch):
    """Each stream is ordered alone (least-kept channels first); reversing one joins the runs."""
    from keras_slim.export import order as order_module

    inp = keras.Input((6, 6, 3))
    a = keras.layers.Conv2D(4, 1, name="a")(inp)
    b = keras.layers.Conv2D(4, 1, name="b")(inp)
    cat = keras.layers.Concatenate()([a, b])
    y = ChannelSelection([0, 2, 5, 7], name="sel")(cat)  # two of a's, two of b's
    y = keras.layers.Conv2D(5, 1, name="reader")(keras.layers.BatchNormalization()(y))
    z = keras.layers.Conv2D(3, 1, name="all")(cat)  # reads every channel: any order works
    m = keras.Model(inp, [y, z])
    testing.randomize_batchnorm(m)
    ordered, report = order_channels(m)
    # each stream alone puts its dropped channels first: 2 runs; b reversed: one slice
    assert report.runs_before == 4 and report.runs_after == 1
    with monkeypatch.context() as patch:
        patch.setattr(order_module, "_orient", lambda *args: None)
        assert order_channels(m)[1].runs_after == 2
    x = np.random.default_rng(1).normal(size=(2, 6, 6, 3)).astype("float32")
    for got, want in zip(ordered.predict(x, verbose=0), m.predict(x, verbose=0)):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    # a selection reading b directly, its output a model output (order frozen): reversing b
    # would split its run in two, so b stays, and the concatenation's selection keeps 2 runs
    direct = ChannelSelection([0, 1], name="direct")(b)
    m2 = keras.Model(inp, [y, z, direct])
    ordered2, report2 = order_channels(m2)
    assert len(ordered2.get_layer("direct").runs) == 1 and report2.runs_after == 3
    for got, want in zip(ordered2.predict(x, verbose=0), m2.predict(x, verbose=0)):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
