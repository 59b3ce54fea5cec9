"""Budgets: the cut that meets a MACs, parameter or latency target (`plan(target_macs=...)`).

A MACs or params target is a fraction of the model's own count (0 < t <= 1:
"keep at most half the MACs" is 0.5) or an absolute number (t > 1). A
latency target is in milliseconds (`target_latency_ms=1.5`), or a share of
the unpruned model's estimated latency as a string (`"60%"`): a number
alone cannot be both, since 0.5 ms is a real latency. Latency is what a
latency model estimates for the plan (keras_slim.latency).

The cut is the smallest prefix of the global ranking whose plan, after the
per-layer constraints, meets every target given: counts fall with every
channel removed, so a bisection over the prefix length finds it with about
log2(prunable channels) evaluations of the already coupled graph.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from keras_slim import latency
from keras_slim.errors import ArgumentError, ModelError

KINDS = ("macs", "params", "latency_ms")


@dataclasses.dataclass
class Target:
    kind: str  # "macs", "params" or "latency_ms"
    requested: float  # as given: a fraction (<= 1) or an absolute count / ms
    goal: float = 0  # the absolute count (or ms) to stay at or under, once the model is known
    share: bool = False  # latency given as a share of the unpruned estimate ("60%")

    def resolve(self, before: float) -> "Target":
        if self.kind == "latency_ms":
            return dataclasses.replace(self, goal=self.requested * before if self.share
                                       else self.requested)
        goal = self.requested * before if self.requested <= 1 else self.requested
        return dataclasses.replace(self, goal=int(goal))

    def met(self, counts: dict) -> bool:
        return counts[self.kind] <= self.goal

    def describe(self, before: float) -> str:
        if self.kind == "latency_ms":
            share = f" ({100 * self.goal / before:.1f}% of {before:.3g} ms)" if before else ""
            return f"latency <= {self.goal:.3g} ms{share}"
        what = "MACs" if self.kind == "macs" else "params"
        share = f" ({100 * self.goal / before:.1f}% of {before:,})" if before else ""
        return f"{what} <= {self.goal:,}{share}"

    def reached(self, value: float) -> str:
        return f"{value:.3g} ms" if self.kind == "latency_ms" else f"{value:,}"


def check_targets(target_macs, target_params, target_latency_ms=None,
                  latency_model=None, round_to_auto: bool = False) -> list[Target]:
    """The targets given, validated (an empty list when there are none).

    `round_to_auto`: round_to="auto" uses `latency_model` too.
    """
    if latency_model is not None and target_latency_ms is None and not round_to_auto:
        raise ArgumentError("latency_model= is only used with target_latency_ms= or "
                            "round_to='auto'; give one, or drop latency_model")
    out = []
    for kind, value in zip(KINDS[:2], (target_macs, target_params)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ArgumentError(f"target_{kind} must be a fraction in (0, 1] of the model's "
                                f"{kind} (0.5 keeps at most half) or an absolute count > 1, "
                                f"got {value!r}")
        out.append(Target(kind, float(value)))
    if target_latency_ms is not None:
        out.append(_latency_target(target_latency_ms))
    return out


def _latency_target(value) -> Target:
    bad = ArgumentError(f"target_latency_ms must be milliseconds > 0 (1.5) or a share of the "
                        f"unpruned model's estimated latency as a string ('60%'), got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        try:
            share = float(text[:-1]) / 100 if text.endswith("%") else None
        except ValueError:
            raise bad from None
        if share is None or not 0 < share <= 1:
            raise bad
        return Target("latency_ms", share, share=True)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise bad
    return Target("latency_ms", float(value))


def meet(order: list, decide: Callable, budget: list[Target], model, latency_model,
         input_shape) -> tuple[int, dict]:
    """(how many of `order` to remove, the plan's `target` record) for the budget.

    `decide(removed)` returns `(removed, state, (layers, kept, params, macs))`
    for a set of removed class roots, after the per-layer constraints.
    """
    wants_latency = any(t.kind == "latency_ms" for t in budget)
    estimator = latency.estimator(model, latency_model, input_shape) if wants_latency else None
    seen: dict = {}

    def counts_at(k: int) -> dict:
        if k not in seen:
            _, _, (layers, _, p, m) = decide(set(order[:k]))
            seen[k] = dict(params=p[1], macs=m[1])
            if estimator is not None:
                seen[k]["latency_ms"] = latency.estimate(estimator, layers)
        return seen[k]

    _, _, (layers, _, params, macs) = decide(set())
    totals = dict(macs=macs[0], params=params[0])
    if estimator is not None:
        totals["latency_ms"] = counts_at(0)["latency_ms"]
    budget = [t.resolve(totals[t.kind]) for t in budget]
    k = search(len(order), counts_at, budget, model.name)
    target = dict(requested={f"target_{t.kind}": (f"{100 * t.requested:g}%" if t.share
                                                  else t.requested) for t in budget},
                  goals={t.kind: t.goal for t in budget},
                  reached=counts_at(k),
                  text="; ".join(t.describe(totals[t.kind]) for t in budget))
    if estimator is not None:
        target["before"] = dict(latency_ms=totals["latency_ms"])
        target["estimate"] = estimator.description
    return k, target


def search(n: int, counts_at: Callable[[int], dict], targets: list[Target],
           model_name: str) -> int:
    """The fewest removed channels k (of the ranking's first n) meeting every target.

    Counts need not fall strictly with k (a latency estimate may not): the
    answer always meets every target, and is the fewest where they do fall.
    """
    if all(t.met(counts_at(0)) for t in targets):
        return 0
    if not all(t.met(counts_at(n)) for t in targets):
        best = counts_at(n)
        reached = ", ".join(f"{t.kind} {t.reached(best[t.kind])} (target {t.reached(t.goal)})"
                            for t in targets)
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
