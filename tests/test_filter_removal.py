"""plan(filter_removal="mean"): a removed filter's channel carries its BN's mean, act(beta).

The pruned model must equal the original with the removed channels' BN gammas
set to 0 (every BN the removed class passes through), to float tolerance,
where no fold is border-inexact (border_folds=False). Default "zero" is
covered by test_criteria.py (zeroed filters prune exactly).
"""

import keras
import numpy as np
import pytest

import keras_slim
from keras_slim import testing

from _models import PROPERTY_EXAMPLES, removed_zeroed

pytestmark = pytest.mark.backend_agnostic  # pytest.ini; also run on KERAS_BACKEND=jax


def _conv_bn(x, width, kernel, name, act=None, bias=False):
    x = keras.layers.Conv2D(width, kernel, padding="same", use_bias=bias, name=name)(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return x if act is None else keras.layers.Activation(act)(x)


def _plain(act):
    x = inp = keras.Input((12, 12, 3))
    for i, width in enumerate((16, 24, 32)):
        x = _conv_bn(x, width, 3, f"c{i}", act, bias=i == 1)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(5, name="head")(x))


def _residual(act):
    x = inp = keras.Input((12, 12, 3))
    x = _conv_bn(x, 16, 3, "stem", act)
    for b, width in enumerate((16, 32)):
        y = _conv_bn(_conv_bn(x, width, 3, f"b{b}_c1", act), width, 1, f"b{b}_c2")
        if x.shape[-1] != width:
            x = _conv_bn(x, width, 1, f"b{b}_proj")
        x = keras.layers.Activation(act)(keras.layers.Add(name=f"b{b}_add")([x, y]))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(4, name="head")(x))


def _mobile(act):
    x = inp = keras.Input((12, 12, 3))
    x = _conv_bn(x, 16, 3, "stem", act)
    x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    x = keras.layers.Activation(act)(keras.layers.BatchNormalization(name="dw_bn")(x))
    x = _conv_bn(x, 24, 1, "pw")
    x = keras.layers.Flatten()(x)
    return keras.Model(inp, keras.layers.Dense(3, name="head")(x))


@pytest.mark.parametrize("build", [_plain, _residual, _mobile])
@pytest.mark.parametrize("act", ["relu", "sigmoid"])  # sigmoid(0) != 0: act(beta) is folded
@pytest.mark.parametrize("criterion", ["l1", "fpgm"])
def test_mean_fill_equals_the_model_with_those_gammas_zeroed(build, act, criterion):
    m = build(act)
    testing.randomize_batchnorm(m, seed=3)
    p = keras_slim.plan(m, 0.4, criterion=criterion, filter_removal="mean", border_folds=False)
    assert p.removed_channels > 0 and p.options["filter_removal"] == "mean"
    ref = removed_zeroed(m, p)
    small = keras_slim.prune(m, p)
    x = testing.random_inputs(m, batch=4, seed=1)
    as_np = keras.ops.convert_to_numpy
    want, got = as_np(ref(x)), as_np(small(x))
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())
    # the default hypothesis ranks the same channels but folds other constants
    zero = keras_slim.plan(m, 0.4, criterion=criterion, border_folds=False)
    assert zero.options["filter_removal"] == "zero"


def test_mean_fill_replays_from_json_and_the_cli_flag(tmp_path):
    from keras_slim.cli import main

    m = _residual("relu")
    testing.randomize_batchnorm(m, seed=4)
    p = keras_slim.plan(m, 0.5, criterion="l1", filter_removal="mean")
    again = keras_slim.prune(m, keras_slim.Plan.from_json(p.to_json()))
    x = testing.random_inputs(m, batch=2)
    assert testing.max_difference(keras_slim.prune(m, p), again, x) < 1e-6
    path = tmp_path / "m.keras"
    m.save(path)
    out = tmp_path / "small.keras"
    assert main(["prune", str(path), "--ratio", "0.5", "--criterion", "l1", "--filter-removal",
                 "mean", "-o", str(out), "--plan-json", str(tmp_path / "p.json")]) == 0
    saved = keras_slim.Plan.from_json(open(tmp_path / "p.json").read())
    assert saved.options["filter_removal"] == "mean" and saved.kept == p.kept


def test_bad_filter_removal():
    m = _plain("relu")
    with pytest.raises(keras_slim.ArgumentError, match="filter_removal='average' is not known"):
        keras_slim.plan(m, 0.5, criterion="l1", filter_removal="average")
    with pytest.raises(keras_slim.ArgumentError, match="is for filter criteria"):
        keras_slim.plan(m, 0.5, filter_removal="mean")  # bn_scale


@pytest.mark.parametrize("criterion", ["l1", "fpgm"])
def test_mean_fill_is_exact_on_random_graphs(criterion):
    """Random graphs (merges, concatenations, SE, depthwise, nested models, activations whose
    value at 0 is not 0, every kind of reader head): the pruned model equals the model with
    the removed filters and gammas zeroed."""
    graphs = min(16, max(6, PROPERTY_EXAMPLES))  # .ci/run's JAX pass: 5 -> 6 graphs
    pruned_any = mattered = 0
    for seed in range(graphs):
        m = testing.random_model(seed, constants=True)
        testing.randomize_batchnorm(m, seed)
        p = keras_slim.plan(m, 0.4, criterion=criterion, filter_removal="mean",
                            border_folds=False)
        if not p.removed_channels:
            continue
        pruned_any += 1
        x = testing.random_inputs(m, batch=2, seed=1)
        small = keras_slim.prune(m, p)
        assert testing.max_difference(removed_zeroed(m, p), small, x) < 1e-5, seed
        mattered += testing.max_difference(m, small, x) > 1e-3  # the hypothesis changed outputs
    # not vacuous: most graphs prune something and the pruning changes their outputs
    assert pruned_any >= 0.6 * graphs and mattered >= 0.5 * graphs, (pruned_any, mattered)


@pytest.mark.parametrize("filter_removal", ["zero", "mean"])
def test_bn_off_the_channel_axis_is_a_barrier(filter_removal):
    """A BN over axis 1 mixes nothing per channel: its input channels stay, the rest prune."""
    x = inp = keras.Input((8, 8, 3))
    a = _conv_bn(x, 8, 3, "a", "relu")
    b = keras.layers.Conv2D(6, 3, padding="same", name="b")(a)
    b = keras.layers.BatchNormalization(axis=1, name="b_bn")(b)  # not the channel axis
    y = keras.layers.Concatenate()([keras.layers.GlobalAveragePooling2D()(a),
                                    keras.layers.GlobalAveragePooling2D()(b)])
    m = keras.Model(inp, keras.layers.Dense(3, name="head")(y))
    testing.randomize_batchnorm(m, seed=2)
    p = keras_slim.plan(m, 0.5, criterion="l1", filter_removal=filter_removal)
    assert "b" not in p.kept and "b_bn" not in p.kept  # the barrier's channels are kept
    assert len(p.kept["a"]) < 8
    small = keras_slim.prune(m, p)
    assert small.get_layer("b_bn").get_config()["axis"] in (1, [1])
    for criterion in ("bn_scale", "l1"):  # dead channels around the barrier prune exactly
        r = testing.exactness(keras.models.clone_model(m), 0.5, seed=3, criterion=criterion)
        assert r.plan.removed_channels > 0 and r.difference < 1e-5, (criterion, r.difference)
