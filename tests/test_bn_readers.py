"""criterion="bn_scale_readers": every BN that reads a channel scores it (Torch-Pruning's grouping).

Scores are checked against a numpy computation (group_reduction over the |gamma| of the
reading BNs). Removal is checked against an independent reference: the original model with
the removed filters and the removed BN gammas zeroed (the zero-filter hypothesis, each
reading BN emitting beta), on pre-activation ResNets, DenseNet, a hand-written residual
stream read raw by a projection, and random graphs with constant channels and activations
whose value at 0 is not 0. Where every reader of a channel is its own BN with gamma = 0
(what "bn_scale" removes) the pruned model equals the original itself.
"""

import keras
import numpy as np
import pytest

import keras_slim
from keras_slim import testing
from keras_slim.training.cifar.models import densenet, preact_resnet

from _models import PROPERTY_EXAMPLES, removed_zeroed

pytestmark = pytest.mark.backend_agnostic  # pytest.ini; also run on KERAS_BACKEND=jax
CRITERION = "bn_scale_readers"


def _stream(act="relu"):
    """A residual stream read by two BNs (r1, r2) and, raw, by a projection: pre-activation."""
    x = inp = keras.Input((10, 10, 3))
    s = keras.layers.Conv2D(6, 3, padding="same", use_bias=False, name="stem")(x)
    y = keras.layers.Activation(act)(keras.layers.BatchNormalization(name="r1")(s))
    y = keras.layers.Conv2D(6, 1, use_bias=False, name="c1")(y)  # 1x1: folds are exact
    s = keras.layers.Add(name="stream_add")([s, y])
    a = keras.layers.Activation(act)(keras.layers.BatchNormalization(name="r2")(s))
    a = keras.layers.Conv2D(5, 1, name="after_r2")(a)
    proj = keras.layers.Conv2D(5, 1, use_bias=False, name="proj")(s)  # reads the stream raw
    out = keras.layers.Add()([a, proj])
    out = keras.layers.GlobalAveragePooling2D()(out)
    return keras.Model(inp, keras.layers.Dense(3, name="head")(out))


def _set_gammas(m, values: dict):
    for name, g in values.items():
        bn = m.get_layer(name)
        bn.gamma.assign(np.asarray(g, "float32"))


def test_scores_are_the_reduced_gammas_of_the_reading_bns():
    m = _stream()
    testing.randomize_batchnorm(m, seed=0)
    g1 = np.array([0.0, 0.9, 0.1, 0.5, -0.3, 0.02])
    g2 = np.array([0.0, 0.1, 0.7, -0.5, 0.2, 0.04])
    _set_gammas(m, {"r1": g1, "r2": g2})
    for reduction, ref in (("mean", (np.abs(g1) + np.abs(g2)) / 2),
                           ("max", np.maximum(np.abs(g1), np.abs(g2))),
                           ("sum", np.abs(g1) + np.abs(g2))):
        t = float(np.sort(ref)[3]) - 1e-6  # the three lowest of the stream go
        p = keras_slim.plan(m, threshold=t, criterion=CRITERION, group_reduction=reduction)
        want = sorted(np.flatnonzero(ref >= t).tolist())
        assert p.kept["stem"] == want and p.kept["c1"] == want and p.kept["r2"] == want, reduction
        assert list(p.kept.get("proj", range(5))) == list(range(5))  # its output has no BN reader
    # normalize="mean": each BN's |gamma| over that BN's mean first, then the reduction
    n1, n2 = np.abs(g1) / np.abs(g1).mean(), np.abs(g2) / np.abs(g2).mean()
    ref = (n1 + n2) / 2
    t = float(np.sort(ref)[2]) - 1e-6
    p = keras_slim.plan(m, threshold=t, criterion=CRITERION, normalize="mean")
    assert p.kept["stem"] == sorted(np.flatnonzero(ref >= t).tolist())
    # "bn_scale" cannot cut this stream (the projection reads it raw): it selects per BN
    exact = keras_slim.plan(m, threshold=0.25, criterion="bn_scale")
    assert exact.kept.get("stem", list(range(6))) == list(range(6))
    assert len(p.kept["stem"]) < 6 and "|gamma| of readers" in str(p)


@pytest.mark.parametrize("build", [
    pytest.param(lambda: _stream("relu"), id="stream-relu"),
    pytest.param(lambda: _stream("sigmoid"), id="stream-sigmoid"),  # sigmoid(0) != 0
    pytest.param(lambda: preact_resnet(20, width=0.25), id="preact-resnet20"),
    pytest.param(lambda: densenet(depth=10, growth_rate=4, input_shape=(16, 16, 3)),
                 id="densenet"),
])
def test_pruned_model_is_the_model_with_those_filters_and_gammas_zeroed(build):
    m = build()
    testing.randomize_batchnorm(m, seed=5)
    p = keras_slim.plan(m, 0.4, criterion=CRITERION, border_folds=False)
    assert p.removed_channels > 0 and p.options["criterion"] == CRITERION
    small = keras_slim.prune(m, p)
    assert small.count_params() == p.params_after
    x = testing.random_inputs(m, batch=2, seed=1, size=16)
    as_np = keras.ops.convert_to_numpy
    want, got = as_np(removed_zeroed(m, p)(x)), as_np(small(x))
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())
    assert testing.max_difference(m, small, x) > 1e-3  # not vacuous: the hypothesis mattered


