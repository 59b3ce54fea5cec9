"""Prune hundreds of random graphs with dead channels and check every output.

    python benchmarks/stress_random_graphs.py --start 0 --count 300

Prints a summary and writes benchmarks/results/stress_random_graphs.json.
Any failing seed is replayable with keras_slim.testing.random_model(seed).
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
    args = ap.parse_args(argv)
    failures, prunable, removed, worst = [], 0, 0, 0.0
    t0 = time.time()
    for seed in range(args.start, args.start + args.count):
        model = testing.random_model(seed)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                diff, plan, _ = testing.check_exact(model, fraction=args.fraction, seed=seed)
        except Exception as e:  # report, keep going
            failures.append({"seed": seed, "error": f"{type(e).__name__}: {e}"[:500]})
            continue
        prunable += plan.prunable_channels
        removed += plan.removed_channels
        worst = max(worst, diff)
        if diff > 1e-4:
            failures.append({"seed": seed, "difference": diff})
    result = dict(command=f"python benchmarks/stress_random_graphs.py --start {args.start} "
                          f"--count {args.count} --fraction {args.fraction}",
                  models=args.count, failures=failures, prunable_channels=prunable,
                  removed_channels=removed, worst_difference=worst,
                  seconds=round(time.time() - t0, 1))
    out = os.path.join(os.path.dirname(__file__), "results", "stress_random_graphs.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
