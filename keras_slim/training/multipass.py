"""Multi-pass Network Slimming: prune a little, fine-tune, repeat.

Liu et al. (2017, Sec. 4 and Table 2) iterate "prune, then fine-tune with the
sparsity penalty" several times and reach a higher total compression than one
pass at a similar accuracy; the per-pass cap on how much any one layer may
lose keeps a layer from being emptied in one step. `slim_multipass` runs that
loop with explicit stopping rules and a record of every pass
(`keras_slim.training.multipass_result`).
"""
from __future__ import annotations

import logging
import math
import time
from typing import Any, Callable, Mapping

import numpy as np

from keras_slim import _keras
from keras_slim.errors import ArgumentError, ArgumentTypeError
from keras_slim.pruning import plan as make_plan, prune
from keras_slim.sparsity import add_bn_l1
from keras_slim.training.multipass_result import STOP_REASONS, MultiPassResult, PassRecord

logger = logging.getLogger(__name__)

__all__ = ["MultiPassResult", "PassRecord", "STOP_REASONS", "slim_multipass"]


# ---------------------------------------------------------------- arguments
def _check_fraction(name: str, value, low_open: bool = True, high: float = 1.0,
                    high_open: bool = True, allow_none: bool = False):
    if value is None and allow_none:
        return None
    ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool)
    if ok:
        v = float(value)
        ok = (v > 0 if low_open else v >= 0) and (v < high if high_open else v <= high)
    if not ok:
        lo = "(0" if low_open else "[0"
        hi = f"{high:g})" if high_open else f"{high:g}]"
        none = " or None" if allow_none else ""
        raise ArgumentError(f"slim_multipass: {name} must be a number in {lo}, {hi}{none}, "
                            f"got {value!r}")
    return float(value)


def _check_callable(name: str, value, returns: str) -> None:
    if value is not None and not callable(value):
        raise ArgumentTypeError(f"slim_multipass: {name} must be a callable(model) -> {returns}, "
                                f"got {type(value).__name__}")


def _check_args(model, target_ratio, target_macs, per_pass_ratio, max_layer_ratio, fine_tune,
                fit_kwargs, evaluate, max_accuracy_drop, max_passes, sparsity, compile_fn,
                plan_options):
    _keras.check_graph_model(model, "slim_multipass")
    if target_ratio is not None and target_macs is not None:
        raise ArgumentError("slim_multipass: give at most one of target_ratio (fraction of the "
                            "original prunable channels to remove) and target_macs, got both "
                            f"(target_ratio={target_ratio!r}, target_macs={target_macs!r})")
    target_ratio = _check_fraction("target_ratio", target_ratio, allow_none=True)
    if target_macs is not None:
        if isinstance(target_macs, bool) or not isinstance(target_macs, (int, float, np.number)) \
                or not target_macs > 0 or not math.isfinite(float(target_macs)):
            raise ArgumentError("slim_multipass: target_macs must be a positive number: a MAC "
                                "count (> 1) or a fraction of the original model's MACs (<= 1), "
                                f"got {target_macs!r}")
    per_pass_ratio = _check_fraction("per_pass_ratio", per_pass_ratio)
    max_layer_ratio = _check_fraction("max_layer_ratio", max_layer_ratio, high_open=False,
                                      allow_none=True)
    if fine_tune is not None and fit_kwargs is not None:
        raise ArgumentError("slim_multipass: give fine_tune (a callable(model) that trains the "
                            "model in place) or fit_kwargs (a dict for model.fit), not both")
    _check_callable("fine_tune", fine_tune, "None")
    if fit_kwargs is not None and not isinstance(fit_kwargs, Mapping):
        raise ArgumentTypeError("slim_multipass: fit_kwargs must be a dict of model.fit "
                                "arguments (e.g. dict(x=x, y=y, epochs=5)), got "
                                f"{type(fit_kwargs).__name__}")
    _check_callable("evaluate", evaluate, "float accuracy")
    if max_accuracy_drop is not None:
        if isinstance(max_accuracy_drop, bool) or not isinstance(
                max_accuracy_drop, (int, float, np.floating)) or not max_accuracy_drop >= 0:
            raise ArgumentError("slim_multipass: max_accuracy_drop must be a number >= 0 (in the "
                                "units evaluate returns, e.g. 0.01 = one point of accuracy), got "
                                f"{max_accuracy_drop!r}")
        if evaluate is None:
            raise ArgumentError("slim_multipass: max_accuracy_drop needs evaluate=callable(model) "
                                "-> accuracy to measure the drop")
    if isinstance(max_passes, bool) or not isinstance(max_passes, (int, np.integer)) \
            or max_passes < 1:
        raise ArgumentError("slim_multipass: max_passes must be an integer >= 1, got "
                            f"{max_passes!r}")
    if sparsity is not None and (isinstance(sparsity, bool) or not isinstance(
            sparsity, (int, float, np.floating)) or not sparsity >= 0):
        raise ArgumentError("slim_multipass: sparsity must be the L1 strength (>= 0; 0 removes "
                            f"the penalty) or None to keep the model's own, got {sparsity!r}")
    _check_callable("compile_fn", compile_fn, "None")
    plan_options = dict(plan_options or {})
    clash = sorted(set(plan_options) & {"ratio", "threshold", "max_layer_ratio"})
    if clash:
        raise ArgumentError(f"slim_multipass: plan_options may not set {clash}; the pass ratio "
                            "comes from per_pass_ratio/targets and max_layer_ratio is its own "
                            "argument")
    return target_ratio, per_pass_ratio, max_layer_ratio, plan_options


