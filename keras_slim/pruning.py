"""The public entry point `prune` (and `plan`, re-exported from planning)."""
from __future__ import annotations

import logging
from typing import Union

from keras_slim import _keras
from keras_slim.fold_constants import folds
from keras_slim.planning import Plan, plan
from keras_slim.surgery import rebuild
from keras_slim.errors import ArgumentError, ArgumentTypeError, ModelError

logger = logging.getLogger(__name__)


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
        ratio_or_plan: a ratio in [0, 1), or a `Plan` made by `keras_slim.plan`
            from this same model, or one read back with `Plan.from_json`
            (checked against `model`: its kept channels must be reachable).
        fold_constants: a removed channel with gamma ~ 0 but beta != 0 still
            emits the constant act(beta); add its contribution to the next
            layer's bias (exact for Dense, 1x1/'valid' convs, SeparableConv
            and after global pooling; exact away from the borders for 'same'
            convs, see plan's `border_folds`). The plan only removes a constant
            channel where its readers can absorb it, so with folding on the
            result is exact for gamma = 0; False drops the constants instead
            (the paper's behaviour: the pruned model then differs by them).
        **options: as for `keras_slim.plan` (threshold, target_macs,
            target_params, target_latency_ms, latency_model, criterion, data,
            loss, normalize, min_channels, max_layer_ratio, round_to, exclude,
            channel_selection, group_reduction, group_ratios, sensitivity,
            max_metric_drop, border_folds, custom_handlers, input_shape); round_to="auto"
            needs latency_model= as in plan. With a plan read
            from JSON only `custom_handlers` may be given (handlers are code,
            not part of the saved plan).

    Returns:
        A new `keras.Model` (Sequential stays Sequential). If `model` was
        compiled, the new one is compiled with the same configuration.
    """
    if isinstance(ratio_or_plan, Plan):
        custom = options.pop("custom_handlers", None)
        if options or (custom is not None and ratio_or_plan._state is not None):
            raise ArgumentTypeError(f"prune: options {sorted(options) or ['custom_handlers']} cannot be "
                            "combined with a Plan; pass them to keras_slim.plan instead "
                            "(custom_handlers= is allowed with a plan read from JSON)")
        the_plan = ratio_or_plan
        if the_plan._state is None:  # read back from JSON: check it against this model
            saved = the_plan
            # round_to_auto records where round_to came from; round_to itself is replayed
            replay = {k: v for k, v in saved.options.items() if k != "round_to_auto"}
            the_plan = plan(model, kept=saved.kept, custom_handlers=custom, **replay)
            widths = [(r.name, r.channels_before) for r in the_plan.layers]
            if widths != [(r.name, r.channels_before) for r in saved.layers]:
                raise ModelError(f"prune: the saved plan was made for another model than "
                                 f"{model.name!r} (its layers or widths differ)")
        elif the_plan._state.model is not model:
            raise ArgumentError("prune: this Plan was made from a different model; call "
                             "keras_slim.plan(model, ...) on the model you are pruning")
        elif the_plan._state.weights_digest != _keras.weights_digest(model):
            # trained or set since planning: the constants the plan folds are stale, so
            # check its channels against the weights now, as a plan read from JSON is
            logger.warning("keras_slim.prune: %r's weights changed since this plan was made; "
                           "replaying its kept channels against the current weights",
                           model.name)
            replay = {k: v for k, v in the_plan.options.items() if k != "round_to_auto"}
            the_plan = plan(model, kept=the_plan.kept,
                            custom_handlers=the_plan._state.custom_handlers, **replay)
    else:
        if ratio_or_plan is None and all(options.get(k) is None for k in (
                "threshold", "target_macs", "target_params", "target_latency_ms")):
            raise ArgumentTypeError("prune: give a ratio in [0, 1) (e.g. prune(model, 0.5)), "
                                    "threshold=..., target_macs=/target_params=/"
                                    "target_latency_ms=, or a Plan")
        the_plan = plan(model, ratio_or_plan, **options)
    # a model built under a tf.distribute strategy gets its copy built (and compiled) there
    with _keras.strategy_scope(model):
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
