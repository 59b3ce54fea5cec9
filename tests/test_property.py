"""Property: on random graphs, pruning dead or constant channels never changes outputs."""
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keras_slim import testing

from _models import PROPERTY_EXAMPLES

pytestmark = pytest.mark.backend_agnostic  # pytest.ini; also run on KERAS_BACKEND=jax


def _run(seed, fraction, constants, image_layers=False):
    model = testing.random_model(seed, constants=constants, image_layers=image_layers)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = testing.exactness(model, fraction=fraction, seed=seed, constants=constants)
    replay = (f"replay: testing.random_model({seed}, constants={constants}, "
              f"image_layers={image_layers})")
    assert r.difference < 1e-4, f"seed {seed}: outputs differ by {r.difference} ({replay})"
    # the plan counts the biases folding gives bias-free layers
    assert r.model.count_params() == r.plan.params_after, f"seed {seed}: {replay}"
    if r.killed:  # something really went: a test that removes nothing proves nothing
        assert r.plan.removed_channels > 0, f"seed {seed}: {r.killed} classes killed, none removed"
    return r


@settings(max_examples=PROPERTY_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), fraction=st.sampled_from([0.2, 0.5, 0.8]))
def test_random_graphs_prune_exactly(seed, fraction):
    _run(seed, fraction, constants=False)


@settings(max_examples=PROPERTY_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), fraction=st.sampled_from([0.3, 0.6, 0.9]))
def test_random_graphs_with_constant_channels_prune_exactly(seed, fraction):
    """gamma = 0, beta != 0, activations with act(0) != 0, every reader type."""
    _run(seed, fraction, constants=True)


@settings(max_examples=max(3, PROPERTY_EXAMPLES // 3), deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), fraction=st.sampled_from([0.3, 0.6]))
def test_random_graphs_with_image_layers_prune_exactly(seed, fraction):
    """Resizing (bilinear, nearest, bicubic) and RandomFlip between blocks, constants on."""
    _run(seed, fraction, constants=True, image_layers=True)


def test_image_layer_graphs_resize_and_remove_channels():
    """Seeds 0-7 with image layers: Resizing appears, and channels go through it."""
    resized = removed = 0
    for seed in range(8):
        r = _run(seed, 0.6, constants=True, image_layers=True)
        kinds = {type(layer).__name__ for layer in r.model.layers}
        resized += "Resizing" in kinds
        removed += r.plan.removed_channels
    assert resized >= 2 and removed > 0
    """Across a fixed batch of seeds, every reader kind appears and constants are folded."""
    seen, removed, killed = set(), 0, 0
    for seed in range(12):
        model = testing.random_model(seed, constants=True)
        kinds = {type(layer).__name__ for layer in model.layers}
        seen |= kinds
        r = _run(seed, 0.6, constants=True)
        removed += r.plan.removed_channels
        killed += r.killed
    for cls in ("Conv1D", "Conv2D", "Conv3D", "SeparableConv2D", "DepthwiseConv2D",
                "Conv2DTranspose", "Dense", "Flatten", "GlobalAveragePooling2D"):
        assert cls in seen, f"no {cls} in the constant-mode graphs of seeds 0-11"
    assert killed > 0 and removed > 0
