"""`keras-slim inspect`: gamma statistics, coupled groups, barriers and a ratio table."""
from __future__ import annotations

import argparse
from typing import Any, Sequence

import numpy as np

from keras_slim.cli.loading import check_json_path, load_model
from keras_slim.cli.output import EXIT_OK, logger, table, write_json
from keras_slim.cli.plan_options import check_prunable, mac_input, make_plan, plan_options
from keras_slim.errors import CliError
from keras_slim.training.stats import gamma_statistics as shared_gamma_statistics


def gamma_statistics(bns: Sequence[Any]) -> list[dict]:
    """Per-BN |gamma| statistics plus an "(all)" row over every scaling factor.

    The numbers come from `keras_slim.training.stats.gamma_statistics`, the one
    place they are computed, so `inspect` agrees with SparsityMonitor and the plots.
    """
    rows, everything = [], []
    for layer in bns:
        g = np.abs(np.asarray(layer.gamma.numpy(), dtype=np.float64)).ravel()
        everything.append(g)
        rows.append(_gamma_row(layer.name, g))
    if everything:
        rows.append(_gamma_row("(all)", np.concatenate(everything)))
    return rows


def _gamma_row(name: str, g: np.ndarray) -> dict:
    s = shared_gamma_statistics(g, thresholds=(1e-2, 1e-3), ratios=())
    return dict(layer=name, count=s["channels"], min=s["min"], median=s["median"],
                max=s["max"], below_1e_2=s["below"][1e-2], below_1e_3=s["below"][1e-3])


def run(args: argparse.Namespace) -> int:
    """Print the report; with --json also write it."""
    check_json_path(args.json, "--json")
    if args.round_to == "auto":
        raise CliError("--round-to auto is for 'keras-slim prune' (it measures a LiteRT latency "
                       "model); give inspect a number, e.g. --round-to 32 on x86 AVX512")
    model = load_model(args.model, args.unsafe)
    bns = check_prunable(model, args)
    options = plan_options(args)
    stats = gamma_statistics(bns)
    logger.info("Planning %d ratio(s) ...", len(args.ratios))
    base = make_plan(model, 0.0, None, options)
    plans = [(r, make_plan(model, r, None, options)) for r in args.ratios]

    out = [f"model {model.name!r} ({type(model).__name__}): {base.params_before:,} params, "
           f"{base.macs_before:,} MACs, {len(bns)} BatchNormalization layer(s), "
           f"{base.prunable_channels:,} prunable channel(s)",
           f"MACs at input {mac_input(base)}", "",
           "BatchNormalization |gamma|:",
           table(["layer", "channels", "min", "median", "max", "< 1e-2", "< 1e-3"],
                 [[s["layer"], s["count"], f"{s['min']:.3g}", f"{s['median']:.3g}",
                   f"{s['max']:.3g}", f"{100 * s['below_1e_2']:.1f}%",
                   f"{100 * s['below_1e_3']:.1f}%"] for s in stats],
                 right=range(1, 7))]

    groups = sorted(base.groups, key=lambda g: (-g["channels"], g["layers"]))
    shown = groups if args.all_groups else groups[:20]
    out += ["", f"Prunable channel groups ({len(groups)}; layers in a group lose the same "
                "channels):",
            table(["#", "channels", "layers"],
                  [[i + 1, g["channels"], _short_list(g["layers"])]
                   for i, g in enumerate(shown)], right=(0, 1))]
    if len(shown) < len(groups):
        out.append(f"... {len(groups) - len(shown)} narrower group(s) not shown "
                   "(--all-groups or --json lists them)")

    out += ["", "Barriers (channels reaching them are kept): " +
            ("none" if not base.barriers else "")]
    out += [f"  {name}: {reason}" for name, reason in base.barriers]

    out += ["", "Pruning at each ratio" + (f" (round_to={args.round_to})"
                                           if args.round_to > 1 else "") + ":",
            table(["ratio", "channels removed", "params before", "params after", "change",
                   "MACs before", "MACs after", "change"],
                  [[f"{r:g}", f"{p.removed_channels:,}/{p.prunable_channels:,}",
                    f"{p.params_before:,}", f"{p.params_after:,}",
                    _pct_change(p.params_after, p.params_before), f"{p.macs_before:,}",
                    f"{p.macs_after:,}", _pct_change(p.macs_after, p.macs_before)]
                   for r, p in plans], right=range(1, 8))]
    print("\n".join(out))

    if args.json:
        write_json(args.json, dict(
            model=args.model, name=model.name, params=base.params_before,
            macs=base.macs_before, input_shapes=base.input_shapes,
            dynamic_input=base.dynamic_input, prunable_channels=base.prunable_channels,
            options=options, batchnorm=stats, groups=groups,
            barriers=[dict(layer=n, reason=r) for n, r in base.barriers],
            ratios=[dict(ratio=r, achieved_ratio=p.ratio, threshold=p.threshold,
                         removed_channels=p.removed_channels,
                         prunable_channels=p.prunable_channels,
                         params_before=p.params_before, params_after=p.params_after,
                         macs_before=p.macs_before, macs_after=p.macs_after,
                         channels_after={row.name: row.channels_after for row in p.layers
                                         if row.channels_before != row.channels_after})
                    for r, p in plans]))
    return EXIT_OK


def _short_list(names: Sequence[str], limit: int = 4) -> str:
    text = ", ".join(names[:limit])
    return text + (f", ... (+{len(names) - limit})" if len(names) > limit else "")


def _pct_change(after: int, before: int) -> str:
    return f"{100.0 * (after - before) / before:+.1f}%" if before else "n/a"
