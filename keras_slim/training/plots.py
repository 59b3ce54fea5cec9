"""Figures for Network Slimming runs (PNG files; matplotlib is an optional extra).

* `plot_gamma_distribution`: the distribution of BN scaling factors |gamma|,
  per epoch from a `SparsityMonitor` (the paper's Fig. 4 / Fig. 6 view), or of
  one model.
* `plot_channels_per_layer`: channels kept per layer, before vs after pruning
  (the paper's Fig. 5-style bars), from a `Plan` or from two models.
* `plot_accuracy_vs_ratio`: test accuracy against the prune ratio, without and
  with fine-tuning.

The numbers come from `keras_slim.training.stats`. matplotlib is imported
when a function runs, through its object-oriented API (no pyplot global
state, no backend switch), so this module is safe to import on servers.
Install it with ``pip install keras-slim[plots]``.
"""
from __future__ import annotations

import logging
import os
from typing import Mapping, Sequence

import keras
import numpy as np

from keras_slim import _keras
from keras_slim.errors import ArgumentError, ArgumentTypeError, MissingDependencyError, ModelError
from keras_slim.planning import Plan
from keras_slim.training.stats import DEFAULT_BIN_EDGES, collect_gammas, gamma_statistics

logger = logging.getLogger(__name__)

DPI = 100

__all__ = ["plot_accuracy_vs_ratio", "plot_channels_per_layer", "plot_gamma_distribution",
           "plot_sensitivity"]


def _figure(width: float, height: float):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise MissingDependencyError(
            "keras_slim.plots needs matplotlib, which is not installed. Install it with "
            "`pip install keras-slim[plots]` (or `pip install matplotlib`)."
        ) from e
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path) -> str:
    path = os.fspath(path)
    if not path.lower().endswith(".png"):
        raise ArgumentError(f"keras_slim.plots: path must end in .png, got {path!r}")
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=DPI, format="png")
    os.replace(tmp, path)  # a reader never sees a half-written file
    logger.debug("keras_slim.plots: wrote %s", path)
    return path


# ---------------------------------------------------------------- gamma distribution
def plot_gamma_distribution(
    source,
    path: str | os.PathLike,
    *,
    bin_edges: Sequence[float] | None = None,
    ratios: Sequence[float] | None = None,
    max_curves: int = 5,
    title: str | None = None,
) -> str:
    """Histogram of BN |gamma|: per epoch (with an epochs x |gamma| heat map) or once.

    Args:
        source: a `SparsityMonitor` (after or during training), its
            ``history`` list, a Keras model, a 1-D array of |gamma|, or the
            dict of `keras_slim.training.stats.collect_gammas`.
        path: PNG file to write (folders are created).
        bin_edges: histogram edges for a ``history`` list recorded with
            non-default edges (a monitor carries its own).
        ratios: pruning ratios whose global thresholds are marked (default:
            the monitor's ratios, else 0.5 and 0.7).
        max_curves: at most this many epochs are drawn as histogram lines
            (first, last and evenly spaced ones); the heat map shows all.
        title: figure title.

    Returns:
        `path` as a string.
    """
    edges = None if bin_edges is None else np.asarray(bin_edges, np.float64)
    history = None
    if _is_monitor(source):
        history, edges = source.history, source.bin_edges
        ratios = source.ratios if ratios is None else ratios
    elif isinstance(source, list) and (not source or isinstance(source[0], dict)):
        history = source
    ratios = tuple(ratios) if ratios is not None else (0.5, 0.7)
    edges = DEFAULT_BIN_EDGES if edges is None else edges
    if history is None:
        if _keras.is_model(source):
            source = collect_gammas(source)
        if not isinstance(source, (dict, np.ndarray, list, tuple)):
            raise ArgumentTypeError(
                "plot_gamma_distribution: source must be a SparsityMonitor, its history list, "
                "a Keras model, an array of |gamma| or a dict of arrays, got "
                f"{type(source).__name__}")
        stats = gamma_statistics(source, ratios=ratios, bin_edges=edges)
        stats["epoch"] = None
        history = [stats]
    if not history:
        raise ArgumentError("plot_gamma_distribution: the history is empty; train at least one "
                            "epoch with the SparsityMonitor first")
    n_bins = len(edges) - 1
    for rec in history:
        if len(rec.get("counts", ())) != n_bins:
            raise ArgumentError(f"plot_gamma_distribution: a history record has "
                                f"{len(rec.get('counts', ()))} histogram counts but bin_edges "
                                f"give {n_bins} bins; pass the edges the monitor used")

    shown = edges.copy()
    shown[0] = edges[1] / 10.0  # the [0, e1) bin is drawn one decade wide on the log axis
    centers = np.sqrt(shown[:-1] * shown[1:])
    many = len(history) > 1
    fig = _figure(11 if many else 6, 4)
    ax = fig.add_subplot(1, 2 if many else 1, 1)
    picks = _spread(len(history), max_curves)
    cmap = _colormap()
    for j, i in enumerate(picks):
        rec = history[i]
        counts = np.asarray(rec["counts"], np.float64)
        share = counts / max(counts.sum(), 1.0)
        label = "model" if rec.get("epoch") is None else f"epoch {rec['epoch'] + 1}"
        color = cmap(j / max(len(picks) - 1, 1))
        ax.step(centers, share, where="mid", color=color, label=label, lw=1.5)
    last = history[-1]
    top = ax.get_ylim()[1]
    for k, r in enumerate(ratios):
        thr = last.get("threshold_at", {}).get(float(r))
        if thr is not None and thr > 0:
            ax.axvline(max(thr, shown[0]), color="0.3", ls="--", lw=0.8)
            ax.text(max(thr, shown[0]), top * (0.97 - 0.07 * k), f" {r:.0%}", fontsize=8,
                    va="top", color="0.3")
    ax.set_xscale("log")
    ax.set_xlabel(f"|gamma| (first bin: < {edges[1]:g})")
    ax.set_ylabel("share of channels")
    note = " (dashed: prune thresholds, last epoch)" if many else ""
    ax.set_title("scaling factors" + note, fontsize=9)
    ax.legend(fontsize=8)
    if many:
        ax2 = fig.add_subplot(1, 2, 2)
        grid = np.array([rec["counts"] for rec in history], np.float64).T
        epochs = [rec.get("epoch", i) for i, rec in enumerate(history)]
        epochs = [i if e is None else e + 1 for i, e in enumerate(epochs)]
        im = ax2.pcolormesh(np.arange(len(history) + 1), shown, np.log10(grid + 1.0),
                            shading="flat", cmap="viridis")
        ax2.set_yscale("log")
        step = max(1, len(history) // 10)
        ax2.set_xticks(np.arange(len(history))[::step] + 0.5)
        ax2.set_xticklabels([str(e) for e in epochs][::step], fontsize=8)
        ax2.set_xlabel("epoch")
        ax2.set_ylabel("|gamma|")
        ax2.set_title("channels per |gamma| bin over training (log10(1 + count))", fontsize=9)
        fig.colorbar(im, ax=ax2)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _is_monitor(source) -> bool:
    """A `SparsityMonitor`, recognised by what it carries: the callback module
    imports this one (to draw), so this one does not import it back."""
    return hasattr(source, "bin_edges") and isinstance(getattr(source, "history", None), list)


def _spread(n: int, k: int) -> list[int]:
    if n <= k:
        return list(range(n))
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, k)})


