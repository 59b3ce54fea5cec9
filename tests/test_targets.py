"""plan(target_macs=/target_params=): the fewest channels that meet a budget."""
import numpy as np
import pytest

import keras_slim
from keras_slim import testing

from _models import conv_bn_relu_chain

pytestmark = pytest.mark.backend_agnostic  # pytest.ini; also run on KERAS_BACKEND=jax


def _model():
    return conv_bn_relu_chain((16, 24, 32), seed=4)


@pytest.mark.parametrize("goal", [0.3, 0.5, 0.8])
def test_macs_fraction_is_met_with_the_fewest_channels(goal):
    m = _model()
    p = keras_slim.plan(m, target_macs=goal)
    assert p.macs_after <= goal * p.macs_before
    assert p.target["goals"]["macs"] == int(goal * p.macs_before)
    assert p.target["reached"]["macs"] == p.macs_after
    # one channel fewer of the same ranking would miss the target
    fewer = keras_slim.plan(m, (p.removed_channels - 1) / p.prunable_channels)
    assert fewer.removed_channels == p.removed_channels - 1
    assert fewer.macs_after > goal * p.macs_before
    assert "target:   MACs <=" in p.summary()


def test_absolute_params_and_both_targets():
    m = _model()
    before = keras_slim.plan(m, 0.0).params_before
    p = keras_slim.plan(m, target_params=before // 3)
    assert p.params_after <= before // 3
    both = keras_slim.plan(m, target_params=0.6, target_macs=0.4, criterion="l1")
    assert both.params_after <= 0.6 * before and both.macs_after <= 0.4 * both.macs_before
    small = keras_slim.prune(m, target_macs=0.5)
    assert small.count_params() < m.count_params()


def test_target_plan_survives_json_and_reprunes_the_same():
    m = _model()
    p = keras_slim.plan(m, target_macs=0.5)
    back = keras_slim.Plan.from_json(p.to_json())
    assert back.target == p.target and back.kept == p.kept
    x = testing.random_inputs(m)
    assert testing.max_difference(keras_slim.prune(m, p), keras_slim.prune(m, back), x) == 0.0


def test_unreachable_and_bad_targets():
    m = _model()
    with pytest.raises(keras_slim.ModelError, match="cannot be met"):
        keras_slim.plan(m, target_macs=10, min_channels=8)
    for bad in (0, -0.5, True, "half"):
        with pytest.raises(keras_slim.ArgumentError, match="target_macs must be"):
            keras_slim.plan(m, target_macs=bad)
    with pytest.raises(keras_slim.ArgumentError, match="not several"):
        keras_slim.plan(m, 0.5, target_macs=0.5)
    with pytest.raises(keras_slim.ArgumentError, match="not several"):
        keras_slim.plan(m, threshold=0.1, target_params=0.5)


def test_target_one_keeps_the_model():
    m = _model()
    p = keras_slim.plan(m, target_macs=1.0)
    assert p.removed_channels == 0 and p.macs_after == p.macs_before
    assert np.isclose(p.ratio, 0.0)


# ---------------------------------------------------------------- latency targets
class _MacsLatency:
    """A stand-in latency model: 1 ms per million MACs plus 0.1 ms (no LiteRT needed)."""

    description = "1 ms per million MACs (test)"

    def __init__(self):
        self.calls = 0

    def estimate(self, layers):
        self.calls += 1
        return 0.1 + sum(r.macs_after for r in layers) / 1e6


def test_latency_target_in_ms_and_as_a_share_meets_the_estimate_with_the_fewest_channels():
    m = _model()
    lm = _MacsLatency()
    full = 0.1 + keras_slim.plan(m, 0.0).macs_before / 1e6
    for requested, goal in ((0.5 * full, 0.5 * full), ("40%", 0.4 * full)):
        p = keras_slim.plan(m, target_latency_ms=requested, latency_model=lm)
        reached = p.target["reached"]["latency_ms"]
        assert reached == pytest.approx(0.1 + p.macs_after / 1e6) and reached <= goal + 1e-12
        assert p.target["goals"]["latency_ms"] == pytest.approx(goal)
        assert p.target["before"]["latency_ms"] == pytest.approx(full)
        assert p.target["estimate"] == lm.description
        fewer = keras_slim.plan(m, (p.removed_channels - 1) / p.prunable_channels)
        assert 0.1 + fewer.macs_after / 1e6 > goal  # one channel fewer misses it
        assert "latency <=" in p.summary() and "1 ms per million MACs (test)" in p.summary()
    assert p.target["requested"] == {"target_latency_ms": "40%"}
    assert lm.calls < 2 * np.log2(p.prunable_channels) + 6  # a bisection, not a scan
    back = keras_slim.Plan.from_json(p.to_json())
    assert back.target == p.target and back.kept == p.kept
    # a plain function is a latency model too, combined with a MACs target
    both = keras_slim.plan(m, target_latency_ms=0.6 * full, target_macs=0.3,
                           latency_model=lambda layers: 0.1 + sum(r.macs_after for r in layers) / 1e6)
    assert both.macs_after <= 0.3 * both.macs_before
    assert both.target["reached"]["latency_ms"] <= 0.6 * full


def test_bad_latency_targets():
    m = _model()
    lm = _MacsLatency()
    for bad in (0, -1.0, True, "0%", "120%", "fast", "%"):
        with pytest.raises(keras_slim.ArgumentError, match="target_latency_ms must be"):
            keras_slim.plan(m, target_latency_ms=bad, latency_model=lm)
    with pytest.raises(keras_slim.ArgumentError, match="only used with target_latency_ms"):
        keras_slim.plan(m, 0.5, latency_model=lm)
    with pytest.raises(keras_slim.ArgumentError, match="not several"):
        keras_slim.plan(m, 0.5, target_latency_ms=1.0, latency_model=lm)
    with pytest.raises(keras_slim.ArgumentTypeError, match="latency_model must have"):
        keras_slim.plan(m, target_latency_ms=1.0, latency_model=3)
    with pytest.raises(keras_slim.ModelError, match=r"latency_ms .* ms \(target 1e-06 ms\)"):
        keras_slim.plan(m, target_latency_ms=1e-6, latency_model=lm)
    with pytest.raises(keras_slim.ArgumentTypeError, match="not a number of milliseconds"):
        keras_slim.plan(m, target_latency_ms=1.0, latency_model=lambda layers: "fast")
