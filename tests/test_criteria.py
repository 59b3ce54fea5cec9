"""Filter criteria (l1, l2, fpgm, registered ones): scores, ranking, models without BN."""
import keras
import numpy as np
import pytest

import keras_slim
from keras_slim import criteria, testing

pytestmark = pytest.mark.backend_agnostic  # pytest.ini; also run on KERAS_BACKEND=jax


@pytest.fixture(autouse=True)
def _criteria_registry():
    """Criteria a test registers do not outlive it."""
    saved = dict(criteria._FILTER_CRITERIA)
    yield
    criteria._FILTER_CRITERIA.clear()
    criteria._FILTER_CRITERIA.update(saved)


def _no_bn(bias_init="zeros"):
    x = inp = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1",
                            bias_initializer=bias_init)(x)
    x = keras.layers.Conv2D(10, 3, activation="relu", name="c2", bias_initializer=bias_init)(x)
    x = keras.layers.DepthwiseConv2D(3, name="dw")(x)
    x = keras.layers.Conv2D(6, 1, activation="sigmoid", name="c3")(x)  # sigmoid(0) != 0
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(7, activation="relu", name="d1")(x)
    out = keras.layers.Dense(3, name="head")(x)
    return keras.Model(inp, out)


def _filters_of(p, name):
    return [rows for layer, _, rows in p._state.coupling.filters if layer == name][0]


def test_scores_match_numpy_reference():
    m = _no_bn()
    p = keras_slim.plan(m, 0.3, criterion="l1", normalize=None)
    kernel = m.get_layer("c2").kernel.numpy()  # (3, 3, 8, 10): one filter per last index
    rows = kernel.reshape(-1, 10).T
    np.testing.assert_allclose(_filters_of(p, "c2"), rows)
    scored = dict((name, s) for name, _, s in criteria.filter_scores(
        p._state.coupling.filters, "l1", None))
    np.testing.assert_allclose(scored["c2"], np.abs(rows).sum(1), rtol=1e-6)
    l2 = dict((n, s) for n, _, s in criteria.filter_scores(p._state.coupling.filters, "l2", None))
    np.testing.assert_allclose(l2["c2"], np.sqrt((rows ** 2).sum(1)), rtol=1e-6)
    fpgm = dict((n, s) for n, _, s in criteria.filter_scores(p._state.coupling.filters, "fpgm", None))
    reference = np.array([sum(np.linalg.norm(a - b) for b in rows) for a in rows])
    np.testing.assert_allclose(fpgm["c2"], reference, rtol=1e-5)
    mean = dict((n, s) for n, _, s in criteria.filter_scores(p._state.coupling.filters, "l1", "mean"))
    np.testing.assert_allclose(mean["c2"], scored["c2"] / scored["c2"].mean(), rtol=1e-6)
    # the depthwise taps are members of their input channel's class
    dw = m.get_layer("dw").kernel.numpy().reshape(-1, 10).T
    np.testing.assert_allclose(_filters_of(p, "dw"), dw)


def test_ranking_cuts_the_weakest_filters():
    x = inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="only")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(2, name="head")(x)
    m = keras.Model(inp, out)
    norms = np.abs(m.get_layer("only").kernel.numpy()).reshape(-1, 16).sum(0)
    p = keras_slim.plan(m, 0.25, criterion="l1")
    assert p.kept["only"] == sorted(np.argsort(norms)[4:].tolist())


@pytest.mark.parametrize("criterion", ["l1", "l2"])
@pytest.mark.parametrize("bias", ["zeros", "ones"])
def test_model_without_bn_prunes_exactly(criterion, bias):
    m = _no_bn(bias)
    with pytest.raises(keras_slim.ModelError, match="criterion='l1'"):
        keras_slim.plan(m, 0.5)  # no scaling factor: the error says what to use instead
    r = testing.exactness(m, 0.4, seed=1, constants=bias == "ones", criterion=criterion,
                          border_folds=False)
    assert r.killed > 0 and r.plan.removed_channels >= r.killed
    assert r.model.count_params() < m.count_params()
    assert r.difference < 1e-5


def test_bn_without_scale_is_prunable_with_a_filter_criterion():
    x = inp = keras.Input((10, 10, 3))
    x = keras.layers.Conv2D(8, 3, use_bias=False, name="c1")(x)
    x = keras.layers.BatchNormalization(scale=False, name="bn1")(x)  # as InceptionV3 has
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(6, 3, name="c2")(x)
    out = keras.layers.GlobalAveragePooling2D()(x)
    m = keras.Model(inp, out)
    testing.randomize_batchnorm(m)
    with pytest.raises(ValueError):
        keras_slim.plan(m, 0.5)
    r = testing.exactness(m, 0.5, seed=2, constants=True, criterion="l1", border_folds=False)
    assert r.plan.removed_channels > 0 and r.difference < 1e-5


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("constants", [False, True])
def test_random_graphs_exact_under_filter_criterion(seed, constants):
    """BN graphs under "l1": a zeroed filter's channel is act(bias) through the BN affine."""
    m = testing.random_model(seed, constants=constants)
    r = testing.exactness(m, 0.4, seed, constants=constants, criterion="l1", border_folds=False)
    assert r.difference < 1e-4
    if r.killed:
        assert r.plan.removed_channels > 0


def test_registered_criterion_and_saved_plan():
    criteria.register_criterion("neg_l1_for_test", lambda rows: 1.0 / (1e-3 + np.abs(rows).sum(1)))
    m = _no_bn()
    p = keras_slim.plan(m, 0.3, criterion="neg_l1_for_test")
    l1 = keras_slim.plan(m, 0.3, criterion="l1")
    assert p.kept != l1.kept and p.options["criterion"] == "neg_l1_for_test"
    again = keras_slim.prune(m, keras_slim.Plan.from_json(p.to_json()))
    x = testing.random_inputs(m)
    assert testing.max_difference(keras_slim.prune(m, p), again, x) == 0.0


def test_bad_criterion_arguments():
    m = _no_bn()
    with pytest.raises(keras_slim.ArgumentError, match="criterion='l3' is not known"):
        keras_slim.plan(m, 0.5, criterion="l3")
    with pytest.raises(keras_slim.ArgumentError, match="normalize='sum' is not known"):
        keras_slim.plan(m, 0.5, criterion="l1", normalize="sum")
    with pytest.raises(keras_slim.ArgumentError, match="non-empty string"):
        criteria.register_criterion("bn_scale", lambda rows: rows.sum(1))
    criteria.register_criterion("bad_shape_for_test", lambda rows: rows.sum())
    with pytest.raises(keras_slim.ArgumentError, match="one per row"):
        keras_slim.plan(m, 0.5, criterion="bad_shape_for_test")


@pytest.mark.slow
@pytest.mark.parametrize("name, build, size", [
    ("VGG16 (no BN)", lambda: keras.applications.VGG16(
        weights=None, input_shape=(64, 64, 3), include_top=False, pooling="avg"), 64),
    ("InceptionV3 (BN scale=False)", lambda: keras.applications.InceptionV3(
        weights=None, input_shape=(96, 96, 3), include_top=False, pooling="avg"), 96),
])
def test_applications_the_paper_criterion_cannot_prune(name, build, size):
    m = build()
    with pytest.raises(keras_slim.ModelError):
        keras_slim.plan(m, 0.5)  # nothing for bn_scale to rank
    r = testing.exactness(m, 0.3, 0, constants=True, criterion="l1", border_folds=False,
                          input_size=size)
    assert r.killed > 0 and r.plan.removed_channels >= r.killed, name
    assert r.difference < 1e-4, name
