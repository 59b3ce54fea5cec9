"""`keras-slim prune`: plan, print, prune and save."""
from __future__ import annotations

import argparse
import os

from keras_slim.cli.loading import (
    MODEL_EXTENSIONS, check_json_path, check_output_file, load_model,
)
from keras_slim.cli.output import EXIT_EXPORT, EXIT_OK, EXIT_UNSUPPORTED, logger
from keras_slim.cli.plan_options import check_prunable, make_plan, plan_options
from keras_slim.errors import CliError, PruneError


def run(args: argparse.Namespace) -> int:
    """Print the plan, then save the pruned model to -o."""
    import keras_slim

    check_output_file(args.output, MODEL_EXTENSIONS, "-o")
    check_json_path(args.plan_json, "--plan-json")
    if os.path.abspath(args.output) == os.path.abspath(args.model):
        raise CliError(f"-o {args.output!r} is the input model; write the pruned model to a "
                       "new file")
    if args.allocation == "latency" and args.target_latency_ms is None:
        raise CliError("--allocation latency needs a latency target (it ranks channels by the "
                       "time they save): add --target-latency-ms MS|N%, or drop --allocation")
    model = load_model(args.model, args.unsafe)
    check_prunable(model, args)
    logger.info("Planning ...")
    options = plan_options(args)
    options.update(target_macs=args.target_macs, target_params=args.target_params,
                   target_latency_ms=args.target_latency_ms, allocation=args.allocation)
    if args.target_latency_ms is not None or args.round_to == "auto":  # one model serves both
        options.update(latency_model=latency_model(model, args.latency_threads,
                                                   options.get("input_shape"),
                                                   args.latency_refresh))
    the_plan = make_plan(model, args.ratio, args.threshold, options)
    print(the_plan.table(only_changed=not args.full_table))
    print()
    print(the_plan.summary())
    if the_plan.barriers:
        print("barriers (channels kept): " + ", ".join(n for n, _ in the_plan.barriers))
    if args.plan_json:
        the_plan.to_json(args.plan_json)
        logger.info("Wrote %s", args.plan_json)

    logger.info("Pruning ...")
    try:
        small = keras_slim.prune(model, the_plan, fold_constants=not args.no_fold)
    except (TypeError, ValueError, PruneError) as err:
        raise CliError(f"pruning model {model.name!r} failed: {err}", EXIT_UNSUPPORTED) from err
    logger.info("Saving %s ...", args.output)
    try:
        small.save(args.output)
    except Exception as err:
        raise CliError(f"could not save the pruned model to {args.output!r} "
                       f"({type(err).__name__}): {err}", EXIT_EXPORT) from err
    print(f"saved {args.output} ({small.count_params():,} params, "
          f"{the_plan.macs_after:,} MACs)")
    return EXIT_OK


def latency_model(model, threads: int, input_shape, refresh: bool = False) -> object:
    """The per-layer LiteRT latency model of `model` (measured once, then cached)."""
    from keras_slim.export import LatencyModel

    logger.info("Measuring the latency model (%d thread(s); cached for next time) ...", threads)
    try:
        return LatencyModel.measure(model, threads=threads, input_shape=input_shape,
                                    refresh=refresh)
    except ImportError as err:
        raise CliError(str(err), EXIT_EXPORT) from err
    except (TypeError, ValueError) as err:
        raise CliError(f"cannot measure a latency model for {model.name!r}: {err}",
                       EXIT_UNSUPPORTED) from err
