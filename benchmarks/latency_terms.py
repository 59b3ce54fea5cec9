"""What each term of the LiteRT latency model buys: estimates against measured whole files.

    python benchmarks/latency_terms.py [--archs vgg resnet mobilenetv2_96 resnet50]
        [--ratios 0 0.3 0.5 0.7] [--threads 1] [--runs 100] [--cache DIR] [--stem latency_terms]

For speedup.py's benchmark models (sparsity-like BN scales, seed 0) pruned
at each ratio, with channel selection on and off, the exported .tflite
file is timed (`check_latency`: median and fastest of `runs` invokes,
LiteRT + XNNPACK, `--threads`, 1 by default) and set against three estimates from the same
measurements: the conv/dense layers alone (`elementwise=False,
graph=False`, the model before these terms), plus the ops without MACs
(`graph=False`), and the full model (plus the graph term). Writes
benchmarks/results/STEM.{json,md}.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import keras_slim  # noqa: E402
from keras_slim.export.latency_check import check_latency  # noqa: E402
from keras_slim.export.latency_model import LatencyModel, machine_info  # noqa: E402
from _results import save_results, table  # noqa: E402
from speedup import ARCH_KEYS, ARCHS, log, machine, sparsity_like_gammas  # noqa: E402

VARIANTS = (("conv/dense only", dict(elementwise=False, graph=False)),
            ("+ elementwise", dict(graph=False)),
            ("+ graph (full)", {}))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--archs", nargs="+", choices=sorted(ARCH_KEYS),
                    default=["vgg", "resnet", "mobilenetv2_96", "resnet50"])
    ap.add_argument("--ratios", nargs="+", type=float, default=[0.0, 0.3, 0.5, 0.7])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache", default=None,
                    help="latency cache directory (default: a fresh one, so measuring is timed)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--stem", default="latency_terms")
    args = ap.parse_args(argv)
    t0, rows, models = time.time(), [], []
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache or tmp
        for key in args.archs:
            name = ARCH_KEYS[key]
            model = ARCHS[name]()
            sparsity_like_gammas(model, seed=0)
            start = time.time()
            full = LatencyModel.measure(model, threads=args.threads, cache_dir=cache)
            seconds = time.time() - start
            lms = [LatencyModel.measure(model, threads=args.threads, cache_dir=cache, **kw)
                   for _, kw in VARIANTS[:-1]] + [full]
            models.append(dict(model=name, layers=len(full.layers), ops=len(full.ops),
                               graph=full.graph, measure_s=seconds))
            log(f"{name}: {full.description}, measured in {seconds:.1f} s")
            for selection in (True, False):
                for ratio in args.ratios:
                    p = keras_slim.plan(model, ratio, channel_selection=selection)
                    c = check_latency(p, full, runs=args.runs)
                    est = [lm.estimate(p.layers) for lm in lms]
                    rows.append(dict(model=name, selection=selection, ratio=ratio,
                                     macs_kept=p.macs_after / p.macs_before,
                                     measured_ms=c.measured_ms, min_ms=c.min_ms,
                                     estimates_ms=est,
                                     errors_pct=[100 * (e / c.measured_ms - 1) for e in est]))
                    log(f"  selection={selection} ratio={ratio}: measured {c.measured_ms:.3f} "
                        f"ms; estimates " + ", ".join(f"{e:.3f}" for e in est))
    errors = np.abs([r["errors_pct"] for r in rows])
    meta = dict(command="python benchmarks/latency_terms.py " + " ".join(argv or sys.argv[1:]),
                machine=machine(), litert=machine_info()["litert"], threads=args.threads,
                load_after=list(os.getloadavg()), minutes=round((time.time() - t0) / 60, 1),
                variants=[v for v, _ in VARIANTS],
                mean_abs_error_pct=errors.mean(axis=0).tolist(),
                max_abs_error_pct=errors.max(axis=0).tolist(),
                under_share=(np.array([r["errors_pct"] for r in rows]) < 0).mean(0).tolist())
    save_results(args.out, args.stem, dict(meta=meta, models=models, rows=rows),
                 _markdown(meta, models, rows))
    return 0


def _markdown(meta, models, rows) -> str:
    v = meta["variants"]
    lines = [f"Command: `{meta['command'].strip()}`", "",
             f"{meta['machine']}; LiteRT {meta['litert']}, XNNPACK, {meta.get('threads', 1)} "
             f"thread(s), batch 1; "
             f"{meta['minutes']} min; load average {meta['load_after'][0]:.1f} at the end. "
             "Measured: median of the exported file's invokes (`check_latency`). Error = "
             "estimate / measured - 1. The three estimates come from the same probe timings.",
             "", "| estimate | mean abs error | max abs error | estimates under the measured |",
             "|---|---:|---:|---:|"]
    for i, name in enumerate(v):
        lines.append(f"| {name} | {meta['mean_abs_error_pct'][i]:.1f}% | "
                     f"{meta['max_abs_error_pct'][i]:.1f}% | {meta['under_share'][i]:.0%} |")
    lines += ["", "Latency model per architecture (graph term: total conv/dense weights MB -> "
              "extra ms of the layers run as one file):", ""]
    for m in models:
        graph = ", ".join(f"{mb:.1f} MB: {ms:+.3f}" for mb, ms in sorted(m["graph"]))
        lines.append(f"- {m['model']}: {m['layers']} conv/dense layers, {m['ops']} elementwise "
                     f"layers, measured in {m['measure_s']:.1f} s; graph term {graph}")
    lines.append("")
    body = [[r["model"], "on" if r["selection"] else "off", f"{r['ratio']:.1f}",
             f"{r['macs_kept']:.1%}", f"{r['measured_ms']:.3f}", f"{r['min_ms']:.3f}"]
            + [f"{e:.3f} ({x:+.0f}%)" for e, x in zip(r["estimates_ms"], r["errors_pct"])]
            for r in rows]
    lines += table(["model", "channel selection", "prune ratio", "MACs kept", "measured ms",
                    "min ms"] + [f"{name} ms (error)" for name in v], body)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
