"""The planner: global threshold, constraints, report, errors."""
import json
import math
import warnings

import keras
import numpy as np
import pytest
from keras import layers

import keras_slim
from keras_slim import testing
from keras_slim.training.cifar import models

pytestmark = pytest.mark.backend_agnostic  # pytest.ini; also run on KERAS_BACKEND=jax


@pytest.fixture
def vgg():
    m = models.vgg(11, width=0.125)
    testing.randomize_batchnorm(m, seed=1)
    return m


def _widths(p):
    return {r.name: r.channels_after for r in p.layers if r.class_name == "Conv2D"}


def test_ratio_cuts_exactly_round_ratio_times_total(vgg):
    for ratio in (0.1, 0.25, 0.5, 0.7):
        p = keras_slim.plan(vgg, ratio)
        assert p.removed_channels == round(ratio * p.prunable_channels)


def test_global_ranking_removes_the_smallest_gammas(vgg):
    p = keras_slim.plan(vgg, 0.5)
    gammas = np.concatenate([np.abs(l.get_weights()[0]) for l in vgg.layers
                             if isinstance(l, layers.BatchNormalization)])
    k = round(0.5 * len(gammas))
    assert p.threshold == pytest.approx(np.sort(gammas)[k - 1])
    kept = sum(len(v) for n, v in p.kept.items() if n.startswith("bn"))
    assert kept == len(gammas) - k


def test_ratio_zero_keeps_everything(vgg):
    p = keras_slim.plan(vgg, 0.0)
    assert p.removed_channels == 0 and p.params_after == p.params_before and not p.kept


def test_min_channels_and_never_zero_width(vgg):
    for layer in vgg.layers:
        if isinstance(layer, layers.BatchNormalization) and layer.name == "bn3":
            w = layer.get_weights()
            w[0][:] = 1e-6  # the whole layer would go
            layer.set_weights(w)
    with pytest.warns(UserWarning, match="'conv3' \\(1 of 32\\)"):  # kept alive, and named
        p = keras_slim.plan(vgg, 0.3)
    assert _widths(p)["conv3"] == 1
    p = keras_slim.plan(vgg, 0.3, min_channels=4)
    assert min(_widths(p).values()) >= 4


def test_max_layer_ratio_caps_each_layer(vgg):
    p = keras_slim.plan(vgg, 0.9, max_layer_ratio=0.5)
    for r in p.layers:
        if r.class_name == "Conv2D":
            assert r.channels_after >= math.ceil(r.channels_before / 2)


def test_round_to_multiples(vgg):
    p = keras_slim.plan(vgg, 0.5, round_to=4)
    for name, w in _widths(p).items():
        before = next(r.channels_before for r in p.layers if r.name == name)
        assert w % 4 == 0 or w == before


def test_exclude_keeps_layer(vgg):
    p = keras_slim.plan(vgg, 0.5, exclude=["conv2"])
    assert "conv2" not in p.kept and "bn2" not in p.kept
    assert "conv3" in p.kept  # others still prune


def test_outputs_keep_width():
    inp = keras.Input((8, 8, 3))
    x = layers.BatchNormalization(name="bn_a")(layers.Conv2D(6, 3)(inp))
    out = layers.BatchNormalization(name="out_bn")(layers.Conv2D(5, 1)(x))
    m = keras.Model(inp, out)
    testing.randomize_batchnorm(m)
    p = keras_slim.plan(m, 0.5)
    assert p.prunable_channels == 6  # only bn_a: the output's 5 channels stay
    assert keras_slim.prune(m, p).output.shape[-1] == 5


def test_report_json_and_table(vgg, tmp_path):
    p = keras_slim.plan(vgg, 0.5)
    d = json.loads(p.to_json(str(tmp_path / "plan.json")))
    assert d["removed_channels"] == p.removed_channels
    assert d["flops_before"] == 2 * d["macs_before"]
    assert json.loads((tmp_path / "plan.json").read_text())["kept"] == d["kept"]
    text = str(p)
    assert "conv1" in text and "MACs" in text and "params" in text
    small = keras_slim.prune(vgg, p)  # bias-free convs fold into the next BN: no new params
    assert small.count_params() == p.params_after
    assert p.groups and all(g["channels"] >= g["removed"] for g in d["groups"])


