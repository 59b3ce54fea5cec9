"""slim_multipass: targets, stopping rules, fine-tuning hooks and argument checks."""
import json
import logging

import keras
import numpy as np
import pytest
from keras import layers

from keras_slim.training import MultiPassResult, slim_multipass

pytestmark = pytest.mark.backend_agnostic  # pytest.ini; also run on KERAS_BACKEND=jax

WIDTH = 8  # two conv+BN layers of 8 channels: 16 prunable channels


def _model(compiled: bool = False) -> keras.Model:
    inp = keras.Input((8, 8, 3))
    x = inp
    for i in range(2):
        x = layers.Conv2D(WIDTH, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = layers.ReLU(name=f"relu{i}")(x)
    x = layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, layers.Dense(3, name="head")(x), name="tiny")
    rng = np.random.default_rng(1)
    for i in range(2):  # distinct factors so every plan is deterministic
        model.get_layer(f"bn{i}").gamma.assign(rng.uniform(0.01, 1.0, WIDTH).astype("float32"))
    if compiled:
        _compile(model)
    return model


def _compile(model):
    model.compile(keras.optimizers.SGD(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])


def _widths(model) -> list[int]:
    return [model.get_layer(f"bn{i}").gamma.shape[0] for i in range(2)]


def _data(n=32):
    rng = np.random.default_rng(0)
    return rng.random((n, 8, 8, 3)).astype("float32"), rng.integers(0, 3, n)


def _scripted(values):
    """An evaluate() that returns `values` in call order (baseline, then pruned/tuned per pass)."""
    it = iter(values)
    return lambda model: next(it)


def test_target_ratio_is_reached_exactly_in_capped_passes(caplog):
    model = _model()
    before = [w.copy() for w in model.get_weights()]
    with caplog.at_level(logging.WARNING, logger="keras_slim.training.multipass"):
        result = slim_multipass(model, target_ratio=0.6, per_pass_ratio=0.5,
                                max_layer_ratio=0.5, sparsity=None)
    assert "no fine_tune or fit_kwargs" in caplog.text
    assert isinstance(result, MultiPassResult)
    assert result.stop_reason == "target_reached"
    assert result.original_channels == 16
    assert sum(_widths(result.best_model)) == 16 - round(0.6 * 16)
    assert result.cumulative_ratio == pytest.approx(10 / 16)
    assert len(result.passes) >= 2  # 50% per layer per pass cannot remove 10 of 16 at once
    for p in result.passes:
        assert p.ratio <= 0.5 + 1e-9 and p.accepted
        assert p.params_after < p.params_before and p.macs_after < p.macs_before
    assert result.passes[-1].params_after == result.best_model.count_params()
    assert result.final_model is result.best_model is result.model
    for a, b in zip(before, model.get_weights()):  # the input model is untouched
        np.testing.assert_array_equal(a, b)


def test_accuracy_drop_rejects_the_pass_and_keeps_the_last_good_model():
    model = _model()
    # baseline 0.90; pass 1: pruned 0.50, tuned 0.895 (ok); pass 2: pruned 0.4, tuned 0.85 (drop 5%)
    evaluate = _scripted([0.90, 0.50, 0.895, 0.40, 0.85])
    tuned = []
    result = slim_multipass(model, per_pass_ratio=0.25, max_layer_ratio=None,
                            fine_tune=tuned.append, evaluate=evaluate,
                            max_accuracy_drop=0.01, max_passes=5, sparsity=None)
    assert result.stop_reason == "accuracy_drop"
    assert [p.accepted for p in result.passes] == [True, False]
    assert result.baseline_accuracy == 0.90
    assert result.accuracy == 0.895
    assert result.best_pass.index == 1
    assert result.best_model is tuned[0] and result.final_model is tuned[1]
    assert sum(_widths(result.best_model)) == 12 and sum(_widths(result.final_model)) == 9
    assert result.params == result.passes[0].params_after
    assert [p.accuracy_pruned for p in result.passes] == [0.50, 0.40]


def test_fit_kwargs_trains_pruned_models_with_the_sparsity_penalty():
    model = _model(compiled=True)
    x, y = _data()
    compiled = []

    def compile_fn(m):
        compiled.append(m)
        _compile(m)

    def evaluate(m):
        return float(np.mean(np.argmax(m.predict(x, verbose=0), -1) == y))

    result = slim_multipass(model, target_ratio=0.5, per_pass_ratio=0.3, max_layer_ratio=0.5,
                            fit_kwargs=dict(x=x, y=y, epochs=1, batch_size=16, verbose=0),
                            evaluate=evaluate, sparsity=1e-3, compile_fn=compile_fn)
    assert result.stop_reason == "target_reached"
    assert len(compiled) == len(result.passes) >= 2
    best = result.best_model
    regs = [best.get_layer(f"bn{i}").gamma.regularizer for i in range(2)]
    assert all(r is not None and r.strength == pytest.approx(1e-3) for r in regs)
    assert len(best.losses) == 2
    assert best.optimizer.iterations.numpy() == 2  # trained: 32 images / batch 16
    assert all(0.0 <= p.accuracy_fine_tuned <= 1.0 for p in result.passes)


