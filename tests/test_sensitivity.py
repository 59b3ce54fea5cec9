"""sensitivity(): one group at a time; plan(sensitivity=..., max_metric_drop=...)."""
import keras
import numpy as np
import pytest

import keras_slim
from keras_slim import testing

pytestmark = pytest.mark.backend_agnostic  # pytest.ini; also run on KERAS_BACKEND=jax


def _model():
    x = inp = keras.Input((10, 10, 3))
    for i, width in enumerate((8, 12)):
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"c{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"r{i}")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(3, name="head")(x)
    m = keras.Model(inp, out)
    testing.randomize_batchnorm(m, seed=1)
    # bn1's channels 0..5 are dead (gamma = beta = 0): its group tolerates up to half
    bn = m.get_layer("bn1")
    gamma, beta = bn.gamma.numpy(), bn.beta.numpy()
    gamma[:6], beta[:6] = 0.0, 0.0
    bn.gamma.assign(gamma)
    bn.beta.assign(beta)
    return m


def _evaluate_against(m):
    x = testing.random_inputs(m, batch=8)
    reference = m(x)

    def evaluate(model):  # higher is better: minus the output error
        as_np = keras.ops.convert_to_numpy  # torch outputs that require grad refuse np.asarray
        return -float(np.abs(as_np(model(x)) - as_np(reference)).max())
    return evaluate


def test_dead_channels_tolerated_live_ones_not():
    m = _model()
    result = keras_slim.sensitivity(m, _evaluate_against(m), ratios=(0.25, 0.5, 0.75), verbose=0)
    by_name = {g["name"]: g for g in result.groups}
    assert set(by_name) == {"bn0", "bn1"} or set(by_name) == {"c0", "c1"}
    second = next(g for g in result.groups if "bn1" in g["layers"])
    first = next(g for g in result.groups if "bn0" in g["layers"])
    assert second["metrics"][:2] == pytest.approx([0.0, 0.0], abs=1e-5)  # 3 and 6 dead of 12
    assert second["metrics"][2] < -1e-4  # 9 of 12: live channels go
    assert first["metrics"][0] < -1e-4  # bn0 has no dead channel
    ratios = result.group_ratios(1e-5)
    assert ratios == {second["name"]: 0.5}
    p = keras_slim.plan(m, sensitivity=result, max_metric_drop=1e-5)
    assert p.removed_channels == 6
    small = keras_slim.prune(m, p)
    assert testing.max_difference(m, small, testing.random_inputs(m)) < 1e-5
    assert "baseline" in result.table() and second["name"] in str(result)
    again = keras_slim.SensitivityResult.from_dict(result.to_dict())
    assert again.group_ratios(1e-5) == ratios


def test_group_ratios_directly_and_errors():
    m = _model()
    p = keras_slim.plan(m, group_ratios={"c1": 0.5})
    assert p.removed_channels == 6 and p.kept["c1"] == list(range(6, 12))
    with pytest.raises(keras_slim.ArgumentError, match="in no prunable group"):
        keras_slim.plan(m, group_ratios={"head": 0.5})
    with pytest.raises(keras_slim.ArgumentError, match="must be a ratio"):
        keras_slim.plan(m, group_ratios={"c1": 1.0})
    with pytest.raises(keras_slim.ArgumentError, match="not several"):
        keras_slim.plan(m, 0.5, group_ratios={"c1": 0.5})
    with pytest.raises(keras_slim.ArgumentError, match="together"):
        keras_slim.plan(m, max_metric_drop=0.1)
    with pytest.raises(keras_slim.ArgumentError, match="ratios must be fractions"):
        keras_slim.sensitivity(m, _evaluate_against(m), ratios=(0.5, 1.0), verbose=0)
    with pytest.raises(keras_slim.ArgumentTypeError, match="one number"):
        keras_slim.sensitivity(m, lambda model: [1, 2], ratios=(0.5,), verbose=0)
    with pytest.raises(keras_slim.ArgumentError, match="max_metric_drop"):
        keras_slim.SensitivityResult(0.0, [0.5], []).group_ratios(-1)


