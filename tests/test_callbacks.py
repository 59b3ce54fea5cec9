"""SparsityMonitor: the |gamma| statistics it logs, on tiny models with known factors."""
import json
import logging

import keras
import numpy as np
import pytest
from keras import layers

from keras_slim.training import (
    DEFAULT_BIN_EDGES, SparsityMonitor, collect_gammas, gamma_statistics,
)

pytestmark = pytest.mark.backend_agnostic  # pytest.ini; also run on KERAS_BACKEND=jax

# 10 known scaling factors (signs must not matter: the monitor looks at |gamma|)
GAMMAS = np.array([1e-5, -5e-4, 2e-3, -8e-3, 0.03, 0.05, -0.2, 0.5, 1.0, -2.0], "float32")


def _tiny_model(n_bn: int = 2) -> keras.Model:
    inp = keras.Input((6, 6, 3))
    x = inp
    for i in range(n_bn):
        x = layers.Conv2D(5, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = layers.ReLU()(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, layers.Dense(3)(x))


def _set_gammas(model, values):
    values = np.asarray(values, "float32")
    i = 0
    for layer in model._flatten_layers():
        if isinstance(layer, layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.gamma.assign(values[i:i + n])
            i += n
    assert i == len(values)


def _frozen_fit(model, callbacks, epochs=2):
    """Fit with lr 0 so the factors stay exactly as set."""
    model.compile(keras.optimizers.SGD(0.0),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.rand(8, 6, 6, 3).astype("float32")
    y = np.random.randint(0, 3, 8)
    return model.fit(x, y, epochs=epochs, batch_size=4, verbose=0, callbacks=callbacks)


def test_gamma_statistics_known_values():
    s = gamma_statistics(GAMMAS, thresholds=(1e-3, 1e-2, 0.1), ratios=(0.5, 0.7))
    assert s["channels"] == 10
    assert s["below"] == {1e-3: 0.2, 1e-2: 0.4, 0.1: 0.6}
    # a global 50% prune removes the 5 smallest |gamma|: the cut is at the 5th, 0.03
    assert s["threshold_at"][0.5] == pytest.approx(0.03)
    assert s["threshold_at"][0.7] == pytest.approx(0.2)
    total = np.abs(GAMMAS).sum()
    assert s["mass_below"][0.5] == pytest.approx(np.sort(np.abs(GAMMAS))[:5].sum() / total)
    assert sum(s["counts"]) == 10
    assert s["counts"][0] == 1  # only 1e-5 is in the [0, 1e-4) bin
    assert s["max"] == pytest.approx(2.0)


def test_gamma_statistics_clips_large_values_into_last_bin():
    s = gamma_statistics(np.array([50.0, 0.5]))
    assert s["counts"][-1] == 1 and sum(s["counts"]) == 2


def test_gamma_statistics_rejects_empty():
    with pytest.raises(ValueError, match="no scaling factors"):
        gamma_statistics(np.zeros(0))


def test_monitor_puts_statistics_in_logs_history_and_logging(caplog):
    model = _tiny_model()
    _set_gammas(model, GAMMAS)
    mon = SparsityMonitor()
    with caplog.at_level(logging.INFO, logger="keras_slim.training.callbacks"):
        hist = _frozen_fit(model, [mon], epochs=2)
    assert set(mon.log_keys()) <= set(hist.history)
    assert hist.history["gamma_below_0.01"] == [pytest.approx(0.4)] * 2
    assert hist.history["gamma_thr_p50"][-1] == pytest.approx(0.03)
    assert hist.history["gamma_thr_p70"][-1] == pytest.approx(0.2)
    assert [r["epoch"] for r in mon.history] == [0, 1]
    assert len(mon.history[-1]["counts"]) == len(DEFAULT_BIN_EDGES) - 1
    lines = [r.getMessage() for r in caplog.records if r.name == "keras_slim.training.callbacks"]
    assert len(lines) == 2 and "10 BN channels" in lines[0] and "<0.01: 40.0%" in lines[0]
    json.dumps(mon.history)  # plain numbers only: the examples save it as JSON


def test_monitor_sees_sparsity_training_push_gammas_down():
    from keras_slim.sparsity import add_bn_l1

    model = _tiny_model()
    add_bn_l1(model, 0.05)
    model.compile(keras.optimizers.SGD(0.5),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    mon = SparsityMonitor()
    x = np.random.rand(16, 6, 6, 3).astype("float32")
    model.fit(x, np.random.randint(0, 3, 16), epochs=3, batch_size=8, verbose=0, callbacks=[mon])
    means = [r["mean"] for r in mon.history]
    assert means[-1] < means[0] < 1.0


def test_monitor_walks_nested_models():
    inner = _tiny_model(n_bn=1)
    inp = keras.Input((6, 6, 3))
    x = layers.Conv2D(3, 1, use_bias=False)(inp)
    x = layers.BatchNormalization(name="outer_bn")(x)
    x = layers.BatchNormalization(scale=False, name="no_scale")(x)  # has no gamma: skipped
    outer = keras.Model(inp, inner(x))
    gammas = collect_gammas(outer)
    assert sorted(gammas) == ["bn0", "outer_bn"]
    assert sum(g.size for g in gammas.values()) == 3 + 5
    mon = SparsityMonitor()
    _frozen_fit(outer, [mon], epochs=1)
    assert mon.history[0]["channels"] == 8


def test_monitor_every_and_last_epoch():
    model = _tiny_model()
    mon = SparsityMonitor(every=2, add_to_logs=False)
    hist = _frozen_fit(model, [mon], epochs=3)
    assert [r["epoch"] for r in mon.history] == [1, 2]  # epochs 2 and 3 (the last)
    assert not any(k.startswith("gamma_") for k in hist.history)


def test_monitor_writes_plot(tmp_path):
    pytest.importorskip("matplotlib")
    model = _tiny_model()
    path = tmp_path / "plots" / "gamma.png"
    mon = SparsityMonitor(plot_path=path)
    _frozen_fit(model, [mon], epochs=2)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_monitor_needs_batchnorm():
    inp = keras.Input((6, 6, 3))  # the data's shape: JAX's fit checks it before any callback
    model = keras.Model(inp, layers.Dense(2)(layers.Flatten()(inp)))
    with pytest.raises(ValueError, match="no BatchNormalization"):
        _frozen_fit(model, [SparsityMonitor()], epochs=1)


def test_monitor_config_round_trip():
    mon = SparsityMonitor(thresholds=(0.05,), ratios=(0.4,), plot_path="g.png", every=3)
    again = SparsityMonitor.from_config(mon.get_config())
    assert again.get_config() == mon.get_config()
    json.dumps(mon.get_config())
    assert again.log_keys() == ["gamma_below_0.05", "gamma_thr_p40", "gamma_mass_p40"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(ratios=(0.5, 1.5)), "ratios must be in"),
    (dict(thresholds=(-1.0,)), "thresholds must be > 0"),
    (dict(thresholds=0.1), "sequence of numbers"),
    (dict(bin_edges=[0.1, 1.0]), "starting at 0"),
    (dict(every=0), "every must be"),
    (dict(plot_path=3), "plot_path must be a file path"),
])
def test_monitor_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        SparsityMonitor(**kwargs)