def test_macs_match_hand_count():
    inp = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same", use_bias=False)(inp)
    x = layers.BatchNormalization()(x)
    x = layers.Flatten()(x)
    m = keras.Model(inp, layers.Dense(2)(x))
    p = keras_slim.plan(m, 0.0)
    assert p.macs_before == 8 * 8 * 9 * 3 * 4 + 8 * 8 * 4 * 2


def test_threshold_option(vgg):
    p = keras_slim.plan(vgg, threshold=0.8)
    gammas = np.concatenate([np.abs(l.get_weights()[0]) for l in vgg.layers
                             if isinstance(l, layers.BatchNormalization)])
    assert p.removed_channels == int(np.sum(gammas < 0.8))


def test_group_reductions_differ_on_residuals():
    m = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=10)
    testing.randomize_batchnorm(m)
    a = keras_slim.plan(m, 0.5, group_reduction="max")
    b = keras_slim.plan(m, 0.5, group_reduction="mean")
    assert a.kept != b.kept


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5, float("nan"), "0.5", True])
def test_bad_ratio(vgg, ratio):
    with pytest.raises(ValueError, match="ratio"):
        keras_slim.plan(vgg, ratio)


def test_bad_options(vgg):
    with pytest.raises(ValueError, match="min_channels"):
        keras_slim.plan(vgg, 0.5, min_channels=0)
    with pytest.raises(ValueError, match="max_layer_ratio"):
        keras_slim.plan(vgg, 0.5, max_layer_ratio=0)
    with pytest.raises(ValueError, match="round_to"):
        keras_slim.plan(vgg, 0.5, round_to=0)
    with pytest.raises(ValueError, match="group_reduction"):
        keras_slim.plan(vgg, 0.5, group_reduction="median")
    with pytest.raises(ValueError, match="not in model"):
        keras_slim.plan(vgg, 0.5, exclude=["nope"])
    with pytest.raises(ValueError, match="exactly one"):
        keras_slim.plan(vgg, 0.5, threshold=0.1)


@pytest.mark.parametrize("threshold", [True, -0.1, float("nan"), "0.1"])
def test_bad_threshold(vgg, threshold):
    with pytest.raises(ValueError, match="threshold must be a number"):
        keras_slim.plan(vgg, threshold=threshold)


def test_numpy_scalars_are_accepted_wherever_numbers_are(vgg):
    p = keras_slim.plan(vgg, threshold=np.float32(0.5), max_layer_ratio=np.float64(0.6),
                        min_channels=np.int64(2))
    q = keras_slim.plan(vgg, threshold=0.5, max_layer_ratio=0.6, min_channels=2)
    assert p.kept == q.kept
    assert keras_slim.Plan.from_json(p.to_json()).options == q.options  # JSON has plain numbers


def test_not_a_model():
    with pytest.raises(TypeError, match="keras.Model"):
        keras_slim.prune(object(), 0.5)
    with pytest.raises(TypeError, match="keras.Model"):
        keras_slim.add_bn_l1("model.keras")


def test_subclassed_model():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.c = layers.Conv2D(4, 3)
            self.b = layers.BatchNormalization()
            self.d = layers.Dense(2)

        def call(self, x):
            return self.d(self.b(self.c(x)))

    net = Net()
    net(np.zeros((1, 8, 8, 3), "float32"))
    with pytest.raises(TypeError, match="subclassed"):  # without tracing it cannot be read
        keras_slim.plan(net, 0.5, trace=False)
    small = keras_slim.prune(net, 0.5)  # traced into a Functional model (tests/test_tracing.py)
    assert small.count_params() < net.count_params()


def test_no_prunable_bn():
    m = keras.Sequential([keras.Input((4,)), layers.Dense(3), layers.Dense(2)])
    with pytest.raises(ValueError, match="no BatchNormalization"):
        keras_slim.plan(m, 0.5)
    m = keras.Sequential([keras.Input((8, 8, 3)), layers.Conv2D(4, 3),
                          layers.BatchNormalization(scale=False), layers.Flatten(), layers.Dense(2)])
    with pytest.raises(ValueError, match="scale=True"):
        keras_slim.plan(m, 0.5)


