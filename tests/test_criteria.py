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
    bn = _conv_bn_dense()
    assert keras_slim.plan(bn, 0.5, normalize=None).kept == keras_slim.plan(bn, 0.5).kept
    with pytest.raises(keras_slim.ArgumentError, match="normalize='median' is not known"):
        keras_slim.plan(bn, 0.5, normalize="median")
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


# ---------------------------------------------------------------- taylor
def _conv_bn_dense():
    x = inp = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(5, 3, name="conv", bias_initializer="glorot_uniform")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(4, activation="relu", name="hidden",
                           bias_initializer="glorot_uniform")(x)
    out = keras.layers.Dense(3, name="head")(x)
    m = keras.Model(inp, out)
    testing.randomize_batchnorm(m, seed=3)
    return m


def _numpy_loss(w: dict, x, y):
    """The model above in float64 NumPy (inference BN), with Keras' mean squared error."""
    patches = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(1, 2))  # b,4,4,c,3,3
    z = np.einsum("bijcuv,uvcf->bijf", patches, w["conv"]) + w["conv_b"]
    z = w["gamma"] * (z - w["mean"]) / np.sqrt(w["var"] + 1e-3) + w["beta"]
    h = np.maximum(np.maximum(z, 0).mean(axis=(1, 2)) @ w["hidden"] + w["hidden_b"], 0)
    return float((((h @ w["head"] + w["head_b"]) - y) ** 2).mean())


def _numpy_taylor_terms(m, batches, layer, eps=1e-6):
    """d/da loss(filter c scaled by a) at a = 1, i.e. sum(w * dL/dw) over filter c, per batch
    (central differences of the NumPy model: no Keras gradient involved)."""
    g = lambda name: m.get_layer(name).get_weights()
    w = dict(zip(["conv", "conv_b"], g("conv")), **dict(zip(["gamma", "beta", "mean", "var"],
             g("bn"))), **dict(zip(["hidden", "hidden_b"], g("hidden"))),
             **dict(zip(["head", "head_b"], g("head"))))
    w = {k: np.asarray(v, np.float64) for k, v in w.items()}
    out = np.zeros((w[layer].shape[-1], len(batches)))
    for b, (x, y) in enumerate(batches):
        for c in range(out.shape[0]):
            def at(a):
                scaled = dict(w)
                scaled[layer] = w[layer].copy()
                scaled[layer][..., c] *= a
                return _numpy_loss(scaled, np.asarray(x, np.float64), np.asarray(y, np.float64))
            out[c, b] = (at(1 + eps) - at(1 - eps)) / (2 * eps)
    return out


def _taylor_data(seed=0, n=16):
    rng = np.random.default_rng(seed)
    return (rng.uniform(-1, 1, (n, 6, 6, 2)).astype("float32"),
            rng.uniform(-1, 1, (n, 3)).astype("float32"))


def test_taylor_scores_match_a_numpy_reference_and_the_cut_takes_the_lowest():
    m = _conv_bn_dense()
    x, y = _taylor_data()
    batches = [(x[:8], y[:8]), (x[8:], y[8:])]
    before = m.get_weights()
    p = keras_slim.plan(m, 1 / 3, criterion="taylor", data=batches, loss="mse",
                        normalize=None)
    assert all(np.array_equal(a, b) for a, b in zip(before, m.get_weights()))  # BN stats too
    scored = {name: s for name, _, s in p._state.coupling.scored}
    expected = {}
    for layer in ("conv", "hidden"):
        terms = _numpy_taylor_terms(m, batches, layer)
        expected[layer] = np.abs(terms).mean(axis=1)  # |sum(w * grad)| per batch, averaged
        np.testing.assert_allclose(scored[layer], expected[layer], rtol=2e-3, atol=1e-7)
    assert p.options["normalize"] is None  # asked for: estimated loss changes compared raw
    auto = keras_slim.plan(m, 1 / 3, criterion="taylor", data=batches, loss="mse")
    assert auto.options["normalize"] == "mean"  # the default, as for the other filter criteria
    # the cut: the 3 lowest of the 9 prunable channels (conv 5 + hidden 4), globally
    ranked = sorted((s, layer, c) for layer in expected for c, s in enumerate(expected[layer]))
    gone = {(layer, c) for _, layer, c in ranked[:3]}
    kept = {(layer, c) for layer, n in (("conv", 5), ("hidden", 4))
            for c in p.kept.get(layer, range(n))}
    assert p.removed_channels == 3 and kept == {(layer, c) for _, layer, c in ranked[3:]}
    assert not gone & kept
    # one (x, y) pair of arrays is one batch of 32 here; the compiled loss is the default
    m.compile(loss="mean_squared_error")
    whole = keras_slim.plan(m, 1 / 3, criterion="taylor", data=(x, y), normalize=None)
    scored = {name: s for name, _, s in whole._state.coupling.scored}
    np.testing.assert_allclose(scored["conv"], np.abs(_numpy_taylor_terms(
        m, [(x, y)], "conv")[:, 0]), rtol=2e-3, atol=1e-7)


