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


def score(members: Sequence[Member], group_reduction: str = "mean") -> float:
    """Score of one channel class from its BN scaling factors (already |gamma|)."""
    try:
        reduce = _REDUCTIONS[group_reduction]
    except KeyError:
        raise ValueError(
            f"group_reduction={group_reduction!r} is not known; use one of {reductions()}"
        ) from None
    return reduce(np.asarray([m.gamma for m in members], dtype=np.float64))
