"""Watching sparsity training: the distribution of BatchNormalization scaling factors.

Network Slimming works when the L1 penalty drives most |gamma| towards zero
while the important channels keep large factors, so that a global threshold
separates the two (Liu et al. 2017, Fig. 4). `SparsityMonitor` records that
distribution after every epoch.
"""
from __future__ import annotations

import logging
import os
from typing import Sequence

import keras
import numpy as np

from keras_slim import _keras

logger = logging.getLogger(__name__)

DEFAULT_BIN_EDGES = np.concatenate([[0.0], np.logspace(-4, 1, 31)])
"""Default histogram edges: one bin [0, 1e-4), then 30 log-spaced bins up to 10
(6 per decade). Values above the last edge are counted in the last bin."""

__all__ = ["DEFAULT_BIN_EDGES", "SparsityMonitor", "collect_gammas", "gamma_statistics"]


def collect_gammas(model) -> dict[str, np.ndarray]:
    """|gamma| of every BatchNormalization with ``scale=True`` in `model`.

    Nested models are walked; a shared layer appears once.

    Args:
        model: a Keras model (Functional, Sequential or subclassed).

    Returns:
        ``{layer name: 1-D float64 array of |gamma|}`` in layer order. Names
        of layers inside nested models are prefixed ``"outer/inner"`` only
        when two layers share a name.
    """
    _keras.check_model(model, "collect_gammas")
    out: dict[str, np.ndarray] = {}
    for layer in _keras.walk_layers(model):
        if not _keras.is_batch_norm(layer) or not getattr(layer, "scale", False):
            continue
        if not layer.built:
            continue
        gamma = np.abs(np.asarray(keras.ops.convert_to_numpy(layer.gamma), np.float64)).ravel()
        name = layer.name
        k = 2
        while name in out:
            name = f"{layer.name}#{k}"
            k += 1
        out[name] = gamma
    return out


def gamma_statistics(
    gammas: np.ndarray | dict,
    thresholds: Sequence[float] = (1e-3, 1e-2, 0.1),
    ratios: Sequence[float] = (0.5, 0.7),
    bin_edges: np.ndarray = DEFAULT_BIN_EDGES,
) -> dict:
    """Sparsity statistics of a set of |gamma| values.

    Args:
        gammas: a 1-D array of |gamma| or the dict of `collect_gammas`.
        thresholds: report the share of channels with |gamma| below each.
        ratios: for each pruning ratio r, the |gamma| threshold a global
            prune of r would use (the r-quantile) and the share of the total
            |gamma| L1 mass below it (near 0 means the channels cut carry
            almost nothing: a clean cut).
        bin_edges: histogram edges (increasing, starting at 0).

    Returns:
        ``{"channels", "mean", "median", "max", "below": {t: share},
        "threshold_at": {r: value}, "mass_below": {r: share}, "counts": [...]}``.
    """
    if isinstance(gammas, dict):
        values = np.concatenate(list(gammas.values())) if gammas else np.zeros(0)
    else:
        values = np.abs(np.asarray(gammas, np.float64)).ravel()
    n = values.size
    if n == 0:
        raise ValueError("gamma_statistics: no scaling factors given (the model has no "
                         "BatchNormalization layer with scale=True)")
    edges = np.asarray(bin_edges, np.float64)
    counts, _ = np.histogram(np.minimum(values, edges[-1]), edges)
    ordered = np.sort(values)
    total = float(ordered.sum())
    threshold_at, mass_below = {}, {}
    for r in ratios:
        k = int(round(r * n))  # how many channels a global r-prune removes (as keras_slim.plan)
        threshold_at[float(r)] = float(ordered[k - 1]) if k > 0 else 0.0
        mass_below[float(r)] = float(ordered[:k].sum() / total) if total > 0 else 0.0
    return {
        "channels": int(n),
        "mean": float(values.mean()),
        "median": float(np.median(values)),
        "max": float(values.max()),
        "below": {float(t): float(np.mean(values < t)) for t in thresholds},
        "threshold_at": threshold_at,
        "mass_below": mass_below,
        "counts": counts.astype(int).tolist(),
    }


def _check_numbers(values, what: str, upper: float | None = None) -> tuple:
    try:
        values = tuple(float(v) for v in values)
    except TypeError as e:
        raise TypeError(f"SparsityMonitor: {what} must be a sequence of numbers, "
                        f"got {values!r}") from e
    for v in values:
        if not (v > 0 and (upper is None or v < upper)):
            bound = f"in (0, {upper:g})" if upper is not None else "> 0"
            raise ValueError(f"SparsityMonitor: every entry of {what} must be {bound}, "
                             f"got {values!r}")
    return values


