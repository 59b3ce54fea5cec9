"""Unstructured magnitude pruning (TFMOT) vs channel slimming (keras_slim), same network.

    python benchmarks/structured_vs_unstructured.py [--width 1.0] [--rounds 5] [--runs 100]

One CIFAR-sized VGG-11 (keras_slim.training.cifar.models.vgg, 32x32x3 input, full width by
default: ~150 M MACs, so batch-1 latency is a few ms) is pruned two ways and exported to float32 TFLite:

(a) TFMOT `prune_low_magnitude` (tf_keras copy made with keras_slim.qat.to_tf_keras)
    at 50 %, 70 % and 90 % sparsity of every conv/dense kernel: ConstantSparsity
    schedule applied over a few SGD steps on random data (accuracy is not measured
    here, only what each kind of sparsity does to size and speed), then
    `strip_pruning` and conversion. One extra 90 % file uses the converter's
    `EXPERIMENTAL_SPARSITY` encoding (sparse weight storage).
(b) keras_slim at the channel ratio whose pruned model has about as many
    parameters as (a) has non-zero ones (ratio found by bisection on `plan`).
    BN scales are randomised first so the |gamma| ranking is not all ties.

Reported per file: parameters, non-zero parameters, MACs actually computed,
TFLite size raw and gzipped, LiteRT latency (batch 1, XNNPACK on) at 1 and 2
threads. Latency is the lowest of `--rounds` medians (rounds interleave the
files, so a burst of load from other processes hits every file alike).

Writes benchmarks/results/structured_vs_unstructured.{json,md}.
"""
from __future__ import annotations

import argparse
import gzip
import logging
import os
import platform
import sys
import tempfile
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_slim  # noqa: E402
from keras_slim import testing  # noqa: E402
from keras_slim.training.cifar import models  # noqa: E402
from keras_slim.qat import to_tf_keras  # noqa: E402
from _results import save_results  # noqa: E402

SPARSITIES = (0.5, 0.7, 0.9)


def nonzero(weights) -> int:
    return int(sum(np.count_nonzero(np.asarray(w)) for w in weights))


def tf_keras_tflite(model, path: str, sparse_encoding: bool = False) -> None:
    """float32 .tflite from a tf_keras model (static batch 1; the converter folds BN)."""
    import tensorflow as tf

    spec = tf.TensorSpec((1,) + tuple(model.input_shape[1:]), tf.float32, name="image")

    @tf.function(input_signature=[spec], autograph=False)
    def serve(x):
        return {"output_0": model(x, training=False)}

    with tempfile.TemporaryDirectory() as saved:
        module = tf.Module()
        module.model_variables = list(model.variables)
        tf.saved_model.save(module, saved, signatures={"serving_default": serve.get_concrete_function()})
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        if sparse_encoding:
            converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
        buf = converter.convert()
    with open(path, "wb") as f:
        f.write(buf)