def _colormap():
    from matplotlib import colormaps

    return colormaps["plasma"]


# ---------------------------------------------------------------- channels per layer
def plot_channels_per_layer(
    before,
    path: str | os.PathLike,
    after=None,
    *,
    title: str | None = None,
) -> str:
    """Bars of output channels per layer, before vs after pruning.

    Args:
        before: a `keras_slim.Plan` (then `after` must be None), or the
            original Keras model.
        path: PNG file to write.
        after: the pruned Keras model when `before` is a model. Layers are
            matched by name; a layer missing from `after` counts as 0.
        title: figure title.

    Returns:
        `path` as a string.
    """
    names, ch_before, ch_after = _channel_rows(before, after)
    if not names:
        raise ModelError("plot_channels_per_layer: found no convolution or dense layer "
                         "with a channel count to plot")
    n = len(names)
    fig = _figure(max(6.0, 0.28 * n + 2), 4)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(n)
    ax.bar(x, ch_before, width=0.8, color="0.8", label="before")
    ax.bar(x, ch_after, width=0.5, color="tab:blue", label="after")
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=90, fontsize=7 if n > 20 else 8)
    ax.set_ylabel("output channels")
    total_b, total_a = sum(ch_before), sum(ch_after)
    ax.set_title(title or f"channels kept per layer: {total_a:,} of {total_b:,} "
                 f"({total_a / max(total_b, 1):.0%})", fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _channel_rows(before, after):
    if isinstance(before, Plan):
        if after is not None:
            raise ArgumentTypeError("plot_channels_per_layer: pass either a Plan alone or two "
                                    "models (before, after), not a Plan and a model")
        names, b, a, seen = [], [], [], set()
        for row in before.layers:
            if (row.channels_before is None or row.params_before == 0
                    or row.class_name == "BatchNormalization" or row.name in seen):
                continue
            seen.add(row.name)
            names.append(row.name)
            b.append(int(row.channels_before))
            a.append(int(row.channels_after))
        return names, b, a
    if not isinstance(before, keras.Model) or not isinstance(after, keras.Model):
        raise ArgumentTypeError("plot_channels_per_layer: give a keras_slim Plan, or two Keras "
                                f"models (before, after); got {type(before).__name__} and "
                                f"{type(after).__name__}")
    width_after = dict(_layer_widths(after))
    names, b, a = [], [], []
    for name, ch in _layer_widths(before):
        names.append(name)
        b.append(ch)
        a.append(width_after.get(name, 0))
    return names, b, a


def _layer_widths(model):
    for layer in _keras.walk_layers(model):
        kernel = getattr(layer, "kernel", None)
        if kernel is None or _keras.is_model(layer):
            continue
        try:
            ch = layer.output.shape[-1]
        except (AttributeError, ValueError):  # called several times, or never
            ch = None
        if ch is None:
            ch = int(kernel.shape[-1])
        yield layer.name, int(ch)


# ---------------------------------------------------------------- accuracy vs ratio
def plot_accuracy_vs_ratio(
    ratios: Sequence[float],
    pruned: Sequence[float],
    path: str | os.PathLike,
    *,
    fine_tuned: Sequence[float] | None = None,
    fine_tuned_ratios: Sequence[float] | None = None,
    baseline: float | None = None,
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
    title: str | None = None,
    pruned_label: str = "pruned, no fine-tuning",
) -> str:
    """Test accuracy against the fraction of channels pruned (the paper's Fig. 5 view).

    Args:
        ratios: prune ratios of the `pruned` curve.
        pruned: accuracy right after pruning (no fine-tuning), one per ratio.
        path: PNG file to write.
        fine_tuned: accuracy after fine-tuning, at `fine_tuned_ratios`
            (default: the same `ratios`).
        fine_tuned_ratios: ratios of the `fine_tuned` points.
        baseline: accuracy of the unpruned model, drawn as a horizontal line.
        curves: extra lines ``{label: (ratios, accuracies)}`` (e.g. a model
            pruned without sparsity training).
        title: figure title.
        pruned_label: legend label of the `pruned` curve.

    Returns:
        `path` as a string.
    """
    ratios = _floats(ratios, "ratios")
    pruned = _floats(pruned, "pruned")
    if len(ratios) != len(pruned):
        raise ArgumentError(f"plot_accuracy_vs_ratio: {len(ratios)} ratios but {len(pruned)} "
                            "pruned accuracies; give one accuracy per ratio")
    fig = _figure(6, 4)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(*_by_ratio(ratios, pruned), "o-", color="tab:red", label=pruned_label)
    if fine_tuned is not None:
        ft = _floats(fine_tuned, "fine_tuned")
        ft_r = ratios if fine_tuned_ratios is None else _floats(fine_tuned_ratios,
                                                                "fine_tuned_ratios")
        if len(ft) != len(ft_r):
            raise ArgumentError(f"plot_accuracy_vs_ratio: {len(ft_r)} fine-tuned ratios but "
                                f"{len(ft)} fine-tuned accuracies")
        ax.plot(*_by_ratio(ft_r, ft), "s-", color="tab:green", label="pruned + fine-tuned")
    for label, (r, acc) in (curves or {}).items():
        r, acc = _floats(r, f"curves[{label!r}] ratios"), _floats(acc, f"curves[{label!r}]")
        if len(r) != len(acc):
            raise ArgumentError(f"plot_accuracy_vs_ratio: curve {label!r} has {len(r)} ratios "
                                f"and {len(acc)} accuracies")
        ax.plot(*_by_ratio(r, acc), "^--", label=label)
    if baseline is not None:
        ax.axhline(float(baseline), color="0.3", ls=":", label=f"unpruned ({baseline:.2%})")
    ax.set_xlabel("fraction of channels pruned")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(title or "accuracy vs prune ratio", fontsize=10)
    return _save(fig, path)


def plot_sensitivity(result, path: str | os.PathLike, *, top: int = 12,
                     title: str | None = None) -> str:
    """Metric against the ratio pruned, one line per group (a `keras_slim.sensitivity` result).

    The `top` widest groups are drawn (the rest would be unreadable); the
    baseline is the dotted line.
    """
    if not hasattr(result, "groups") or not hasattr(result, "ratios"):
        raise ArgumentTypeError(f"plot_sensitivity: expected a keras_slim.SensitivityResult, "
                                f"got {type(result).__name__}")
    fig = _figure(6, 4)
    ax = fig.add_subplot(1, 1, 1)
    for g in sorted(result.groups, key=lambda g: -g["channels"])[:top]:
        ax.plot(result.ratios, g["metrics"], "o-", ms=3, label=f"{g['name']} ({g['channels']})")
    ax.axhline(result.baseline, color="0.3", ls=":", label="unpruned")
    ax.set_xlabel("fraction of the group's channels pruned (others untouched)")
    ax.set_ylabel("metric")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    ax.set_title(title or "sensitivity per coupled group", fontsize=10)
    return _save(fig, path)


def _by_ratio(ratios: list, values: list) -> tuple[list, list]:
    """Points sorted by ratio; None values (a ratio that failed) are left out."""
    pairs = sorted((r, v) for r, v in zip(ratios, values) if v is not None)
    return [r for r, _ in pairs], [v for _, v in pairs]


def _floats(values, what: str) -> list:
    try:
        return [None if v is None else float(v) for v in values]
    except (TypeError, ValueError) as e:
        raise ArgumentTypeError(f"plot_accuracy_vs_ratio: {what} must be a sequence of numbers, "
                                f"got {values!r}") from e
