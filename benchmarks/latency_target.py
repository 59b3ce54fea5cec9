"""How well the per-layer LiteRT latency model predicts whole exported models.

    python benchmarks/latency_target.py                # 4 models x 4 targets x round_to 1/16
    python benchmarks/latency_target.py --quick        # 32x32 models only

For a VGG-like and a residual network at 32x32 and 96x96 (random weights,
randomised BN statistics: latency does not depend on the values), measure
the latency model once (`LatencyModel.measure`, 1 thread), plan at
latency targets of 100% (no pruning), 70%, 50% and 30% of the estimate,
with `round_to` 1 and 16, and compare each plan's estimate with the
measured latency of the exported pruned model (`check_latency`: median of
100 invokes, LiteRT + XNNPACK, 1 thread). Writes
benchmarks/results/latency_target.{json,md}.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_slim  # noqa: E402
from keras_slim.export.latency_check import check_latency  # noqa: E402
from keras_slim.export.latency_model import LatencyModel, machine_info  # noqa: E402
from _results import save_results, table  # noqa: E402

TARGETS = (None, "70%", "50%", "30%")  # None: the unpruned model


def vgg(size: int) -> keras.Model:
    x = inp = keras.Input((size, size, 3))
    for stage, width in enumerate((32, 64, 128)):
        for j in range(2):
            x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False,
                                    name=f"conv{stage}_{j}")(x)
            x = keras.layers.BatchNormalization()(x)
            x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(10)(x), name=f"vgg_{size}")


def resnet(size: int) -> keras.Model:
    def conv_bn(x, width, kernel=3, strides=1, relu=True):
        x = keras.layers.Conv2D(width, kernel, strides=strides, padding="same",
                                use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        return keras.layers.ReLU()(x) if relu else x

    inp = keras.Input((size, size, 3))
    x = conv_bn(inp, 16)
    for stage, width in enumerate((16, 32, 64)):
        for block in range(2):
            strides = 2 if stage and not block else 1
            y = conv_bn(conv_bn(x, width, strides=strides), width, relu=False)
            if strides > 1 or x.shape[-1] != width:
                x = conv_bn(x, width, kernel=1, strides=strides, relu=False)
            x = keras.layers.ReLU()(keras.layers.Add()([x, y]))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(10)(x), name=f"resnet_{size}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="32x32 models only")
    ap.add_argument("--runs", type=int, default=100, help="invokes of each exported file")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = ap.parse_args(argv)
    keras.utils.set_random_seed(0)
    sizes = (32,) if args.quick else (32, 96)
    rows, t0 = [], time.time()
    for build in (vgg, resnet):
        for size in sizes:
            model = build(size)
            keras_slim.testing.randomize_batchnorm(model, seed=1)
            start = time.time()
            lm = LatencyModel.measure(model, threads=1)
            measured_in = time.time() - start
            for round_to in (1, 16):
                for target in TARGETS:
                    if target is None and round_to > 1:
                        continue
                    try:
                        p = (keras_slim.plan(model, 0.0) if target is None else keras_slim.plan(
                            model, target_latency_ms=target, latency_model=lm,
                            round_to=round_to))
                    except keras_slim.ModelError as err:  # round_to leaves too much
                        rows.append(dict(model=model.name, target=target, round_to=round_to,
                                         error=str(err).split("; ")[1]))
                        continue
                    c = check_latency(p, lm, runs=args.runs)
                    rows.append(dict(model=model.name, target=target or "100%",
                                     round_to=round_to, macs=p.macs_after,
                                     macs_kept=p.macs_after / p.macs_before,
                                     estimated_ms=c.estimated_ms, measured_ms=c.measured_ms,
                                     min_ms=c.min_ms, error_pct=c.error_pct,
                                     error_min_pct=c.error_min_pct,
                                     measure_s=measured_in))
                    print(rows[-1], flush=True)
    errors = np.abs([r["error_pct"] for r in rows if "error_pct" in r])
    errors_min = np.abs([r["error_min_pct"] for r in rows if "error_pct" in r])
    meta = dict(command="python benchmarks/latency_target.py " + " ".join(argv or sys.argv[1:]),
                machine=f"{machine_info()['cpu']}, {os.cpu_count()} cores "
                        f"(shared with other work; load average "
                        f"{os.getloadavg()[0]:.1f} at the end)",
                litert=machine_info()["litert"], platform=platform.platform(),
                minutes=round((time.time() - t0) / 60, 1),
                mean_abs_error_pct=float(errors.mean()), max_abs_error_pct=float(errors.max()),
                mean_abs_error_min_pct=float(errors_min.mean()),
                max_abs_error_min_pct=float(errors_min.max()))
    save_results(args.out, "latency_target", dict(meta=meta, rows=rows), _markdown(meta, rows))


def _markdown(meta, rows) -> str:
    lines = [f"Command: `{meta['command'].strip()}`; {meta['machine']}; LiteRT "
             f"{meta['litert']}, 1 thread; {meta['minutes']} min.  ",
             f"Estimate vs the exported pruned model: mean |error| "
             f"{meta['mean_abs_error_pct']:.1f}% (max {meta['max_abs_error_pct']:.1f}%) against "
             f"the median invoke, {meta['mean_abs_error_min_pct']:.1f}% (max "
             f"{meta['max_abs_error_min_pct']:.1f}%) against the fastest.", "",
             ]
    body = []
    for r in rows:
        if "error" in r:
            body.append([r["model"], r["target"], r["round_to"], f"not reachable: {r['error']}",
                         "", "", "", "", ""])
            continue
        body.append([r["model"], r["target"], r["round_to"], f"{r['macs_kept']:.0%}",
                     f"{r['estimated_ms']:.3f}", f"{r['measured_ms']:.3f}", f"{r['min_ms']:.3f}",
                     f"{r['error_pct']:+.1f}%", f"{r['error_min_pct']:+.1f}%"])
    lines += table(["model", "target", "round_to", "MACs kept", "estimated ms",
                    "measured ms (median)", "min ms", "error (median)", "error (min)"], body)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
