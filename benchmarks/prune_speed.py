"""prune(model, 0.5) time vs keras.models.clone_model(model), same run.

    python benchmarks/prune_speed.py [--repeats 7]

Rounds are interleaved (clone, plan, prune, clone, ...) so a load change on a
shared machine hits all three alike; the ratio is reported from the medians
and from the minima (the least disturbed round of each). The load average at
the start is recorded. Writes benchmarks/results/prune_speed.{json,md}.
Goal (issue #10): prune(ResNet50, 0.5) <= 1.2x clone_model.
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


def interleaved(fns: dict, repeats: int) -> dict:
    """{name: [seconds per round]}, the functions taking turns in every round."""
    for fn in fns.values():  # warm-up: first-call tracing and caches are not timed
        fn()
    times: dict = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return times


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = ap.parse_args(argv)
    rows = []
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    for name, build in MODELS.items():
        model = build()
        testing.randomize_batchnorm(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = interleaved(dict(clone=lambda: keras.models.clone_model(model),
                                 plan=lambda: keras_slim.plan(model, 0.5),
                                 prune=lambda: keras_slim.prune(model, 0.5)), args.repeats)
        med = {k: statistics.median(v) for k, v in t.items()}
        low = {k: min(v) for k, v in t.items()}
        rows.append(dict(model=name, clone_s=round(med["clone"], 3), plan_s=round(med["plan"], 3),
                         prune_s=round(med["prune"], 3),
                         prune_over_clone=round(med["prune"] / med["clone"], 2),
                         prune_over_clone_min=round(low["prune"] / low["clone"], 2),
                         rounds={k: [round(x, 3) for x in v] for k, v in t.items()}))
        print(rows[-1], flush=True)
    meta = dict(command="python benchmarks/prune_speed.py " + " ".join(argv or sys.argv[1:]),
                machine=f"{platform.machine()}, {os.cpu_count()} cores", keras=keras.__version__,
                load_average_1min=load)
    lines = [f"Command: `{meta['command'].strip()}` ({meta['machine']}, Keras {meta['keras']}); "
             f"{args.repeats} interleaved rounds after a warm-up, load average {load} at the "
             "start; medians, prune(model, 0.5) includes planning.", "",
             "| model | clone_model s | plan s | prune s | prune / clone (medians) | "
             "prune / clone (minima) |", "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['clone_s']} | {r['plan_s']} | {r['prune_s']} | "
              f"{r['prune_over_clone']}x | {r['prune_over_clone_min']}x |" for r in rows]
    save_results(args.out, "prune_speed", dict(meta=meta, rows=rows), "\n".join(lines))


if __name__ == "__main__":
    main()