def _accuracy(evaluate, model, what: str) -> float | None:
    if evaluate is None:
        return None
    value = evaluate(model)
    try:
        value = float(value)
    except (TypeError, ValueError) as e:
        raise ArgumentTypeError(f"slim_multipass: evaluate must return a number (accuracy), got "
                                f"{value!r} for the {what}") from e
    if not math.isfinite(value):
        raise ArgumentError(f"slim_multipass: evaluate returned {value} for the {what}")
    return value


# ---------------------------------------------------------------- the loop
def slim_multipass(
    model,
    *,
    target_ratio: float | None = None,
    target_macs: float | None = None,
    per_pass_ratio: float = 0.5,
    max_layer_ratio: float | None = 0.5,
    fine_tune: Callable[[Any], None] | None = None,
    fit_kwargs: Mapping[str, Any] | None = None,
    evaluate: Callable[[Any], float] | None = None,
    max_accuracy_drop: float | None = None,
    max_passes: int = 5,
    sparsity: float | None = 1e-4,
    compile_fn: Callable[[Any], None] | None = None,
    plan_options: Mapping[str, Any] | None = None,
) -> MultiPassResult:
    """Prune `model` in several passes, fine-tuning (with the sparsity penalty) after each.

    Each pass: plan and prune up to `per_pass_ratio` of the current model's
    prunable channels (no layer losing more than `max_layer_ratio` of its
    own), measure the accuracy, re-apply the BN-L1 penalty (`sparsity`),
    compile (`compile_fn`, else the pruned model keeps the compile
    configuration `keras_slim.prune` copies), fine-tune, measure again.

    It stops when

    * the cumulative target (`target_ratio` of the original prunable
      channels, or `target_macs`) is reached; the last pass prunes only what
      is needed;
    * a fine-tuned pass is more than `max_accuracy_drop` below the input
      model's accuracy: that pass is recorded as rejected and the previous
      model is the result;
    * a plan removes nothing (all layers at `max_layer_ratio`/`min_channels`
      limits, or no prunable channel left);
    * `max_passes` passes have run.

    Args:
        model: a sparsity-trained Functional or Sequential model (not changed).
        target_ratio: fraction in (0, 1) of the original model's prunable
            channels to remove in total.
        target_macs: MACs to reach: a count (> 1), or a fraction (<= 1) of the
            original model's MACs. At most one of the two targets.
        per_pass_ratio: at most this fraction (0, 1) of the current model's
            prunable channels is removed per pass.
        max_layer_ratio: no layer loses more than this fraction (0, 1] of its
            channels in one pass; None for no cap.
        fine_tune: callable(model) that trains the pruned model in place.
        fit_kwargs: instead of `fine_tune`, arguments for ``model.fit``.
            Without either, passes only prune (a warning is logged).
        evaluate: callable(model) -> accuracy (higher is better).
        max_accuracy_drop: largest allowed ``baseline - accuracy`` after
            fine-tuning, in `evaluate`'s units; needs `evaluate`.
        max_passes: most passes to run (>= 1).
        sparsity: BN-L1 strength put on the pruned model before fine-tuning
            (the paper fine-tunes multi-pass models with the penalty); 0
            removes it, None keeps what the model carries.
        compile_fn: callable(model) that compiles the pruned model (e.g. with
            a fresh optimizer and learning rate); needed with `fit_kwargs` when
            `model` is not compiled.
        plan_options: more `keras_slim.plan` options (min_channels, round_to,
            exclude, channel_selection, group_reduction).

    Returns:
        A `MultiPassResult` (``.best_model``, ``.final_model``, ``.passes``,
        ``.table()``, ``.to_json()``).
    """
    target_ratio, per_pass_ratio, max_layer_ratio, plan_options = _check_args(
        model, target_ratio, target_macs, per_pass_ratio, max_layer_ratio, fine_tune, fit_kwargs,
        evaluate, max_accuracy_drop, max_passes, sparsity, compile_fn, plan_options)
    if fine_tune is None and fit_kwargs is None:
        logger.warning("slim_multipass: no fine_tune or fit_kwargs given, so the passes prune "
                       "without training in between; that is one-shot pruning in steps.")

    start = make_plan(model, 0.0, max_layer_ratio=max_layer_ratio, **plan_options)
    original_channels = start.prunable_channels
    # parameters are counted on the built models: a plan's params_after leaves out the
    # biases prune adds where it folds removed channels' constant output downstream
    original_params, original_macs = int(model.count_params()), start.macs_before
    macs_goal = None
    if target_macs is not None:
        macs_goal = float(target_macs) * original_macs if target_macs <= 1 else float(target_macs)
    target_count = None if target_ratio is None else int(round(target_ratio * original_channels))

    baseline = _accuracy(evaluate, model, "input model")
    if baseline is not None:
        logger.info("slim_multipass: input model: %d prunable channels, %d params, %d MACs, "
                    "accuracy %.4f", original_channels, original_params, original_macs, baseline)

    passes: list[PassRecord] = []
    current, best, final = model, model, model
    current_channels, current_macs = original_channels, original_macs
    removed_total = 0

    def reached() -> bool:
        if target_count is not None:
            return removed_total >= target_count
        if macs_goal is not None:
            return current_macs <= macs_goal
        return False

    stop = "max_passes"
    if original_channels == 0:
        stop = "nothing_to_prune"
    for index in range(1, max_passes + 1):
        if stop == "nothing_to_prune" or reached():
            stop = "nothing_to_prune" if stop == "nothing_to_prune" else "target_reached"
            break
        t0 = time.time()
        opts = dict(max_layer_ratio=max_layer_ratio, **plan_options)
        want = min(int(round(per_pass_ratio * current_channels)), current_channels - 1)
        if target_count is not None:
            want = min(want, target_count - removed_total)
        if want < 1:
            stop = "nothing_to_prune" if target_count is None else "target_reached"
            break
        if macs_goal is not None:
            the_plan, want = _plan_for_macs(make_plan, current, current_channels, want,
                                            macs_goal, opts)
        else:
            the_plan = make_plan(current, want / current_channels, **opts)
        requested = want / current_channels
        if the_plan.removed_channels == 0:
            logger.info("slim_multipass: pass %d: the plan removes nothing (layer limits "
                        "reached); stopping", index)
            stop = "nothing_to_prune"
            break
        pruned = prune(current, the_plan)
        acc_pruned = _accuracy(evaluate, pruned, f"pass {index} pruned model")
        if sparsity is not None:
            add_bn_l1(pruned, sparsity)
        if compile_fn is not None:
            compile_fn(pruned)
        if fine_tune is not None:
            fine_tune(pruned)
        elif fit_kwargs is not None:
            if not getattr(pruned, "compiled", False):
                raise ArgumentError(
                    "slim_multipass: the pruned model is not compiled, so fit_kwargs cannot "
                    "train it. Compile the input model before calling slim_multipass "
                    "(prune copies its compile configuration) or pass compile_fn=callable(model)."
                )
            pruned.fit(**dict(fit_kwargs))
        acc_tuned = _accuracy(evaluate, pruned, f"pass {index} fine-tuned model")
        accepted = (max_accuracy_drop is None or acc_tuned is None
                    or baseline - acc_tuned <= max_accuracy_drop + 1e-12)
        after_channels = the_plan.prunable_channels - the_plan.removed_channels
        record = PassRecord(
            index=index,
            requested_ratio=requested,
            ratio=the_plan.ratio,
            cumulative_ratio=(1.0 - (original_channels - removed_total - the_plan.removed_channels)
                              / original_channels),
            channels_before=the_plan.prunable_channels,
            channels_after=after_channels,
            params_before=int(current.count_params()),
            params_after=int(pruned.count_params()),
            macs_before=the_plan.macs_before,
            macs_after=the_plan.macs_after,
            accuracy_pruned=acc_pruned,
            accuracy_fine_tuned=acc_tuned,
            accepted=accepted,
            seconds=round(time.time() - t0, 3),
            plan=the_plan.to_dict(),
        )
        passes.append(record)
        final = pruned
        logger.info(
            "slim_multipass: pass %d: removed %d/%d channels (%.1f%% of the original in total), "
            "params %d -> %d, MACs %d -> %d, accuracy %s -> %s%s", index,
            the_plan.removed_channels, the_plan.prunable_channels, 100 * record.cumulative_ratio,
            record.params_before, record.params_after, the_plan.macs_before,
            the_plan.macs_after, _fmt(acc_pruned), _fmt(acc_tuned),
            "" if accepted else f" (more than {max_accuracy_drop} below {baseline:.4f}: rejected)")
        if not accepted:
            stop = "accuracy_drop"
            break
        best = current = pruned
        removed_total += the_plan.removed_channels
        current_channels, current_macs = after_channels, the_plan.macs_after
        if current_channels == 0:
            stop = "nothing_to_prune"
            break
    else:
        if reached():
            stop = "target_reached"

    result = MultiPassResult(
        passes=passes, final_model=final, best_model=best, baseline_accuracy=baseline,
        stop_reason=stop, original_params=original_params, original_macs=original_macs,
        original_channels=original_channels)
    logger.info("slim_multipass: stopped (%s) after %d pass(es); best: %.1f%% of channels "
                "removed, params %d -> %d, MACs %d -> %d", stop, len(passes),
                100 * result.cumulative_ratio, original_params, result.params, original_macs,
                result.macs)
    return result


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def _plan_for_macs(make_plan, model, channels: int, most: int, goal: float, opts: dict):
    """The smallest removal (<= `most` channels) whose plan reaches `goal` MACs.

    MACs fall monotonically with the number of channels removed, so this is a
    bisection over plans (planning is cheap: no model is built).
    """
    top = make_plan(model, most / channels, **opts)
    if top.macs_after > goal:
        return top, most
    lo, hi, best = 1, most, top
    while lo < hi:
        mid = (lo + hi) // 2
        p = make_plan(model, mid / channels, **opts)
        if p.macs_after <= goal:
            hi, best = mid, p
        else:
            lo = mid + 1
    return best, hi  # `best` is always the plan at `hi`
