"""Score: how important a removable channel class is.

A class can hold several scaling factors: the BNs of every branch of an
Add (ResNet v1), a depthwise chain (BN before and after the depthwise), a
BN shared by two calls. Their |gamma| are combined by `group_reduction`:

* "mean" (default): comparable across classes with different member counts,
  so one global ranking stays fair (Torch-Pruning's default as well);
* "max": a channel is as important as its most important member (most
  conservative for residual stages);
* "sum": the paper's single-BN case generalised additively.

All three are 0 exactly when every member is 0, which is when removal is
exact. Other criteria plug in here through `register_criterion`.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from keras_slim.coupling import Member
from keras_slim.errors import ArgumentError

_REDUCTIONS: dict[str, Callable[[np.ndarray], float]] = {
    "mean": lambda g: float(np.mean(g)),
    "max": lambda g: float(np.max(g)),
    "sum": lambda g: float(np.sum(g)),
}


def register_reduction(name: str, fn: Callable[[np.ndarray], float]) -> None:
    """Add a way to combine the |gamma| of one class into a score."""
    _REDUCTIONS[name] = fn


def reductions() -> list[str]:
    return sorted(_REDUCTIONS)


def scores(roots: Sequence[int], owners: np.ndarray, gammas: np.ndarray,
           group_reduction: str = "mean") -> dict:
    """Score of each class in `roots` from all scaling factors (`owners[i]` owns `gammas[i]`)."""
    if group_reduction not in _REDUCTIONS:
        score([], group_reduction)  # raises the clear error
    roots_arr = np.asarray(sorted(roots), dtype=np.int64)
    if len(roots_arr) == 0:
        return {}
    mask = np.isin(owners, roots_arr)
    owner = np.searchsorted(roots_arr, owners[mask])
    gamma = np.asarray(gammas, np.float64)[mask]
    n = len(roots_arr)
    if group_reduction == "max":
        out = np.full(n, -np.inf)
        np.maximum.at(out, owner, gamma)
    elif group_reduction in ("sum", "mean"):
        out = np.bincount(owner, weights=gamma, minlength=n)
        if group_reduction == "mean":
            out = out / np.bincount(owner, minlength=n)
    else:  # a registered reduction: one call per class
        order = np.argsort(owner, kind="stable")
        splits = np.split(gamma[order], np.cumsum(np.bincount(owner, minlength=n))[:-1])
        out = np.array([_REDUCTIONS[group_reduction](g) for g in splits])
    return dict(zip(roots_arr.tolist(), out.tolist()))


def score(members: Sequence[Member], group_reduction: str = "mean") -> float:
    """Score of one channel class from its members' scaling factors (already |gamma|)."""
    try:
        reduce = _REDUCTIONS[group_reduction]
    except KeyError:
        raise ArgumentError(
            f"group_reduction={group_reduction!r} is not known; use one of {reductions()}"
        ) from None
    return reduce(np.asarray([m.gamma for m in members], dtype=np.float64))
