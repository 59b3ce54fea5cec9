"""What plan() says about its input: argument checks, the warnings it gives
(barriers, bottlenecks) and why a model has nothing to rank."""
from __future__ import annotations

import warnings

import numpy as np

from keras_slim import _keras, criteria, latency
from keras_slim.errors import ArgumentError


def no_scaling_factor_message(model, graph, criterion: str = criteria.BN_SCALE) -> str:
    """Why nothing can be ranked: no BN at all, or BNs hidden inside custom layers."""
    seen = {id(call.layer) for call in graph.calls}
    hidden: dict[str, list] = {}  # custom layer (as the graph sees it) -> its BN layers
    reasons: list = []  # why the first of them could not be traced
    for call in graph.calls:
        if not _keras.is_layer(call.layer):
            continue
        bns = [sub for sub in _keras.walk_layers(call.layer)
               if _keras.is_batch_norm(sub) and id(sub) not in seen]
        if bns:
            hidden[f"{call.layer.name} ({type(call.layer).__name__})"] = bns
            why = graph.trace_failures.get(id(call.layer))
            if why and not reasons:
                reasons.append(why)
    if not criteria.scores_gammas(criterion):
        return (f"model {model.name!r} has no Conv/Dense layer whose output channels "
                f"criterion {criterion!r} could score (they are all model outputs, barriers "
                "or inside custom layers keras_slim cannot see into)"
                + (f". Tracing was tried: {reasons[0]}" if reasons else "."))
    if not hidden:
        return (f"model {model.name!r} has no BatchNormalization with a scaling factor "
                "(scale=True) on the channel axis, so Network Slimming has nothing to rank. "
                "Add BN after the convolutions you want to prune and train with "
                "keras_slim.add_bn_l1, or rank the filters instead: "
                "plan(model, ratio, criterion='l1').")
    n_bn = sum(len(v) for v in hidden.values())
    n_channels = sum(int(_keras.weight(bn, "moving_mean").shape[-1])
                     for v in hidden.values() for bn in v)
    classes = sorted({name.split(" (")[1].rstrip(")") for name in hidden})
    names = list(hidden)
    return (f"model {model.name!r}: all {n_bn} BatchNormalization layers ({n_channels:,} "
            f"channels) sit inside custom layers that keras_slim cannot see into: "
            f"{', '.join(names[:6])}{f' and {len(names) - 6} more' if len(names) > 6 else ''}. "
            f"Register a handler for {', '.join(classes[:6])} (keras_slim.register_handler, or "
            "plan(..., custom_handlers={Class: handler})) that describes how channels flow "
            "through it, or build the model from stock Keras layers."
            + (f" Tracing was tried: {reasons[0]}" if reasons else ""))


# A layer cut to at most _BOTTLENECK_CHANNELS channels and below _BOTTLENECK_SHARE of
# its width is reported: after real sparsity training that is the point, but on a
# model trained without the penalty it means one layer's factors all sat under the
# global threshold.
_BOTTLENECK_CHANNELS = 4
_BOTTLENECK_SHARE = 0.05


def warn_bottlenecks(layers: list, cut: float) -> None:
    """Warn about weighted layers the global threshold reduces to a handful of channels."""
    narrow = [f"{row.name!r} ({row.channels_after} of {row.channels_before})"
              for row in layers
              if row.macs_before > 0 and row.channels_before is not None
              and row.channels_after <= _BOTTLENECK_CHANNELS
              and row.channels_after < _BOTTLENECK_SHARE * row.channels_before]
    if narrow:
        warnings.warn(
            f"keras_slim: the global threshold (score {cut:.3g}) leaves these layers "
            "almost no output channels: " + ", ".join(narrow[:8])
            + (f" and {len(narrow) - 8} more" if len(narrow) > 8 else "")
            + ". Each becomes a bottleneck of the whole network. That is expected when "
            "sparsity training drove their scaling factors to zero; if it did not (no or "
            "short sparsity training, keras_slim.add_bn_l1), rank each layer's scores "
            "against its own mean with normalize='mean', or bound the cut with "
            "max_layer_ratio (e.g. 0.9) or min_channels.", stacklevel=3)


