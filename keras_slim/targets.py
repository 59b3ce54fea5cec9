"""Budgets: the cut that meets a MACs or parameter target (`plan(target_macs=...)`).

A target is a fraction of the model's own count (0 < t <= 1: "keep at most
half the MACs" is 0.5) or an absolute number (t > 1). The cut is the
smallest prefix of the global ranking whose plan, after the per-layer
constraints, meets every target given: counts fall with every channel
removed, so a bisection over the prefix length finds it with about
log2(prunable channels) evaluations of the already coupled graph.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from keras_slim.errors import ArgumentError, ModelError

KINDS = ("macs", "params")


@dataclasses.dataclass
class Target:
    kind: str  # "macs" or "params"
    requested: float  # as given: a fraction (<= 1) or an absolute count
    goal: int = 0  # the absolute count to stay at or under, once the model is known

    def resolve(self, before: int) -> "Target":
        goal = self.requested * before if self.requested <= 1 else self.requested
        return dataclasses.replace(self, goal=int(goal))

    def met(self, counts: dict) -> bool:
        return counts[self.kind] <= self.goal

    def describe(self, before: int) -> str:
        what = "MACs" if self.kind == "macs" else "params"
        share = f" ({100 * self.goal / before:.1f}% of {before:,})" if before else ""
        return f"{what} <= {self.goal:,}{share}"


def check_targets(target_macs, target_params) -> list[Target]:
    """The targets given, validated (an empty list when there are none)."""
    out = []
    for kind, value in zip(KINDS, (target_macs, target_params)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ArgumentError(f"target_{kind} must be a fraction in (0, 1] of the model's "
                                f"{kind} (0.5 keeps at most half) or an absolute count > 1, "
                                f"got {value!r}")
        out.append(Target(kind, float(value)))
    return out


def search(n: int, counts_at: Callable[[int], dict], targets: list[Target],
           model_name: str) -> int:
    """The fewest removed channels k (of the ranking's first n) meeting every target."""
    if all(t.met(counts_at(0)) for t in targets):
        return 0
    if not all(t.met(counts_at(n)) for t in targets):
        best = counts_at(n)
        reached = ", ".join(f"{t.kind} {best[t.kind]:,} (target {t.goal:,})" for t in targets)
        raise ModelError(
            f"model {model_name!r}: the target cannot be met; removing every prunable channel "
            f"the constraints allow still leaves {reached}. Relax min_channels / "
            "max_layer_ratio / round_to, free channels kept by barriers or outputs, or ask "
            "for less.")
    lo, hi = 1, n
    while lo < hi:
        mid = (lo + hi) // 2
        if all(t.met(counts_at(mid)) for t in targets):
            hi = mid
        else:
            lo = mid + 1
    return hi