def test_only_named_groups_and_a_loss_metric():
    m = _model()
    evaluate = _evaluate_against(m)
    result = keras_slim.sensitivity(m, lambda model: -evaluate(model), ratios=(0.5,),
                                    groups=["c1"], higher_is_better=False, verbose=0)
    assert [g["name"] for g in result.groups] == [result.groups[0]["layers"][0]]
    assert "c1" in result.groups[0]["layers"]
    assert result.group_ratios(1e-5) == {result.groups[0]["name"]: 0.5}


def test_plot_sensitivity(tmp_path):
    pytest.importorskip("matplotlib")
    from keras_slim.training import plots

    result = keras_slim.SensitivityResult(
        0.9, [0.25, 0.5], [dict(name="c0", layers=["c0"], channels=8, metrics=[0.89, 0.7])])
    path = plots.plot_sensitivity(result, tmp_path / "s.png")
    assert (tmp_path / "s.png").stat().st_size > 1000 and path.endswith("s.png")
    with pytest.raises(TypeError, match="SensitivityResult"):
        plots.plot_sensitivity({"groups": []}, tmp_path / "t.png")


def test_taylor_gradients_are_computed_once_and_give_the_same_table(monkeypatch):
    from keras_slim import taylor

    m = _model()
    rng = np.random.default_rng(0)
    data = (rng.normal(size=(16, 10, 10, 3)).astype("float32"), rng.integers(0, 3, 16))
    options = dict(criterion="taylor", data=data, loss="sparse_categorical_crossentropy")
    calls = []
    compute = taylor._filter_terms
    monkeypatch.setattr(taylor, "_filter_terms", lambda *a: calls.append(1) or compute(*a))
    result = keras_slim.sensitivity(m, _evaluate_against(m), ratios=(0.25, 0.5), verbose=0,
                                    **options)
    assert len(calls) == 1  # base plan + 2 groups x 2 ratios would be 5 without reuse
    # the same table from plans that each compute their own gradients
    evaluate = _evaluate_against(m)
    for g in result.groups:
        expected = [evaluate(keras_slim.prune(m, keras_slim.plan(m, group_ratios={g["name"]: r},
                                                                 **options)))
                    for r in result.ratios]
        assert g["metrics"] == pytest.approx(expected, abs=1e-6)
    assert len(calls) == 1 + len(result.groups) * len(result.ratios)
    # outside sensitivity nothing is kept
    keras_slim.plan(m, 0.3, **options)
    keras_slim.plan(m, 0.3, **options)
    assert len(calls) == 3 + len(result.groups) * len(result.ratios)


def test_groups_that_share_a_batchnorm_are_named_by_their_own_layers():
    """A BN after a Concatenate is in both producers' groups: each is named by its producer,
    evaluated on its own, and a name shared by two groups is refused, not guessed."""
    i = keras.Input((8, 8, 3))
    t = keras.layers.Concatenate()([keras.layers.Conv2D(8, 3, padding="same", name="c1")(i),
                                    keras.layers.Conv2D(8, 3, padding="same", name="c2")(i)])
    t = keras.layers.ReLU()(keras.layers.BatchNormalization(name="bnf")(t))
    m = keras.Model(i, keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(t)))
    keras_slim.testing.randomize_batchnorm(m, 0)
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype("float32")
    y0 = np.asarray(m(x))
    seen = []

    def evaluate(small):
        seen.append({n: small.get_layer(n).filters for n in ("c1", "c2")})
        return -float(np.mean((np.asarray(small(x)) - y0) ** 2))

    r = keras_slim.sensitivity(m, evaluate, ratios=[0.5], verbose=0)
    assert sorted(g["name"] for g in r.groups) == ["c1", "c2"]
    assert {"c1": 4, "c2": 8} in seen and {"c1": 8, "c2": 4} in seen
    assert sorted(r.group_ratios(1e9)) == ["c1", "c2"]
    with pytest.raises(keras_slim.ArgumentError, match="'bnf', which is in 2 groups.*'c1', 'c2'"):
        keras_slim.plan(m, group_ratios={"bnf": 0.5})
    with pytest.raises(keras_slim.ArgumentError, match="in 2 groups"):
        keras_slim.sensitivity(m, evaluate, ratios=[0.5], groups=["bnf"], verbose=0)
    one = keras_slim.sensitivity(m, evaluate, ratios=[0.5], groups="c2", verbose=0)
    assert [g["name"] for g in one.groups] == ["c2"]