class SparsityMonitor(keras.callbacks.Callback):
    """Track the distribution of BN scaling factors |gamma| during training.

    After each epoch (every `every` epochs) it measures all BatchNormalization
    layers with ``scale=True`` (nested models included) and

    * adds to the epoch's ``logs`` (so they show in the progress bar, in
      ``History.history`` and in CSVLogger/TensorBoard):
      ``gamma_below_<t>`` (share of channels with |gamma| < t for each
      threshold), ``gamma_thr_p<r>`` (the |gamma| a global prune of ratio r
      would cut at) and ``gamma_mass_p<r>`` (the share of the total |gamma|
      mass those channels carry; near 0 = a clean cut);
    * logs one line through `logging` (logger ``keras_slim.callbacks``);
    * appends a record with the same numbers and the histogram over the fixed
      `bin_edges` to ``self.history``;
    * with `plot_path`, redraws the paper's Figure-4-style plot (histogram of
      the latest epoch, evolution over epochs) into that PNG (needs matplotlib).

    The ratio thresholds rank raw per-BN channels; `keras_slim.plan` ranks
    coupled groups (channels tied by Add/Concatenate) by their mean |gamma|,
    so for ResNet/DenseNet they are close but not identical.

    Args:
        thresholds: |gamma| levels to report the share below.
        ratios: pruning ratios in (0, 1) whose global thresholds to report.
        bin_edges: histogram edges, increasing from 0 (default
            `DEFAULT_BIN_EDGES`, log-spaced 1e-4 .. 10).
        plot_path: PNG file to (re)write every epoch, or None.
        every: measure every `every` epochs (and always at the last).
        add_to_logs: put the numbers into ``logs``; False keeps the progress
            bar short (``self.history`` and logging still get them).
        log_level: `logging` level of the per-epoch line.

    Example:
        >>> monitor = SparsityMonitor(plot_path="gamma.png")
        >>> model.fit(x, y, epochs=10, callbacks=[monitor])  # doctest: +SKIP
        >>> monitor.history[-1]["below"][0.01]  # doctest: +SKIP
    """

    def __init__(
        self,
        thresholds: Sequence[float] = (1e-3, 1e-2, 0.1),
        ratios: Sequence[float] = (0.5, 0.7),
        bin_edges: Sequence[float] | None = None,
        plot_path: str | os.PathLike | None = None,
        every: int = 1,
        add_to_logs: bool = True,
        log_level: int = logging.INFO,
    ):
        super().__init__()
        self.thresholds = _check_numbers(thresholds, "thresholds")
        self.ratios = _check_numbers(ratios, "ratios", upper=1.0)
        edges = DEFAULT_BIN_EDGES if bin_edges is None else np.asarray(bin_edges, np.float64)
        if edges.ndim != 1 or edges.size < 2 or edges[0] != 0 or np.any(np.diff(edges) <= 0):
            raise ValueError("SparsityMonitor: bin_edges must be a 1-D increasing sequence "
                             f"starting at 0 with at least 2 entries, got {bin_edges!r}")
        self.bin_edges = edges
        self.plot_path = None if plot_path is None else os.fspath(plot_path)
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"SparsityMonitor: every must be an integer >= 1, got {every!r}")
        self.every = every
        self.add_to_logs = bool(add_to_logs)
        self.log_level = log_level
        self.history: list[dict] = []
        self._epochs_total: int | None = None

    # ------------------------------------------------------------ keys
    @staticmethod
    def _tag(value: float) -> str:
        return f"{value:g}"

    def log_keys(self) -> list[str]:
        """The keys this callback adds to ``logs`` (and so to History)."""
        keys = [f"gamma_below_{self._tag(t)}" for t in self.thresholds]
        for r in self.ratios:
            pct = self._tag(100 * r)
            keys += [f"gamma_thr_p{pct}", f"gamma_mass_p{pct}"]
        return keys

    # ------------------------------------------------------------ measuring
    def measure(self, model=None) -> dict:
        """Statistics of `model` (default: the model being trained) right now."""
        model = self.model if model is None else model
        if model is None:
            raise ValueError("SparsityMonitor.measure: no model; pass one or use the "
                             "callback inside model.fit")
        gammas = collect_gammas(model)
        if not gammas:
            raise ValueError(
                f"SparsityMonitor: model {model.name!r} has no BatchNormalization layer with "
                "scale=True, so there are no scaling factors to monitor."
            )
        return gamma_statistics(gammas, self.thresholds, self.ratios, self.bin_edges)

    # ------------------------------------------------------------ callback hooks
    def on_train_begin(self, logs=None):
        self._epochs_total = (self.params or {}).get("epochs")
        if not collect_gammas(self.model):
            raise ValueError(
                f"SparsityMonitor: model {self.model.name!r} has no BatchNormalization layer "
                "with scale=True, so there are no scaling factors to monitor."
            )

    def on_epoch_end(self, epoch, logs=None):
        last = self._epochs_total is not None and epoch + 1 >= self._epochs_total
        if (epoch + 1) % self.every and not last:
            return
        stats = self.measure()
        stats["epoch"] = int(epoch)
        self.history.append(stats)
        values = self._flat(stats)
        if self.add_to_logs and logs is not None:
            logs.update(values)
        if logger.isEnabledFor(self.log_level):
            below = ", ".join(f"<{self._tag(t)}: {stats['below'][t]:.1%}" for t in self.thresholds)
            cuts = ", ".join(f"{self._tag(100 * r)}% at {stats['threshold_at'][r]:.3g} "
                             f"({stats['mass_below'][r]:.1%} of |gamma| mass)"
                             for r in self.ratios)
            logger.log(self.log_level, "epoch %d: %d BN channels, |gamma| %s; prune %s",
                       epoch + 1, stats["channels"], below, cuts)
        if self.plot_path:
            from keras_slim.plots import plot_gamma_distribution

            plot_gamma_distribution(self, self.plot_path)

    def _flat(self, stats: dict) -> dict:
        keys = iter(self.log_keys())
        out = {}
        for t in self.thresholds:
            out[next(keys)] = stats["below"][t]
        for r in self.ratios:
            out[next(keys)] = stats["threshold_at"][r]
            out[next(keys)] = stats["mass_below"][r]
        return out

    # ------------------------------------------------------------ config
    def get_config(self) -> dict:
        """Constructor arguments (JSON-serialisable), for logging or re-creating."""
        return {
            "thresholds": list(self.thresholds),
            "ratios": list(self.ratios),
            "bin_edges": self.bin_edges.tolist(),
            "plot_path": self.plot_path,
            "every": self.every,
            "add_to_logs": self.add_to_logs,
            "log_level": self.log_level,
        }

    @classmethod
    def from_config(cls, config: dict) -> "SparsityMonitor":
        return cls(**config)
