"""plan(allocation="latency"): a latency target met by score per estimated ms saved."""
import math

import keras
import numpy as np
import pytest

import keras_slim
from keras_slim import testing

pytestmark = pytest.mark.backend_agnostic  # pytest.ini; also run on KERAS_BACKEND=jax


def _model(dead_b: int = 0):
    """c_a (16 wide, low |gamma|) then c_b (64 wide, higher |gamma|). `dead_b` of c_b's
    lowest-scored channels get gamma = beta = 0, so removing them is exact."""
    x = inp = keras.Input((12, 12, 8))
    x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False, name="c_a")(x)
    x = keras.layers.BatchNormalization(name="bn_a")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(64, 3, padding="same", use_bias=False, name="c_b")(x)
    x = keras.layers.BatchNormalization(name="bn_b")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    m = keras.Model(inp, keras.layers.Dense(5, name="head")(x))
    testing.randomize_batchnorm(m, seed=3)
    rng = np.random.default_rng(0)
    for name, low, high in (("bn_a", 0.05, 0.2), ("bn_b", 0.3, 1.0)):
        bn = m.get_layer(name)
        gamma, beta, mean, var = (keras.ops.convert_to_numpy(w) for w in bn.weights)
        gamma = rng.permutation(np.linspace(low, high, gamma.size)).astype("float32")
        if name == "bn_b" and dead_b:
            dead = np.argsort(gamma)[:dead_b]
            gamma[dead] = 0.0
            beta[dead] = 0.0
        bn.set_weights([gamma, beta, mean, var])
    return m


def _tiles(layers):
    """A step-function runtime: each conv costs 1 ms per started tile of 16 output channels."""
    return float(sum(math.ceil(r.channels_after / 16) for r in layers
                     if r.name in ("c_a", "c_b")))


def test_latency_allocation_spends_no_importance_on_cuts_that_save_nothing():
    m = _model()
    by_score = keras_slim.plan(m, target_latency_ms="60%", latency_model=_tiles)
    by_time = keras_slim.plan(m, target_latency_ms="60%", latency_model=_tiles,
                              allocation="latency")
    for p in (by_score, by_time):
        assert p.target["reached"]["latency_ms"] <= 3.0  # 60% of 5 ms
    score_widths, time_widths = ({r.name: r.channels_after for r in p.layers}
                                 for p in (by_score, by_time))
    # the score ranking cuts c_a first (its |gamma| are the lowest), which saves no tile
    assert score_widths["c_a"] == 1 and score_widths["c_b"] == 32
    # by time: c_a is priced at 0 ms per channel and kept whole; c_b loses the same 32
    assert time_widths["c_a"] == 16 and time_widths["c_b"] == 32
    assert by_time.kept["c_b"] == by_score.kept["c_b"]
    prices = {tuple(g["layers"]): g["ms_per_channel"] for g in by_time.target["prices"]}
    assert prices[("bn_a", "c_a")] == 0.0
    assert prices[("bn_b", "c_b")] == pytest.approx(2.0 / 32)  # half cut: 2 tiles, 32 channels
    assert by_time.target["allocation"] == "latency" and "allocation" not in by_score.target
    assert "score per estimated ms saved" in by_time.summary()
    assert "allocation" not in by_time.options  # a record: replays need only kept=


def test_latency_allocation_prunes_exactly_and_replays_from_json(tmp_path):
    m = _model(dead_b=32)
    x = testing.random_inputs(m)
    before = [w.copy() for w in m.get_weights()]
    p = keras_slim.plan(m, target_latency_ms=3.0, latency_model=_tiles, allocation="latency")
    small = keras_slim.prune(m, p)
    assert small.get_layer("c_b").filters == 32 and small.get_layer("c_a").filters == 16
    # the 32 removed channels are dead: the pruned model computes the same function
    assert testing.max_difference(m, small, x) < 1e-5
    assert all(np.array_equal(a, b) for a, b in zip(before, m.get_weights()))
    path = tmp_path / "plan.json"
    p.to_json(path)
    back = keras_slim.Plan.from_json(path)
    assert back.target == p.target
    assert testing.max_difference(small, keras_slim.prune(m, back), x) == 0.0


def test_dead_channels_that_save_nothing_still_go_first():
    m = _model()
    bn = m.get_layer("bn_a")
    gamma, beta, mean, var = (keras.ops.convert_to_numpy(w) for w in bn.weights)
    gamma[:4] = 0.0
    bn.set_weights([gamma, beta, mean, var])
    p = keras_slim.plan(m, target_latency_ms="60%", latency_model=_tiles, allocation="latency")
    # c_a's 4 zero-score channels are free: removed although they buy no tile
    assert {r.name: r.channels_after for r in p.layers}["c_a"] == 12


def test_allocation_errors():
    m = _model()
    with pytest.raises(keras_slim.ArgumentError, match="allocation must be one of"):
        keras_slim.plan(m, target_latency_ms="60%", latency_model=_tiles, allocation="macs")
    for kwargs in (dict(ratio=0.5), dict(target_macs=0.5)):
        with pytest.raises(keras_slim.ArgumentError, match="needs a latency target"):
            keras_slim.plan(m, allocation="latency", **kwargs)
