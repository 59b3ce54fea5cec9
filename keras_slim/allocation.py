"""Latency-aware allocation: the order a latency target cuts channels in (`allocation=`).

The default allocation, "score", removes channels in the order of their
score (the paper's global threshold): a target is met with the least
important channels wherever they sit. On a real runtime a channel's cost is
not its share of the MACs. On XNNPACK's x86 kernels a conv's time follows
cin x ceil(cout / 16), so a 16-wide layer cut to 8 loses 3/4 of its MACs and
under half its time (benchmarks/results/speedup_floor_profile.md), while a
cut that ends on a tile boundary buys the full step.

`allocation="latency"` ranks channels by score per estimated millisecond
saved instead: the greedy, first-order form of HALP's latency-saliency
knapsack (Shen et al., "Structural Pruning via Latency-Saliency Knapsack",
NeurIPS 2022). Each coupled group (the channels one layer's width ties
together, `accounting.group_members`) gets a price: the latency model's
estimate of the model with that group's lowest-scored half removed (after
the per-layer constraints, so `round_to` and `min_channels` apply), per
channel removed, every other group at full width. A channel's key is
score / price; channels whose group saves nothing (a width the kernels
round up anyway, layers the latency model does not time) go last, in score
order. The latency target is then met by the usual bisection over this order
(keras_slim.targets), so the plan is the same kind of object either way.

Prices are first-order: measured once, against the unpruned widths of the
neighbouring layers. HALP re-solves between fine-tuning steps; here the
multi-pass loop (keras_slim.training.multipass) plays that part. The cost
is one plan evaluation and one latency estimate per group.
"""
from __future__ import annotations

import math
from typing import Callable

from keras_slim import accounting, latency
from keras_slim.errors import ArgumentError

ALLOCATIONS = ("score", "latency")
PRICE_SHARE = 0.5  # the share of a group's channels removed to price it


def latency_order(order: list, scores: dict, coupling, decide: Callable, estimator
                  ) -> tuple[list, list]:
    """(`order` re-ranked by score per estimated ms saved, the price table).

    `decide(removed)` returns `(removed, state, (layers, kept, params, macs))`
    after the per-layer constraints, as in planning.plan. The price table is
    one row per group: {"layers", "channels", "priced" (channels removed to
    price it), "ms_per_channel"}.
    """
    _, _, (layers, _, _, _) = decide(set())
    full_ms = latency.estimate(estimator, layers)
    price: dict = {}
    table = []
    for group in accounting.group_members(coupling, scores):
        roots = sorted(group["roots"], key=lambda r: (scores[r], r))
        trial = set(roots[: max(1, int(math.ceil(PRICE_SHARE * len(roots))))])
        removed, _, (layers, _, _, _) = decide(trial)
        count = len(removed & set(roots))
        saved = full_ms - latency.estimate(estimator, layers) if count else 0.0
        # a fit's noise can make a cut look slower; it then saves nothing
        per_channel = max(saved, 0.0) / count if count else 0.0
        for r in roots:
            price[r] = per_channel
        table.append(dict(layers=group["layers"], channels=len(roots), priced=count,
                          ms_per_channel=per_channel))

    def key(r):
        p, s = price.get(r, 0.0), scores[r]
        if p > 0:
            return (0, s / p, r)
        # a channel that saves nothing: free ones (score 0, dead) still go first
        return (0, 0.0, r) if s == 0 else (1, s, r)

    return sorted(order, key=key), table


def check_allocation(allocation, budget: list) -> None:
    """`allocation=` validated against the targets given (`targets.check_targets`)."""
    if allocation not in ALLOCATIONS:
        raise ArgumentError(f"allocation must be one of {ALLOCATIONS}, got {allocation!r}")
    if allocation == "latency" and not any(t.kind == "latency_ms" for t in budget):
        raise ArgumentError(
            "allocation='latency' ranks channels by the time they save, so it needs a latency "
            "target: plan(model, target_latency_ms='60%', latency_model=lm, "
            "allocation='latency') with lm = keras_slim.export.LatencyModel.measure(model); "
            "without one, drop allocation (the default 'score' ranks by score alone)")