def test_nan_gamma(vgg):
    bn = vgg.get_layer("bn2")
    w = bn.get_weights()
    w[0][0] = np.nan
    bn.set_weights(w)
    with pytest.raises(ValueError, match="bn2"):
        keras_slim.plan(vgg, 0.5)


def test_unbuilt_sequential():
    m = keras.Sequential([layers.Conv2D(4, 3), layers.BatchNormalization()])
    with pytest.raises(ValueError, match="not built"):
        keras_slim.plan(m, 0.5)


def test_plan_from_other_model(vgg):
    other = models.vgg(11, width=0.125)
    with pytest.raises(ValueError, match="different model"):
        keras_slim.prune(other, keras_slim.plan(vgg, 0.5))
    with pytest.raises(TypeError, match="Plan"):
        keras_slim.prune(vgg, keras_slim.plan(vgg, 0.5), round_to=8)


def test_unknown_layer_is_a_barrier_with_warning():
    @keras.saving.register_keras_serializable(package="test")
    class Scale(layers.Layer):
        def call(self, x):
            return x * 2.0

    inp = keras.Input((8, 8, 3))
    x = layers.BatchNormalization()(layers.Conv2D(6, 3)(inp))
    x = Scale(name="mystery")(x)
    x = layers.BatchNormalization()(layers.Conv2D(5, 3)(x))
    m = keras.Model(inp, layers.Dense(2)(layers.Flatten()(x)))
    testing.randomize_batchnorm(m)
    with pytest.warns(UserWarning, match="mystery"):
        p = keras_slim.plan(m, 0.5, trace=False)  # with tracing it is read (test_tracing.py)
    assert ("mystery", "no handler for Scale") in p.barriers
    small = keras_slim.prune(m, p)
    assert small.layers[1].filters == 6  # kept in front of the barrier
    x = testing.random_inputs(m)
    assert small(x).shape == m(x).shape