def test_taylor_without_bn_cuts_zero_filters_first_and_stays_exact():
    x = inp = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1",
                            bias_initializer="ones")(x)
    x = keras.layers.Conv2D(10, 3, activation="relu", name="c2", bias_initializer="ones")(x)
    x = keras.layers.DepthwiseConv2D(3, name="dw")(x)
    out = keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling2D()(x))
    m = keras.Model(inp, out)
    kernel, bias = m.get_layer("c1").get_weights()
    kernel[..., [2, 5]] = 0.0  # two zero filters: they emit relu(1), folded into c2 exactly
    m.get_layer("c1").set_weights([kernel, bias])
    rng = np.random.default_rng(1)
    data = [(rng.uniform(-1, 1, (8, 12, 12, 3)).astype("float32"),
             rng.integers(0, 3, 8)) for _ in range(2)]
    p = keras_slim.plan(m, threshold=1e-12, criterion="taylor", data=data,
                        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert p.kept["c1"] == [0, 1, 3, 4, 6, 7] and p.removed_channels == 2
    small = keras_slim.prune(m, p)
    assert testing.max_difference(m, small, testing.random_inputs(m)) < 1e-5
    # the depthwise taps are members of c2's classes, scored with it (mean of the members)
    members = p._state.coupling.members()
    assert any({mm.layer for mm in ms} == {"c2", "dw"} for ms in members.values())
    # a saved taylor plan replays without data (the channels are given)
    again = keras_slim.prune(m, keras_slim.Plan.from_json(p.to_json()))
    assert testing.max_difference(small, again, testing.random_inputs(m)) == 0.0


def test_taylor_argument_errors():
    m = _conv_bn_dense()
    x, y = _taylor_data()
    with pytest.raises(keras_slim.ArgumentError, match="pass data="):
        keras_slim.plan(m, 0.3, criterion="taylor")
    with pytest.raises(keras_slim.ArgumentError, match="does not use data"):
        keras_slim.plan(m, 0.3, criterion="l1", data=(x, y))
    with pytest.raises(keras_slim.ArgumentError, match="loss given"):
        keras_slim.plan(m, 0.3, loss="mse")
    with pytest.raises(keras_slim.ArgumentError, match="needs a loss"):
        keras_slim.plan(m, 0.3, criterion="taylor", data=(x, y))  # not compiled
    with pytest.raises(keras_slim.ArgumentError, match="not a Keras loss name"):
        keras_slim.plan(m, 0.3, criterion="taylor", data=(x, y), loss="msee")
    with pytest.raises(keras_slim.ArgumentError, match="batch 0 is a"):
        keras_slim.plan(m, 0.3, criterion="taylor", data=[x], loss="mse")
    with pytest.raises(keras_slim.ArgumentError, match="yielded no batch"):
        keras_slim.plan(m, 0.3, criterion="taylor", data=[], loss="mse")
    with pytest.raises(keras_slim.ArgumentError, match="could not be run on data batch 0"):
        keras_slim.plan(m, 0.3, criterion="taylor", data=[(x[:, :4], y)], loss="mse")
    with pytest.raises(keras_slim.ArgumentError, match="other than"):
        criteria.register_criterion("taylor", lambda rows: rows.sum(1))


def _two_bn_scales():
    """Two conv-BN layers whose |gamma| differ by 100x: raw ranking cuts only the first."""
    x = inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="c1")(x)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(8, 3, padding="same", name="c2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    m = keras.Model(inp, keras.layers.Dense(3, name="head")(x))
    rng = np.random.default_rng(0)
    g1, g2 = rng.uniform(0.01, 0.02, 8), rng.uniform(1.0, 2.0, 8)
    m.get_layer("bn1").gamma.assign(g1 * np.sign(rng.normal(size=8)))  # the sign is ignored
    m.get_layer("bn2").gamma.assign(g2)
    return m, g1, g2


@pytest.mark.parametrize("normalize", ["mean", "max"])
def test_bn_scale_normalised_within_each_bn(normalize):
    """Each BN's |gamma| over that BN's mean (max), then one global ranking (numpy reference)."""
    m, g1, g2 = _two_bn_scales()
    raw = keras_slim.plan(m, 0.5)
    assert len(raw.kept["bn1"]) == 1 and "bn2" not in raw.kept  # bn1 cut to min_channels
    p = keras_slim.plan(m, 0.5, normalize=normalize, min_channels=1)
    assert p.options["normalize"] == normalize
    div = np.mean if normalize == "mean" else np.max
    scores = {("bn1", i): v for i, v in enumerate(g1 / div(g1))}
    scores.update({("bn2", i): v for i, v in enumerate(g2 / div(g2))})
    cut = sorted(scores, key=scores.get)[:8]  # half of the 16 channels, lowest first
    for name in ("bn1", "bn2"):
        expected = sorted(i for layer, i in scores if layer == name and (layer, i) not in cut)
        assert p.kept.get(name, list(range(8))) == expected, name
    assert 2 <= len(p.kept["bn1"]) <= 6  # no layer is cut to nothing, unlike the raw ranking
    again = keras_slim.Plan.from_json(p.to_json())
    x = testing.random_inputs(m)
    assert testing.max_difference(keras_slim.prune(m, p), keras_slim.prune(m, again), x) == 0.0


@pytest.mark.parametrize("seed", range(4))
def test_bn_scale_normalised_is_exact_on_random_graphs(seed):
    """Zero stays zero: dead and constant (act(beta)) channels prune exactly under "mean"."""
    model = testing.random_model(seed, constants=True)
    r = testing.exactness(model, 0.4, seed=seed, constants=True, normalize="mean")
    assert r.killed > 0 and r.plan.options["normalize"] == "mean"
    assert r.difference < 1e-4, r.difference


def test_bottleneck_warning_names_normalize_and_mean_avoids_it():
    """Raw |gamma| cut a small-gamma layer to one channel; the warning names the fix."""
    x = inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(64, 3, padding="same", name="c1")(x)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.Conv2D(64, 3, padding="same", name="c2")(keras.layers.ReLU()(x))
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
    m = keras.Model(inp, keras.layers.Dense(3, name="head")(x))
    rng = np.random.default_rng(1)
    m.get_layer("bn1").gamma.assign(rng.uniform(0.01, 0.02, 64))
    m.get_layer("bn2").gamma.assign(rng.uniform(1.0, 2.0, 64))
    with pytest.warns(UserWarning, match="normalize='mean'") as caught:
        raw = keras_slim.plan(m, 0.5)
    # (other warnings may be recorded too: JAX's numpy copy= deprecation)
    message = [str(w.message) for w in caught if "almost no output" in str(w.message)]
    assert "'c1' (1 of 64)" in message[0] and len(raw.kept["bn1"]) == 1
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        mean = keras_slim.plan(m, 0.5, normalize="mean")
    assert 16 <= len(mean.kept["bn1"]) <= 48
