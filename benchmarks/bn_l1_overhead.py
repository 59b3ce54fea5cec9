"""Training step time with vs without the BN-gamma L1 penalty, same run, on each backend.

    python benchmarks/bn_l1_overhead.py [--model vgg11] [--steps 30] [--rounds 5]
    python benchmarks/bn_l1_overhead.py --backends tensorflow,jax,torch [--model vgg11] ...

Alternates plain and penalised epochs (A B A B ...) on the same model
architecture and random data, so machine load hits both alike; reports the
median step time of each and the ratio. Goal: <= 1.03x. Writes
benchmarks/results/bn_l1_overhead_<model>.{json,md} (the backend Keras is set
to), or with --backends, one child process per backend (Keras picks its
backend once, at import), each the same A/B run, and one table:
benchmarks/results/bn_l1_overhead_backends_<model>.{json,md}. Step times are
comparable within a backend (the ratio), not across backends: the children
run one after the other, under whatever load the machine has then.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from _results import save_results  # noqa: E402

MODELS = ("mobilenetv2", "preact_resnet20", "vgg11")
BACKENDS = ("tensorflow", "jax", "torch")
_CHILD_TAG = "BN_L1_OVERHEAD_RESULT "


def _build(name: str) -> Any:
    import keras

    from keras_slim.training.cifar import models

    if name == "vgg11":
        return models.vgg(11, width=0.5)
    if name == "preact_resnet20":
        return models.preact_resnet(20)
    return keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), classes=10,
                                          alpha=0.5)


def _make(name: str, strength: float) -> Any:
    import keras

    import keras_slim

    keras.utils.set_random_seed(0)
    model = _build(name)
    if strength:
        keras_slim.add_bn_l1(model, strength)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def measure(model_name: str, steps: int, rounds: int, batch: int) -> dict:
    """The A/B run in this process, on the backend Keras was imported with."""
    import keras
    import numpy as np

    class StepTimer(keras.callbacks.Callback):
        # Not async_safe, so Keras calls it synchronously with the step's loss made
        # concrete: on JAX the time includes the (asynchronously dispatched) step.
        def __init__(self) -> None:
            super().__init__()
            self.times: list[float] = []

        def on_train_batch_begin(self, batch, logs=None):
            self._t = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter() - self._t)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps * batch, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, len(x))
    runs = {"plain": _make(model_name, 0.0), "bn_l1": _make(model_name, 1e-4)}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for model in runs.values():  # warm-up: tracing/compilation and first-step costs
        model.fit(x[: 2 * batch], y[: 2 * batch], batch_size=batch, verbose=0)
    for _ in range(rounds):
        for name, model in runs.items():
            timer = StepTimer()
            model.fit(x, y, batch_size=batch, epochs=1, verbose=0, callbacks=[timer])
            times[name].extend(timer.times[1:])
    plain, l1 = statistics.median(times["plain"]), statistics.median(times["bn_l1"])
    return dict(backend=keras.backend.backend(), keras=keras.__version__,
                backend_version=_backend_version(keras.backend.backend()),
                model=model_name, batch=batch, steps=len(times["plain"]),
                plain_ms=round(1000 * plain, 2), bn_l1_ms=round(1000 * l1, 2),
                ratio=round(l1 / plain, 3), goal="<= 1.03")


def _backend_version(backend: str) -> str:
    import importlib

    return getattr(importlib.import_module(backend), "__version__", "?")


def _in_child(backend: str, args: argparse.Namespace) -> dict:
    """Run `measure` in a fresh process with KERAS_BACKEND=backend."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--model", args.model,
           "--steps", str(args.steps), "--rounds", str(args.rounds), "--batch", str(args.batch)]
    out = subprocess.run(cmd, capture_output=True, text=True,
                         env=dict(os.environ, KERAS_BACKEND=backend))
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith(_CHILD_TAG)]
    if out.returncode != 0 or not lines:
        return dict(backend=backend, error=(out.stderr.strip().splitlines() or ["no output"])[-1])
    return json.loads(lines[-1][len(_CHILD_TAG):])


def _row(r: dict) -> str:
    if "error" in r:
        return f"| {r['backend']} | failed: {r['error']} | | | | |\n"
    return (f"| {r['backend']} {r['backend_version']} | {r['batch']} | {r['plain_ms']} | "
            f"{r['bn_l1_ms']} | {r['ratio']}x | <= 1.03x |\n")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="vgg11", choices=MODELS)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--backends", default=None,
                    help=f"comma-separated, any of {', '.join(BACKENDS)}: one child process each")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:  # one backend, for the parent's table
        print(_CHILD_TAG + json.dumps(measure(args.model, args.steps, args.rounds, args.batch)))
        return
    command = "python benchmarks/bn_l1_overhead.py " + " ".join(argv)
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    header = ("| backend | batch | step ms, plain | step ms, with bn_l1 | ratio | goal |\n"
              "|---|---:|---:|---:|---:|---|\n")
    if args.backends is None:
        r = measure(args.model, args.steps, args.rounds, args.batch)
        md = (f"Command: `{command.strip()}` ({machine})\n\n| model " + header.replace(
            "|---|", "|---|---|", 1) + f"| {args.model} " + _row(r))
        save_results(out, f"bn_l1_overhead_{args.model}", dict(r, command=command,
                                                                 machine=machine), md)
        return
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown:
        ap.error(f"--backends {args.backends!r}: unknown {unknown}; use any of {BACKENDS}")
    results = [_in_child(b, args) for b in backends]
    md = (f"Command: `{command.strip()}` ({machine}); model {args.model}, {args.steps} steps x "
          f"{args.rounds} rounds per variant, one process per backend, run one after the "
          "other: compare the ratio within a row, not step times across rows.\n\n"
          + header + "".join(_row(r) for r in results))
    save_results(out, f"bn_l1_overhead_backends_{args.model}",
                 dict(command=command, machine=machine, results=results), md)


if __name__ == "__main__":
    main()
