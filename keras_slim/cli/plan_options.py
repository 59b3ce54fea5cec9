"""What `inspect` and `prune` share: the plan options, the prunability check and planning."""
from __future__ import annotations

import argparse
from typing import Any

from keras_slim.cli.output import EXIT_UNSUPPORTED
from keras_slim.errors import CliError


def plan_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of `keras_slim.plan` given on the command line."""
    return dict(min_channels=args.min_channels, max_layer_ratio=args.max_layer_ratio,
                round_to=args.round_to, exclude=tuple(args.exclude),
                channel_selection=not args.no_channel_selection,
                group_reduction=args.group_reduction,
                criterion=getattr(args, "criterion", "bn_scale"),
                normalize=_normalize(getattr(args, "normalize", "auto")),
                filter_removal=getattr(args, "filter_removal", "zero"),
                input_shape=input_shape_option(args))


def _normalize(text: str) -> str | None:
    return None if text == "none" else text


def input_shape_option(args: argparse.Namespace) -> Any:
    """--input-shape as keras_slim.plan's input_shape (one shape, or one per input)."""
    shapes = getattr(args, "input_shape", None)
    if not shapes:
        return None
    return shapes[0] if len(shapes) == 1 else [list(s) for s in shapes]


def mac_input(the_plan: Any) -> str:
    """'(224, 224, 3) (reference size for dynamic axes)': where the plan counted MACs."""
    shapes = ", ".join(str(tuple(s)) for s in the_plan.input_shapes or [])
    return shapes + (" (reference size for dynamic axes; set it with --input-shape)"
                     if the_plan.dynamic_input else "")


def check_prunable(model: Any, args: argparse.Namespace) -> list:
    """The model's BN layers with a scale; CliError if it cannot be slimmed."""
    from keras_slim import _keras

    try:
        _keras.check_graph_model(model, "keras-slim")
    except (TypeError, ValueError) as err:
        raise CliError(str(err), EXIT_UNSUPPORTED) from err
    layers = list(_keras.walk_layers(model))
    bns = [layer for layer in layers if _keras.is_batch_norm(layer)
           and getattr(layer, "gamma", None) is not None]
    if not bns and getattr(args, "criterion", "bn_scale") in ("bn_scale", "bn_scale_readers"):
        raise CliError(f"model {model.name!r} has no BatchNormalization layer with a scaling "
                       "factor (gamma), so Network Slimming has nothing to rank; add BN after "
                       "the convolutions and sparsity-train with keras_slim.add_bn_l1, or rank "
                       "filters instead with --criterion l1",
                       EXIT_UNSUPPORTED)
    names = {layer.name for layer in layers}
    unknown = [n for n in args.exclude if n not in names]
    if unknown:
        raise CliError(f"--exclude names layers that are not in model {model.name!r}: "
                       f"{unknown}; run 'keras-slim inspect' to see the layer names")
    if getattr(args, "input_shape", None):
        from keras_slim.graph import resolve_input_shapes

        tensors = _keras.flatten(_keras.read_model(model).inputs)
        try:
            resolve_input_shapes([tuple(t.shape) for t in tensors],
                                 [_keras.input_name(t) or "input" for t in tensors],
                                 input_shape_option(args), model.name)
        except ValueError as err:
            raise CliError(f"--input-shape: {err}") from err
    return bns


def make_plan(model: Any, ratio: float | None, threshold: float | None, options: dict) -> Any:
    """`keras_slim.plan`; a failure is the model's (the arguments were checked): exit 3."""
    import keras_slim

    try:
        return keras_slim.plan(model, ratio, threshold=threshold, **options)
    except (TypeError, ValueError) as err:  # arguments were checked: the model is the problem
        raise CliError(f"cannot plan pruning for model {model.name!r}: {err}",
                       EXIT_UNSUPPORTED) from err
