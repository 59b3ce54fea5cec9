"""Prune hundreds of random graphs with dead or constant channels and check every output.

    python benchmarks/stress_random_graphs.py --start 0 --count 300
    python benchmarks/stress_random_graphs.py --constants --count 1000

`--constants`: killed channels keep beta != 0 (gamma = 0), the graphs use
activations with act(0) != 0 and extra heads through every reader type
(keras_slim.testing.random_model(seed, constants=True)); removal must still
be exact (every fold exact: border_folds=False).

Prints a summary and writes benchmarks/results/stress_random_graphs[_constants].json.
Any failing seed is replayable with keras_slim.testing.random_model(seed, constants=...).
"""
from __future__ import annotations

import argparse
import json
import os
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from keras_slim import testing  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--count", type=int, default=300)
    ap.add_argument("--fraction", type=float, default=0.4)
    ap.add_argument("--constants", action="store_true",
                    help="gamma = 0 but beta != 0 on killed channels, act(0) != 0, every reader")
    args = ap.parse_args(argv)
    failures, prunable, removed, killed, worst = [], 0, 0, 0, 0.0
    nothing_removed = []
    t0 = time.time()
    for seed in range(args.start, args.start + args.count):
        model = testing.random_model(seed, constants=args.constants)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = testing.exactness(model, fraction=args.fraction, seed=seed,
                                      constants=args.constants)
        except Exception as e:  # report, keep going
            failures.append({"seed": seed, "error": f"{type(e).__name__}: {e}"[:500]})
            continue
        prunable += r.plan.prunable_channels
        removed += r.plan.removed_channels
        killed += r.killed
        worst = max(worst, r.difference)
        if r.difference > 1e-4:
            failures.append({"seed": seed, "difference": r.difference})
        if r.killed and not r.plan.removed_channels:
            nothing_removed.append(seed)
            failures.append({"seed": seed, "error": f"{r.killed} classes killed, none removed"})
    result = dict(command=f"python benchmarks/stress_random_graphs.py --start {args.start} "
                          f"--count {args.count} --fraction {args.fraction}"
                          + (" --constants" if args.constants else ""),
                  models=args.count, constants=args.constants, failures=failures,
                  prunable_channels=prunable, killed_classes=killed, removed_channels=removed,
                  models_with_nothing_removed_despite_kills=len(nothing_removed),
                  worst_difference=worst, seconds=round(time.time() - t0, 1))
    name = "stress_random_graphs_constants.json" if args.constants else "stress_random_graphs.json"
    out = os.path.join(os.path.dirname(__file__), "results", name)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
