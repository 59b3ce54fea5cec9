"""prune(model, 0.5) time vs keras.models.clone_model(model), same run.

    python benchmarks/prune_speed.py [--repeats 3]

Writes benchmarks/results/prune_speed.{json,md}. Goal: prune <= 2x clone.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

import keras_slim  # noqa: E402
from keras_slim import testing  # noqa: E402
from _results import save_results  # noqa: E402

MODELS = {
    "ResNet50": lambda: keras.applications.ResNet50(weights=None),
    "EfficientNetB0": lambda: keras.applications.EfficientNetB0(weights=None),
    "DenseNet121": lambda: keras.applications.DenseNet121(weights=None),
}


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = ap.parse_args(argv)
    rows = []
    for name, build in MODELS.items():
        model = build()
        testing.randomize_batchnorm(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clone = timed(lambda: keras.models.clone_model(model), args.repeats)
            plan = timed(lambda: keras_slim.plan(model, 0.5), args.repeats)
            prune = timed(lambda: keras_slim.prune(model, 0.5), args.repeats)
        rows.append(dict(model=name, clone_s=round(clone, 3), plan_s=round(plan, 3),
                         prune_s=round(prune, 3), prune_over_clone=round(prune / clone, 2)))
        print(rows[-1], flush=True)
    meta = dict(command="python benchmarks/prune_speed.py " + " ".join(argv or sys.argv[1:]),
                machine=f"{platform.machine()}, {os.cpu_count()} cores", keras=keras.__version__)
    lines = [f"Command: `{meta['command'].strip()}` ({meta['machine']}, Keras {meta['keras']}); "
             "median of repeats, prune(model, 0.5) includes planning.", "",
             "| model | clone_model s | plan s | prune s | prune / clone |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['clone_s']} | {r['plan_s']} | {r['prune_s']} | {r['prune_over_clone']}x |"
              for r in rows]
    save_results(args.out, "prune_speed", dict(meta=meta, rows=rows), "\n".join(lines))


if __name__ == "__main__":
    main()
