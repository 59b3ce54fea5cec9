"""Watching sparsity training: the distribution of BatchNormalization scaling factors.

Network Slimming works when the L1 penalty drives most |gamma| towards zero
while the important channels keep large factors, so that a global threshold
separates the two (Liu et al. 2017, Fig. 4). `SparsityMonitor` records that
distribution after every epoch; the numbers come from `keras_slim.training.stats`.
"""
from __future__ import annotations

import logging
import os
from typing import Sequence

import keras
import numpy as np

from keras_slim.errors import ArgumentError, ArgumentTypeError, ModelError
from keras_slim.training.plots import plot_gamma_distribution
from keras_slim.training.stats import DEFAULT_BIN_EDGES, collect_gammas, gamma_statistics

logger = logging.getLogger(__name__)

__all__ = ["SparsityMonitor"]


def _check_numbers(values, what: str, upper: float | None = None) -> tuple:
    try:
        values = tuple(float(v) for v in values)
    except TypeError as e:
        raise ArgumentTypeError(f"SparsityMonitor: {what} must be a sequence of numbers, "
                                f"got {values!r}") from e
    for v in values:
        if not (v > 0 and (upper is None or v < upper)):
            bound = f"in (0, {upper:g})" if upper is not None else "> 0"
            raise ArgumentError(f"SparsityMonitor: every entry of {what} must be {bound}, "
                                f"got {values!r}")
    return values


def _scaled_gammas(model) -> dict:
    """`collect_gammas(model)`, or ModelError when there is nothing to monitor."""
    gammas = collect_gammas(model)
    if not gammas:
        raise ModelError(
            f"SparsityMonitor: model {model.name!r} has no BatchNormalization layer with "
            "scale=True, so there are no scaling factors to monitor."
        )
    return gammas


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
    * logs one line through `logging` (logger ``keras_slim.training.callbacks``);
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
            raise ArgumentError("SparsityMonitor: bin_edges must be a 1-D increasing sequence "
                                f"starting at 0 with at least 2 entries, got {bin_edges!r}")
        self.bin_edges = edges
        if plot_path is not None and not isinstance(plot_path, (str, os.PathLike)):
            raise ArgumentTypeError("SparsityMonitor: plot_path must be a file path (str or "
                                    f"os.PathLike) or None, got {type(plot_path).__name__} "
                                    f"{plot_path!r}")
        self.plot_path = None if plot_path is None else os.fspath(plot_path)
        if not isinstance(every, int) or every < 1:
            raise ArgumentError(f"SparsityMonitor: every must be an integer >= 1, got {every!r}")
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
            raise ArgumentError("SparsityMonitor.measure: no model; pass one or use the "
                                "callback inside model.fit")
        gammas = _scaled_gammas(model)
        return gamma_statistics(gammas, self.thresholds, self.ratios, self.bin_edges)

    # ------------------------------------------------------------ callback hooks
    def on_train_begin(self, logs=None):
        self._epochs_total = (self.params or {}).get("epochs")
        _scaled_gammas(self.model)

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