def test_register_handler_for_custom_layer():
    @keras.saving.register_keras_serializable(package="test")
    class Double(layers.Layer):
        def call(self, x):
            return x * 2.0

    class DoubleHandler(keras_slim.Handler):
        def flow(self, ctx, ins):
            return [ins[0]]

    keras_slim.register_handler(Double, DoubleHandler())
    inp = keras.Input((8, 8, 3))
    x = layers.BatchNormalization()(layers.Conv2D(6, 3)(inp))
    x = Double()(x)
    m = keras.Model(inp, layers.Dense(2)(layers.GlobalAveragePooling2D()(x)))
    testing.randomize_batchnorm(m)
    testing.kill_channels(m, 0.5, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no barrier warning
        small = keras_slim.prune(m, threshold=1e-12)
    assert small.layers[1].filters < 6
    x = testing.random_inputs(m)
    assert testing.max_difference(m, small, x) < 1e-5
    with pytest.raises(TypeError):
        keras_slim.register_handler(Double, object())


def test_plan_round_trips_through_json(vgg, tmp_path):
    p = keras_slim.plan(vgg, 0.5, round_to=2)
    path = str(tmp_path / "plan.json")
    p.to_json(path)
    loaded = keras_slim.Plan.from_json(path)
    assert loaded.kept == p.kept and loaded.params_after == p.params_after
    small = keras_slim.prune(vgg, loaded)
    assert small.count_params() == p.params_after
    x = testing.random_inputs(vgg)
    assert testing.max_difference(keras_slim.prune(vgg, p), small, x) == 0.0
    assert keras_slim.Plan.from_json(tmp_path / "plan.json").kept == p.kept  # a pathlib.Path
    with pytest.raises(keras_slim.ArgumentTypeError, match="JSON string or a file path, got dict"):
        keras_slim.Plan.from_json(p.to_dict())


def test_saved_plan_rejected_on_another_model(vgg):
    p = keras_slim.Plan.from_json(keras_slim.plan(vgg, 0.5).to_json())
    other = models.vgg(11, width=0.25)
    testing.randomize_batchnorm(other)
    with pytest.raises(ValueError, match="another model|does not fit|cannot be removed"):
        keras_slim.prune(other, p)
    with pytest.raises(ValueError, match="not a keras_slim plan"):
        keras_slim.Plan.from_dict({"kept": {}})


def test_warns_when_the_global_threshold_collapses_a_layer():
    # The layer whose factors all sit below everyone else's (what a model trained
    # without the penalty often shows in its last conv) is cut to one channel.
    m = models.vgg(11, width=0.125)
    testing.randomize_batchnorm(m, seed=1)
    bn = m.get_layer("bn8")
    w = bn.get_weights()
    w[0] = np.full_like(w[0], 1e-3)
    bn.set_weights(w)
    with pytest.warns(UserWarning, match=r"'conv8' \(1 of 64\).*max_layer_ratio"):
        p = keras_slim.plan(m, 0.5)
    assert _widths(p)["conv8"] == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        capped = keras_slim.plan(m, 0.5, max_layer_ratio=0.9)
    assert _widths(capped)["conv8"] >= math.ceil(0.1 * 64)


def test_output_made_by_a_nested_model_keeps_its_width():
    """Regression: model outputs were frozen before nested models were inlined."""
    si = keras.Input((8, 8, 3))
    sub = keras.Model(si, layers.BatchNormalization()(layers.Conv2D(4, 3)(si)), name="sub")
    inp = keras.Input((8, 8, 3))
    m = keras.Model(inp, sub(inp))
    testing.randomize_batchnorm(m)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = keras_slim.plan(m, 0.5)
    assert p.prunable_channels == 0
    assert keras_slim.prune(m, p).output.shape == m.output.shape


def test_round_to_with_the_cuts_macs_as_target_gives_aligned_widths_at_that_budget(vgg):
    """The speed-up recipe (benchmarks/results/speedup_efficiency.md): plan(target_macs=M,
    round_to=b) with M the MACs of the unrounded cut keeps every pruned width a multiple of b
    within M, where plan(ratio, round_to=b) rounds each layer up and keeps more MACs."""
    b = 8
    unrounded = keras_slim.plan(vgg, 0.5)
    rounded_up = keras_slim.plan(vgg, 0.5, round_to=b)
    aligned = keras_slim.plan(vgg, target_macs=unrounded.macs_after, round_to=b)
    assert rounded_up.macs_after > unrounded.macs_after
    assert aligned.macs_after <= unrounded.macs_after
    assert aligned.removed_channels > rounded_up.removed_channels
    full = {r.name: r.channels_before for r in aligned.layers}
    widths = _widths(aligned)
    assert any(w < full[name] for name, w in widths.items())
    for name, w in widths.items():
        assert w % b == 0 or w == full[name], (name, w, full[name])
    assert any(w % b for w in _widths(unrounded).values())  # the recipe changed something


def test_exclude_none_and_bad_container_arguments(vgg):
    assert keras_slim.plan(vgg, 0.3, exclude=None).removed_channels == \
        keras_slim.plan(vgg, 0.3).removed_channels
    with pytest.raises(keras_slim.ArgumentTypeError, match="exclude must be a layer name"):
        keras_slim.plan(vgg, 0.3, exclude=3)
    with pytest.raises(keras_slim.ArgumentTypeError, match="custom_handlers must be a dict"):
        keras_slim.plan(vgg, 0.3, custom_handlers=[keras_slim.Handler()])
    with pytest.raises(keras_slim.ArgumentError, match="ratios must be fractions"):
        keras_slim.sensitivity(vgg, lambda m: 0.0, ratios=["a"], verbose=0)


def test_layers_that_multiply_without_a_mac_rule_are_named_as_uncounted():
    inp = keras.Input((8, 8, 3))
    x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(8, 3, name="c")(inp)))
    x = layers.Reshape((36, 8))(x)
    x = layers.EinsumDense("abc,cd->abd", output_shape=(None, 4), name="einsum")(x)
    x = layers.Embedding(10, 4, name="table")(keras.ops.cast(x[..., 0], "int32"))
    m = keras.Model(inp, x)
    p = keras_slim.plan(m, 0.0)
    assert p.macs_uncounted == ["einsum"] and "counted as 0): einsum" in p.summary()
