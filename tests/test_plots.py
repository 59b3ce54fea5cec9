"""keras_slim.training.plots writes real PNG files and explains what is missing."""
import sys

import keras
import numpy as np
import pytest

from keras_slim.training import SparsityMonitor, gamma_statistics, plots
from keras_slim.training.cifar import models

pytest.importorskip("matplotlib")

PNG = b"\x89PNG\r\n\x1a\n"


def _is_png(path) -> bool:
    data = open(path, "rb").read()
    return data[:8] == PNG and len(data) > 1000


def _sparse_vgg():
    m = models.vgg(11, width=0.125)
    rng = np.random.default_rng(0)
    for layer in m.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.gamma.assign(rng.lognormal(-3, 2, layer.gamma.shape).astype("float32"))
    return m


def test_gamma_distribution_from_history(tmp_path):
    rng = np.random.default_rng(0)
    history = []
    for epoch in range(4):  # factors shrinking epoch by epoch
        rec = gamma_statistics(rng.lognormal(-epoch, 1.0, 200))
        rec["epoch"] = epoch
        history.append(rec)
    mon = SparsityMonitor()
    mon.history = history
    out = plots.plot_gamma_distribution(mon, tmp_path / "g.png", title="test")
    assert _is_png(out)
    assert _is_png(plots.plot_gamma_distribution(history, tmp_path / "g2.png"))


def test_gamma_distribution_of_one_model(tmp_path):
    assert _is_png(plots.plot_gamma_distribution(_sparse_vgg(), str(tmp_path / "one.png")))


def test_gamma_distribution_errors(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        plots.plot_gamma_distribution([], tmp_path / "x.png")
    rec = gamma_statistics(np.ones(5))
    with pytest.raises(ValueError, match="bin_edges"):
        plots.plot_gamma_distribution([rec], tmp_path / "x.png", bin_edges=[0, 1, 2])
    with pytest.raises(TypeError, match="SparsityMonitor"):
        plots.plot_gamma_distribution("gammas", tmp_path / "x.png")
    with pytest.raises(ValueError, match=".png"):
        plots.plot_gamma_distribution(np.ones(5), tmp_path / "x.jpg")


def test_channels_per_layer_from_plan_and_from_models(tmp_path):
    from keras_slim.pruning import plan, prune

    m = _sparse_vgg()
    p = plan(m, 0.5)
    assert _is_png(plots.plot_channels_per_layer(p, tmp_path / "plan.png"))
    small = prune(m, p)
    assert _is_png(plots.plot_channels_per_layer(m, tmp_path / "models.png", small))
    names, before, after = plots._channel_rows(m, small)
    assert names[:2] == ["conv1", "conv2"] and before[0] == 8
    assert sum(after) < sum(before)
    plan_names, plan_before, plan_after = plots._channel_rows(p, None)
    assert plan_names == names and plan_after == after
    with pytest.raises(TypeError, match="Plan"):
        plots.plot_channels_per_layer(p, tmp_path / "x.png", small)


def test_accuracy_vs_ratio(tmp_path):
    out = plots.plot_accuracy_vs_ratio(
        [0.1, 0.5, 0.9], [0.92, 0.85, None], tmp_path / "acc.png",
        fine_tuned=[0.93, 0.92], fine_tuned_ratios=[0.7, 0.5], baseline=0.93,
        curves={"no sparsity": ([0.1, 0.5, 0.9], [0.9, 0.3, 0.1])})
    assert _is_png(out)
    with pytest.raises(ValueError, match="one accuracy per ratio"):
        plots.plot_accuracy_vs_ratio([0.1, 0.5], [0.9], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="fine-tuned"):
        plots.plot_accuracy_vs_ratio([0.1], [0.9], tmp_path / "bad.png", fine_tuned=[0.9, 0.8])


def test_missing_matplotlib_names_the_extra(monkeypatch, tmp_path):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib...` fail
    with pytest.raises(ImportError, match=r"pip install keras-slim\[plots\]"):
        plots.plot_accuracy_vs_ratio([0.5], [0.9], tmp_path / "acc.png")


def test_stats_and_plots_do_not_import_the_callback():
    """One direction: callbacks -> plots -> stats (no import back, not even inside a function)."""
    import ast
    import pathlib

    import keras_slim.training as training

    root = pathlib.Path(training.__file__).parent
    for module, banned in (("plots", {"keras_slim.training.callbacks"}),
                           ("stats", {"keras_slim.training.callbacks",
                                      "keras_slim.training.plots"})):
        tree = ast.parse((root / f"{module}.py").read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not imported & banned, f"training/{module}.py imports {imported & banned}"