def tfmot_prune(model3, sparsity: float, steps: int, seed: int):
    """TFMOT magnitude pruning of a tf_keras copy; returns the stripped tf_keras model."""
    import tensorflow_model_optimization as tfmot  # a script: its env side effect is harmless

    tk = to_tf_keras(model3)
    sched = tfmot.sparsity.keras.ConstantSparsity(sparsity, begin_step=0, frequency=1)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(tk, pruning_schedule=sched)
    pruned.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(steps * 16,) + tuple(tk.input_shape[1:])).astype("float32")
    y = rng.integers(0, 10, size=len(x))
    pruned.fit(x, y, batch_size=16, epochs=1, verbose=0,
               callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    return tfmot.sparsity.keras.strip_pruning(pruned)


def kernel_sparsity(tk) -> float:
    kernels = [w.numpy() for layer in tk.layers for w in layer.weights
               if w.name.split("/")[-1].startswith("kernel")]
    total = sum(k.size for k in kernels)
    return 1.0 - sum(np.count_nonzero(k) for k in kernels) / total


def ratio_for_params(model, target: int) -> tuple[float, keras_slim.Plan]:
    """The keras_slim ratio whose plan keeps about `target` parameters (bisection)."""
    lo, hi = 0.0, 0.99
    best = None
    for _ in range(18):
        mid = (lo + hi) / 2
        plan = keras_slim.plan(model, mid)
        if best is None or abs(plan.params_after - target) < abs(best[1].params_after - target):
            best = (mid, plan)
        if plan.params_after > target:
            lo = mid
        else:
            hi = mid
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--steps", type=int, default=4, help="SGD steps of the TFMOT schedule")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    keras.utils.set_random_seed(0)
    warnings.filterwarnings("ignore")
    t_start = time.time()

    base = models.vgg(11, width=args.width)
    testing.randomize_batchnorm(base)
    workdir = tempfile.mkdtemp(prefix="svu_")
    rows = []

    def add(method, setting, path, params, nz, macs, extra=None):
        raw = os.path.getsize(path)
        with open(path, "rb") as f:
            gz = len(gzip.compress(f.read(), compresslevel=9))
        rows.append(dict(method=method, setting=setting, file=os.path.basename(path),
                         params=int(params), nonzero_params=int(nz), macs=int(macs),
                         tflite_bytes=raw, gzip_bytes=gz, **(extra or {})))
        print(f"{method:10s} {setting:24s} params {params:>9,} nonzero {nz:>9,} "
              f"size {raw / 1024:8.1f} KiB gz {gz / 1024:8.1f} KiB", flush=True)

    dense_plan = keras_slim.plan(base, 0.0)
    macs_dense = dense_plan.macs_before

    # dense baseline, both export routes (a sanity check that the routes agree)
    p = os.path.join(workdir, "dense_keras3.tflite")
    keras_slim.export_tflite(base, p)
    add("dense", "keras_slim.export_tflite", p, base.count_params(), nonzero(base.weights),
        macs_dense)
    tk_dense = to_tf_keras(base)
    p = os.path.join(workdir, "dense_tf_keras.tflite")
    tf_keras_tflite(tk_dense, p)
    add("dense", "tf_keras converter", p, tk_dense.count_params(), nonzero(tk_dense.weights),
        macs_dense)

    targets = {}
    for s in SPARSITIES:
        stripped = tfmot_prune(base, s, args.steps, seed=int(s * 100))
        nz = nonzero(stripped.weights)
        targets[s] = nz
        p = os.path.join(workdir, f"tfmot_{int(s * 100)}.tflite")
        tf_keras_tflite(stripped, p)
        add("TFMOT", f"{int(s * 100)}% sparsity", p, stripped.count_params(), nz, macs_dense,
            {"kernel_sparsity": round(kernel_sparsity(stripped), 4)})
        if s == SPARSITIES[-1]:
            p = os.path.join(workdir, f"tfmot_{int(s * 100)}_sparse.tflite")
            tf_keras_tflite(stripped, p, sparse_encoding=True)
            add("TFMOT", f"{int(s * 100)}% + sparse encoding", p, stripped.count_params(), nz,
                macs_dense, {"kernel_sparsity": round(kernel_sparsity(stripped), 4)})

    for s in SPARSITIES:
        ratio, plan = ratio_for_params(base, targets[s])
        small = keras_slim.prune(base, plan)
        p = os.path.join(workdir, f"slim_{int(s * 100)}.tflite")
        keras_slim.export_tflite(small, p)
        add("keras_slim", f"ratio {ratio:.3f} (~TFMOT {int(s * 100)}%)", p, small.count_params(),
            nonzero(small.weights), plan.macs_after, {"ratio": round(ratio, 4)})

    # latency: rounds interleave the files; keep the lowest median per file/threads
    for threads in (1, 2):
        best = {r["file"]: float("inf") for r in rows}
        for _ in range(args.rounds):
            for r in rows:
                rep = keras_slim.export.benchmark_tflite(os.path.join(workdir, r["file"]),
                                                  threads=threads, runs=args.runs, warmup=10)
                best[r["file"]] = min(best[r["file"]], rep.median_ms)
        for r in rows:
            r[f"latency_ms_{threads}t"] = round(best[r["file"]], 3)
    dense_ms = {t: rows[0][f"latency_ms_{t}t"] for t in (1, 2)}
    for r in rows:
        for t in (1, 2):
            r[f"speedup_{t}t"] = round(dense_ms[t] / r[f"latency_ms_{t}t"], 2)

    import tensorflow as tf
    import tensorflow_model_optimization as tfmot

    meta = dict(
        command=("python benchmarks/structured_vs_unstructured.py " + " ".join(
            argv if argv is not None else sys.argv[1:])).strip(),
        model=f"keras_slim.training.cifar.models.vgg(11, width={args.width}), input 32x32x3, float32 TFLite",
        machine=f"{platform.machine()}, {os.cpu_count()} cores (shared)",
        versions=dict(tensorflow=tf.__version__, keras=keras.__version__,
                      tfmot=tfmot.__version__),
        latency=f"LiteRT, batch 1, XNNPACK, lowest median of {args.rounds} rounds x "
                f"{args.runs} runs",
        tfmot_schedule=f"ConstantSparsity, {args.steps} SGD steps on random data",
        wall_s=round(time.time() - t_start, 1))
    save_results(args.out, "structured_vs_unstructured", dict(meta=meta, rows=rows),
                 render(meta, rows))


def render(meta, rows) -> str:
    kib = lambda n: f"{n / 1024:,.1f}"  # noqa: E731
    lines = [
        "# Unstructured (TFMOT) vs structured (keras_slim) pruning",
        "",
        f"Command: `{meta['command']}`  ",
        f"Model: {meta['model']}; {meta['machine']}; TF {meta['versions']['tensorflow']}, "
        f"Keras {meta['versions']['keras']}, TFMOT {meta['versions']['tfmot']}.  ",
        f"TFMOT: {meta['tfmot_schedule']} (accuracy not measured). keras_slim: ratio chosen "
        "so the pruned model's parameter count matches TFMOT's non-zero count.  ",
        f"Latency: {meta['latency']}. Wall time {meta['wall_s']} s.",
        "",
        "| method | setting | params | non-zero | MACs | .tflite KiB | gzip KiB | 1T ms | 2T ms "
        "| speed-up 1T / 2T |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['setting']} | {r['params']:,} | {r['nonzero_params']:,} | "
            f"{r['macs'] / 1e6:.1f} M | {kib(r['tflite_bytes'])} | {kib(r['gzip_bytes'])} | "
            f"{r['latency_ms_1t']:.3f} | {r['latency_ms_2t']:.3f} | "
            f"{r['speedup_1t']:.2f}x / {r['speedup_2t']:.2f}x |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
