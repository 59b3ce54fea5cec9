"""The public entry points: `plan` and `prune`."""
from __future__ import annotations

import logging
from typing import Iterable, Union

from keras_slim import _keras
from keras_slim.constants import folds
from keras_slim.planning import Plan, make_plan
from keras_slim.surgery import rebuild

logger = logging.getLogger(__name__)


def plan(
    model,
    ratio: float | None = None,
    *,
    threshold: float | None = None,
    min_channels: int = 1,
    max_layer_ratio: float | None = None,
    round_to: int = 1,
    exclude: Iterable[str] = (),
    channel_selection: bool = True,
    group_reduction: str = "mean",
) -> Plan:
    """Work out what pruning `model` would remove, without building anything.

    Channels are ranked globally by the |gamma| of their BatchNormalization
    scaling factors (combined over coupled layers by `group_reduction`) and
    exactly `round(ratio * prunable)` of the lowest are cut, before the
    per-layer constraints give some back.

    Args:
        model: a built Functional or Sequential Keras model (nested models,
            several inputs/outputs and shared layers are fine).
        ratio: fraction of prunable channels to remove, in [0, 1).
        threshold: instead of `ratio`, remove every channel scoring below it.
        min_channels: fewest channels any layer keeps (>= 1).
        max_layer_ratio: most any one layer may lose, e.g. 0.5 (the paper's
            multi-pass setting); None for no cap.
        round_to: keep channel counts at multiples of this (8 suits ARM SIMD);
            a layer narrower than it is left alone.
        exclude: names of layers whose output channels must all stay.
        channel_selection: let a BN whose input is shared (after Add or
            Concatenate) prune its own copy through a gather.
        group_reduction: how the |gamma| of coupled BNs combine: "mean",
            "max" or "sum" (see keras_slim.criteria).

    Returns:
        A `Plan`: kept channel indices per layer, coupled groups, barriers,
        params and MACs before/after; `print(plan)` shows the table.
    """
    return make_plan(model, ratio, threshold=threshold, min_channels=min_channels,
                     max_layer_ratio=max_layer_ratio, round_to=round_to, exclude=exclude,
                     channel_selection=channel_selection, group_reduction=group_reduction)


def prune(model, ratio_or_plan: Union[float, Plan, None] = None, *, fold_constants: bool = True,
          **options):
    """Return a new, physically smaller model with the low-|gamma| channels removed.

    Convolution filters, dense units, BN parameters and statistics, and the
    matching input slices of every downstream layer are cut; nothing is
    masked. Where the removed channels have gamma = beta = 0 the new model
    computes the same function as `model` (to float tolerance). `model`
    itself is never changed.

    Args:
        model: the trained (ideally sparsity-trained) Keras model.
        ratio_or_plan: a ratio in [0, 1) or a `Plan` made by `keras_slim.plan`
            from this same model.
        fold_constants: a removed channel with gamma ~ 0 but beta != 0 still
            emits the constant act(beta); add its contribution to the next
            layer's bias (exact for Dense, 1x1/'valid' convs and after global
            pooling; exact away from the borders for 'same' convs) so pruning
            loses as little as possible before fine-tuning.
        **options: as for `keras_slim.plan` (threshold, min_channels,
            max_layer_ratio, round_to, exclude, channel_selection,
            group_reduction).

    Returns:
        A new `keras.Model` (Sequential stays Sequential). If `model` was
        compiled, the new one is compiled with the same configuration.
    """
    if isinstance(ratio_or_plan, Plan):
        if options:
            raise TypeError(f"prune: options {sorted(options)} cannot be combined with a Plan; "
                            "pass them to keras_slim.plan instead")
        the_plan = ratio_or_plan
        if the_plan._state is None or the_plan._state.model is not model:
            raise ValueError("prune: this Plan was made from a different model; call "
                             "keras_slim.plan(model, ...) on the model you are pruning")
    else:
        if ratio_or_plan is None and options.get("threshold") is None:
            raise TypeError("prune: give a ratio in [0, 1) (e.g. prune(model, 0.5)), "
                            "threshold=..., or a Plan")
        the_plan = make_plan(model, ratio_or_plan, **options)
    new = rebuild(the_plan._state, folds(the_plan._state) if fold_constants else None)
    _copy_compile(model, new)
    return new


def _copy_compile(old, new) -> None:
    if not getattr(old, "compiled", False):
        return
    try:
        config = old.get_compile_config()
        if config:
            new.compile_from_config(config)
    except Exception as e:  # a custom loss/metric that does not serialize
        logger.warning("keras_slim.prune: could not copy the compile configuration (%s); "
                       "compile the pruned model yourself before fine-tuning.", e)