def warn_barriers(coupling, scored) -> None:
    """Warn once about barriers that keep channels a BN could have scored."""
    blocking = []
    for name, reason, ids in coupling.barriers:
        if any(r in scored for r in coupling.root_of[ids].tolist()):
            blocking.append(f"{name!r} ({reason})")
    if blocking:
        warnings.warn(
            "keras_slim: these layers are barriers, so the channels reaching them are kept: "
            + ", ".join(blocking) + ". Register a handler (keras_slim.register_handler) "
            "if they are channel-wise.", stacklevel=3)


def _is_number(x) -> bool:
    """A real number (numpy scalars too), not a bool."""
    return not isinstance(x, (bool, np.bool_)) and isinstance(x, (int, float, np.integer,
                                                                 np.floating))


def check_args(ratio, threshold, min_channels, max_layer_ratio, round_to, group_reduction):
    if (ratio is None) == (threshold is None):
        raise ArgumentError("give exactly one of ratio (fraction of channels to remove, in [0, 1)) "
                         f"or threshold (remove scores below it); got ratio={ratio!r}, threshold={threshold!r}")
    if ratio is not None:
        if not _is_number(ratio) or not 0.0 <= float(ratio) < 1.0:
            raise ArgumentError(f"ratio must be a number in [0, 1) (e.g. 0.5 removes half of the "
                             f"prunable channels), got {ratio!r}")
        ratio = float(ratio)
    if threshold is not None:
        if not (_is_number(threshold) and float(threshold) >= 0):
            raise ArgumentError(f"threshold must be a number >= 0 (channels scoring below it "
                                f"go), got {threshold!r}")
        threshold = float(threshold)
    if not (isinstance(min_channels, (int, np.integer)) and min_channels >= 1):
        raise ArgumentError(f"min_channels must be an integer >= 1 (no layer may become zero-width), "
                         f"got {min_channels!r}")
    if max_layer_ratio is not None and not (_is_number(max_layer_ratio)
                                            and 0.0 < float(max_layer_ratio) <= 1.0):
        raise ArgumentError(f"max_layer_ratio must be in (0, 1] or None, got {max_layer_ratio!r}")
    if isinstance(round_to, bool) or not (isinstance(round_to, (int, np.integer))
                                          and round_to >= 1):
        raise _bad_round_to(round_to)
    if group_reduction not in criteria.reductions():
        raise ArgumentError(f"group_reduction={group_reduction!r} is not known; use one of "
                         f"{criteria.reductions()}")
    return ratio, threshold


def _bad_round_to(value) -> ArgumentError:
    return ArgumentError(f"round_to must be an integer >= 1 (e.g. 8 for mobile SIMD) or 'auto' "
                         f"(the channel multiple latency_model= prefers), got {value!r}")


def round_to_option(round_to, latency_model) -> tuple[object, str | None]:
    """(round_to, where it came from): "auto" asks latency_model for its preferred multiple.

    Anything but the string "auto" is returned as given (check_args checks it)
    with None as its source.
    """
    if not isinstance(round_to, str):
        return round_to, None
    if round_to.strip().lower() != "auto":
        raise _bad_round_to(round_to)
    multiple, source = latency.preferred_multiple(latency_model)
    return multiple, f"preferred multiple of {source}"


def group_ratios_option(group_ratios, sensitivity, max_metric_drop) -> dict | None:
    """plan()'s per-group ratios: given directly, or chosen from a sensitivity result."""
    if (sensitivity is None) != (max_metric_drop is None):
        raise ArgumentError("give sensitivity= and max_metric_drop= together (the largest "
                            "metric drop each group may cause), got only "
                            + ("sensitivity" if sensitivity is not None else "max_metric_drop"))
    if sensitivity is not None:
        if group_ratios is not None:
            raise ArgumentError("give group_ratios= or sensitivity=, not both")
        if not hasattr(sensitivity, "group_ratios"):
            raise ArgumentError(f"sensitivity must be the result of keras_slim.sensitivity, "
                                f"got {type(sensitivity).__name__}")
        group_ratios = sensitivity.group_ratios(max_metric_drop)
    if group_ratios is None:
        return None
    if not isinstance(group_ratios, dict) or not all(isinstance(k, str) for k in group_ratios):
        raise ArgumentError(f"group_ratios must map layer names to ratios, e.g. "
                            f"{{'conv2': 0.5}}, got {group_ratios!r}")
    for name, r in group_ratios.items():
        if not _is_number(r) or not 0.0 <= float(r) < 1.0:
            raise ArgumentError(f"group_ratios[{name!r}] must be a ratio in [0, 1), got {r!r}")
    return {k: float(v) for k, v in group_ratios.items()}
