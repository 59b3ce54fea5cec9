"""The one place gamma statistics are computed: |gamma| of every BN, and the
sparsity numbers derived from them.

`SparsityMonitor` (per epoch), the plots and the ``keras-slim inspect``
command all read BN scaling factors through `collect_gammas` and summarise
them with `gamma_statistics`, so every report agrees on what "share below
1e-2" or "the 50 % threshold" means.
"""
from __future__ import annotations

from typing import Sequence

import keras
import numpy as np

from keras_slim import _keras
from keras_slim.errors import ModelError

DEFAULT_BIN_EDGES = np.concatenate([[0.0], np.logspace(-4, 1, 31)])
"""Default histogram edges: one bin [0, 1e-4), then 30 log-spaced bins up to 10
(6 per decade). Values above the last edge are counted in the last bin."""

__all__ = ["DEFAULT_BIN_EDGES", "collect_gammas", "gamma_statistics"]


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
        ``{"channels", "mean", "min", "median", "max", "below": {t: share},
        "threshold_at": {r: value}, "mass_below": {r: share}, "counts": [...]}``.

    Raises:
        ModelError: no values (a model without a scaled BatchNormalization).
    """
    if isinstance(gammas, dict):
        values = np.concatenate(list(gammas.values())) if gammas else np.zeros(0)
    else:
        values = np.abs(np.asarray(gammas, np.float64)).ravel()
    n = values.size
    if n == 0:
        raise ModelError("gamma_statistics: no scaling factors given (the model has no "
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
        "min": float(values.min()),
        "median": float(np.median(values)),
        "max": float(values.max()),
        "below": {float(t): float(np.mean(values < t)) for t in thresholds},
        "threshold_at": threshold_at,
        "mass_below": mass_below,
        "counts": counts.astype(int).tolist(),
    }
