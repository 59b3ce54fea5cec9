"""Sensitivity analysis: how much each coupled group can lose before the metric suffers.

`sensitivity(model, evaluate)` prunes one group at a time at each ratio
(every other group untouched), evaluates each pruned model with the user's
function and returns the table of metric vs ratio per group. Then
`plan(model, sensitivity=result, max_metric_drop=0.01)` gives every group
the largest ratio it tolerated, instead of one global threshold: the
standard way to choose per-layer ratios (Li et al., 2017).

`evaluate(model) -> float` may use a subset of the validation data: it runs
len(groups) x len(ratios) times.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from keras_slim import _jsonio, accounting, taylor
from keras_slim.errors import ArgumentError, ArgumentTypeError

DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclasses.dataclass
class SensitivityResult:
    """Metric after pruning each group alone at each ratio.

    `groups` holds per group: `name` (the layer that names it in
    `plan(group_ratios=...)`), `layers`, `channels` and `metrics` (one per
    ratio in `ratios`). `higher_is_better` says which way the metric goes.
    """

    baseline: float
    ratios: list
    groups: list
    higher_is_better: bool = True
    criterion: str = "bn_scale"

    def drop(self, metric: float) -> float:
        """How much worse `metric` is than the baseline (positive = worse)."""
        return self.baseline - metric if self.higher_is_better else metric - self.baseline

    def group_ratios(self, max_metric_drop: float) -> dict:
        """Per group, the largest ratio whose metric dropped at most `max_metric_drop`
        (and every smaller ratio did too); groups that tolerate none are left out."""
        if isinstance(max_metric_drop, bool) or not isinstance(max_metric_drop, (int, float)) \
                or max_metric_drop < 0:
            raise ArgumentError(f"max_metric_drop must be a number >= 0 (in the metric's "
                                f"units), got {max_metric_drop!r}")
        out = {}
        for g in self.groups:
            best = None
            for r, m in sorted(zip(self.ratios, g["metrics"])):
                if self.drop(m) > max_metric_drop + 1e-12:
                    break
                best = r
            if best is not None and best > 0:
                out[g["name"]] = float(best)
        return out

    def table(self) -> str:
        header = ["group", "channels"] + [f"{r:g}" for r in self.ratios]
        rows = [[g["name"] + (f" (+{len(g['layers']) - 1})" if len(g["layers"]) > 1 else ""),
                 str(g["channels"])] + [f"{m:.4g}" for m in g["metrics"]] for g in self.groups]
        widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
        lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip()
                 for row in [header] + rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return f"baseline {self.baseline:.4g}; metric after pruning one group at each ratio\n" \
            + "\n".join(lines)

    __str__ = table

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self, path: str | None = None) -> str:
        return _jsonio.to_json(self.to_dict(), path)

    @classmethod
    def from_dict(cls, d: dict) -> "SensitivityResult":
        return cls(**d)


def sensitivity(model, evaluate: Callable, ratios: Sequence[float] = DEFAULT_RATIOS, *,
                groups: Sequence[str] | None = None, higher_is_better: bool = True,
                verbose: int = 1, **plan_options) -> SensitivityResult:
    """Prune one coupled group at a time at each ratio and evaluate.

    Args:
        model: the model to analyse (never changed).
        evaluate: `evaluate(pruned_model) -> float`, e.g. validation accuracy.
            The pruned models are not compiled unless `model` was.
        ratios: fractions of each group's channels to remove, in (0, 1).
        groups: only these groups (a layer name of each, one that is in no
            other group; a str for one group); default: all
            prunable groups, widest first.
        higher_is_better: False for a loss.
        verbose: 1 shows a progress bar over the evaluations, 0 is silent.
        **plan_options: as for `keras_slim.plan` (criterion, min_channels, ...).

    Returns:
        A `SensitivityResult`; `plan(model, sensitivity=result,
        max_metric_drop=...)` turns it into per-group ratios.
    """
    import keras

    from keras_slim.pruning import plan, prune

    if not callable(evaluate):
        raise ArgumentTypeError(f"sensitivity: evaluate must be a function model -> float, "
                                f"got {type(evaluate).__name__}")
    try:
        ratios = [float(r) for r in (ratios if np.ndim(ratios) else [ratios])]
    except (TypeError, ValueError) as err:
        raise ArgumentError(f"sensitivity: ratios must be fractions in (0, 1), got "
                            f"{ratios!r}") from err
    if not ratios or any(not 0.0 < r < 1.0 for r in ratios):
        raise ArgumentError(f"sensitivity: ratios must be fractions in (0, 1), got {ratios}")
    with taylor.reusing_terms():  # a data criterion's gradients are computed once
        base = plan(model, 0.0, **plan_options)
        chosen = sorted(base.groups, key=lambda g: (-g["channels"], g["layers"]))
        chosen = [g for g in chosen if g["layers"]]
        names = {id(g): accounting.group_name(chosen, g) for g in chosen}
        if groups is not None:
            wanted = [groups] if isinstance(groups, str) else list(groups)
            chosen = [accounting.find_group(chosen, name, "sensitivity: groups",
                                            model.name) for name in wanted]
        # a group is named by a layer of its own, which group_ratios finds again; a group
        # with none (every layer shared with another group) cannot be addressed: skipped
        chosen = [g for g in chosen if names[id(g)] is not None]
        baseline = _metric(evaluate, model, "the unpruned model")
        bar = keras.utils.Progbar(len(chosen) * len(ratios), verbose=verbose,
                                  unit_name="evaluation")
        out = []
        for g in chosen:
            name = names[id(g)]
            metrics = []
            for r in ratios:
                small = prune(model, plan(model, group_ratios={name: r}, **plan_options))
                metrics.append(_metric(evaluate, small, f"group {name!r} at ratio {r:g}"))
                bar.add(1)
            out.append(dict(name=name, layers=g["layers"], channels=g["channels"],
                            metrics=metrics))
    return SensitivityResult(baseline, ratios, out, higher_is_better,
                             plan_options.get("criterion", "bn_scale"))


def _metric(evaluate, model, what: str) -> float:
    value = evaluate(model)
    try:
        value = float(np.asarray(value).reshape(()))
    except (TypeError, ValueError):
        raise ArgumentTypeError(f"sensitivity: evaluate must return one number; for {what} it "
                                f"returned {value!r}") from None
    if not np.isfinite(value):
        raise ArgumentError(f"sensitivity: evaluate returned {value} for {what}")
    return value