def test_sparsity_zero_removes_the_penalty():
    model = _model()
    from keras_slim.sparsity import add_bn_l1

    add_bn_l1(model, 1e-2)
    result = slim_multipass(model, max_passes=1, sparsity=0.0, fine_tune=lambda m: None)
    assert result.best_model.losses == []
    assert result.stop_reason == "max_passes" and len(result.passes) == 1


def test_fit_kwargs_needs_a_compiled_model_or_compile_fn():
    x, y = _data()
    with pytest.raises(ValueError, match="compile_fn"):
        slim_multipass(_model(compiled=False), max_passes=1, fit_kwargs=dict(x=x, y=y))


def test_nothing_to_prune_when_the_layer_cap_allows_nothing():
    model = _model()
    result = slim_multipass(model, target_ratio=0.5, max_layer_ratio=0.1, sparsity=None,
                            fine_tune=lambda m: None)
    assert result.stop_reason == "nothing_to_prune"
    assert result.passes == []
    assert result.best_model is model and result.final_model is model
    assert result.cumulative_ratio == 0.0 and result.params == model.count_params()


def test_target_macs_fraction_stops_once_reached():
    model = _model()
    result = slim_multipass(model, target_macs=0.5, per_pass_ratio=0.5, max_layer_ratio=None,
                            sparsity=None, fine_tune=lambda m: None)
    assert result.stop_reason == "target_reached"
    assert result.macs <= 0.5 * result.original_macs
    before_last = result.passes[-1].macs_before
    assert before_last > 0.5 * result.original_macs  # it did not stop early or overshoot a pass
    absolute = slim_multipass(model, target_macs=result.macs, per_pass_ratio=0.5,
                              max_layer_ratio=None, sparsity=None, fine_tune=lambda m: None)
    assert absolute.macs <= result.macs


def test_result_serialises_and_tabulates():
    model = _model()
    result = slim_multipass(model, target_ratio=0.5, max_layer_ratio=0.5, sparsity=None,
                            fine_tune=lambda m: None, evaluate=lambda m: 0.5)
    data = json.loads(result.to_json())
    assert data["stop_reason"] == "target_reached"
    assert len(data["passes"]) == len(result.passes)
    assert "kept" in data["passes"][0]["plan"]
    assert "plan" not in result.to_dict(include_plans=False)["passes"][0]
    table = result.table()
    assert table.count("\n") == 2 + len(result.passes)
    assert "| 0 | - | - |" in table and "stopped: target_reached" in str(result)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(target_ratio=0.5, target_macs=0.5), ValueError, "at most one"),
    (dict(target_ratio=1.0), ValueError, r"target_ratio must be a number in \(0, 1\)"),
    (dict(target_macs=-3), ValueError, "target_macs must be a positive"),
    (dict(per_pass_ratio=0.0), ValueError, "per_pass_ratio"),
    (dict(max_layer_ratio=1.5), ValueError, "max_layer_ratio"),
    (dict(fine_tune=lambda m: None, fit_kwargs={}), ValueError, "not both"),
    (dict(fine_tune="fit"), TypeError, "fine_tune must be a callable"),
    (dict(fit_kwargs=[1]), TypeError, "fit_kwargs must be a dict"),
    (dict(max_accuracy_drop=0.01), ValueError, "needs evaluate"),
    (dict(max_accuracy_drop=-1, evaluate=lambda m: 1.0), ValueError, "max_accuracy_drop"),
    (dict(max_passes=0), ValueError, "max_passes"),
    (dict(sparsity=-1e-4), ValueError, "sparsity"),
    (dict(compile_fn=3), TypeError, "compile_fn"),
    (dict(plan_options={"ratio": 0.3}), ValueError, "plan_options may not set"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        slim_multipass(_model(), **kwargs)


def test_evaluate_must_return_a_number():
    with pytest.raises(TypeError, match="evaluate must return a number"):
        slim_multipass(_model(), evaluate=lambda m: "good")


def test_subclassed_model_is_refused():
    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(TypeError, match="subclassed"):
        slim_multipass(Sub())
