"""Training step time with vs without the BN-gamma L1 penalty, same run.

    python benchmarks/bn_l1_overhead.py [--model vgg11] [--steps 30] [--rounds 5]

Alternates plain and penalised epochs (A B A B ...) on the same model
architecture and random data, so machine load hits both alike; reports the
median step time of each and the ratio. Goal: <= 1.03x. Writes
benchmarks/results/bn_l1_overhead.{json,md}.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_slim  # noqa: E402
from keras_slim.training.cifar import models  # noqa: E402
from _results import save_results  # noqa: E402

BUILDERS = {
    "vgg11": lambda: models.vgg(11, width=0.5),
    "preact_resnet20": lambda: models.preact_resnet(20),
    "mobilenetv2": lambda: keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3),
                                                          classes=10, alpha=0.5),
}


class StepTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times = []

    def on_train_batch_begin(self, batch, logs=None):
        self._t = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self._t)


def make(name, strength):
    keras.utils.set_random_seed(0)
    model = BUILDERS[name]()
    if strength:
        keras_slim.add_bn_l1(model, strength)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="vgg11", choices=sorted(BUILDERS))
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.steps * args.batch, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, len(x))
    runs = {"plain": make(args.model, 0.0), "bn_l1": make(args.model, 1e-4)}
    times = {k: [] for k in runs}
    for model in runs.values():  # warm-up: tracing and first-step costs
        model.fit(x[: 2 * args.batch], y[: 2 * args.batch], batch_size=args.batch, verbose=0)
    for _ in range(args.rounds):
        for name, model in runs.items():
            timer = StepTimer()
            model.fit(x, y, batch_size=args.batch, epochs=1, verbose=0, callbacks=[timer])
            times[name].extend(timer.times[1:])
    plain, l1 = statistics.median(times["plain"]), statistics.median(times["bn_l1"])
    result = dict(command="python benchmarks/bn_l1_overhead.py " + " ".join(argv or sys.argv[1:]),
                  machine=f"{platform.machine()}, {os.cpu_count()} cores",
                  model=args.model, batch=args.batch, steps=len(times["plain"]),
                  plain_ms=round(1000 * plain, 2), bn_l1_ms=round(1000 * l1, 2),
                  ratio=round(l1 / plain, 3), goal="<= 1.03")
    out = os.path.join(os.path.dirname(__file__), "results")
    md = (f"Command: `{result['command'].strip()}` ({result['machine']})\n\n"
          "| model | batch | step ms, plain | step ms, with bn_l1 | ratio | goal |\n|---|---:|---:|---:|---:|---|\n"
          f"| {args.model} | {args.batch} | {result['plain_ms']} | {result['bn_l1_ms']} | "
          f"{result['ratio']}x | <= 1.03x |\n")
    save_results(out, f"bn_l1_overhead_{args.model}", result, md)


if __name__ == "__main__":
    main()