def test_cuts_the_streams_bn_scale_keeps_whole():
    """Pre-activation ResNet: the stem and the stage streams (read raw by the projection
    shortcuts) go under this criterion, never under "bn_scale" (which selects instead)."""
    m = preact_resnet(20, width=0.25)
    testing.randomize_batchnorm(m, seed=1)
    full = {layer.name: layer.filters for layer in m.layers if hasattr(layer, "filters")}
    readers = keras_slim.plan(m, target_macs=0.5, criterion=CRITERION)
    exact = keras_slim.plan(m, target_macs=0.5)
    for name in ("conv1", "s1b1_downsample", "s2b1_downsample"):
        assert len(exact.kept.get(name, range(full[name]))) == full[name], name
        assert len(readers.kept[name]) < full[name], name
    assert "ChannelSelection" not in {type(la).__name__ for la in keras_slim.prune(m, readers).layers}


def test_exact_where_every_reader_is_the_channels_own_bn():
    """Post-activation residual net and a plain chain: each channel's readers are the BNs after
    its producers, so channels with gamma = 0 (beta kept: constants) prune exactly, as under
    "bn_scale", and the same channels go."""
    from test_filter_removal import _plain, _residual

    for build in (_plain, _residual):
        for act in ("relu", "sigmoid"):
            m = build(act)
            testing.randomize_batchnorm(m, seed=2)
            assert testing.kill_channels(m, 0.4, seed=2, keep_beta=True) > 0
            p = keras_slim.plan(m, threshold=1e-12, criterion=CRITERION, border_folds=False)
            q = keras_slim.plan(m, threshold=1e-12, border_folds=False)
            assert p.removed_channels > 0 and p.kept == q.kept, (build.__name__, act)
            x = testing.random_inputs(m, batch=2, seed=3, size=12)
            assert testing.max_difference(m, keras_slim.prune(m, p), x) < 1e-5


def test_random_graphs_prune_to_the_reference():
    """Random graphs (merges, concatenations, SE, depthwise, nested models, every reader head,
    constant channels, activations whose value at 0 is not 0)."""
    # border_folds=False (exact folds only) leaves about half of these graphs nothing to cut:
    # their constants reach 'same'-padded readers
    graphs = min(16, max(8, PROPERTY_EXAMPLES))
    pruned_any = mattered = 0
    for seed in range(graphs):
        m = testing.random_model(seed, constants=True)
        testing.randomize_batchnorm(m, seed)
        p = keras_slim.plan(m, 0.4, criterion=CRITERION, border_folds=False)
        if not p.removed_channels:
            continue
        pruned_any += 1
        x = testing.random_inputs(m, batch=2, seed=1)
        small = keras_slim.prune(m, p)
        assert small.count_params() == p.params_after, seed
        assert testing.max_difference(removed_zeroed(m, p), small, x) < 1e-5, seed
        mattered += testing.max_difference(m, small, x) > 1e-3
    assert pruned_any >= 0.5 * graphs and mattered >= 0.5 * graphs, (pruned_any, mattered)


def test_replays_from_json_and_the_cli(tmp_path):
    from keras_slim.cli import main

    m = preact_resnet(11, width=0.25)
    testing.randomize_batchnorm(m, seed=4)
    p = keras_slim.plan(m, 0.5, criterion=CRITERION)
    again = keras_slim.prune(m, keras_slim.Plan.from_json(p.to_json()))
    x = testing.random_inputs(m, batch=2)
    assert testing.max_difference(keras_slim.prune(m, p), again, x) < 1e-6
    path = tmp_path / "m.keras"
    m.save(path)
    assert main(["prune", str(path), "--ratio", "0.5", "--criterion", CRITERION, "-o",
                 str(tmp_path / "small.keras"), "--plan-json", str(tmp_path / "p.json")]) == 0
    saved = keras_slim.Plan.from_json(open(tmp_path / "p.json").read())
    assert saved.options["criterion"] == CRITERION and saved.kept == p.kept


def test_clear_errors():
    m = _stream()
    with pytest.raises(keras_slim.ArgumentError, match="is for filter criteria"):
        keras_slim.plan(m, 0.5, criterion=CRITERION, filter_removal="mean")
    with pytest.raises(keras_slim.ArgumentError, match="prove"):
        testing.kill_channels(m, criterion=CRITERION)
    x = inp = keras.Input((8, 8, 3))
    no_bn = keras.Model(inp, keras.layers.Conv2D(4, 3)(keras.layers.Conv2D(4, 3)(x)))
    with pytest.raises(keras_slim.ModelError, match="no BatchNormalization with a scaling factor"):
        keras_slim.plan(no_bn, 0.5, criterion=CRITERION)
