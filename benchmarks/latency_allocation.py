"""Latency targets met by score alone or by score per estimated ms (`allocation=`).

    python benchmarks/latency_allocation.py                        # synthetic + CIFAR ResNet-20
    python benchmarks/latency_allocation.py --archs vgg resnet56   # a subset, no CIFAR part
    python benchmarks/latency_allocation.py --cifar-model runs/x/models/sparse.keras

For each architecture (random weights, BN gammas drawn from speedup.py's
sparsity-like bimodal distribution), measure a LatencyModel at 1 thread,
plan at latency targets of 70%, 50% and 30% of the estimate with
allocation="score" (the global ranking) and allocation="latency" (score per
estimated ms saved, keras_slim.allocation), with round_to 1 and 16, export
each plan and time the files in interleaved rounds (LiteRT + XNNPACK, batch 1,
1 thread). Reported per case: the estimate, the measured median (and the
same-round ratio latency-plan / score-plan), MACs and params kept, and the
importance removed: the |gamma| mass of the BN channels the plan cuts, as a
share of the model's. At a met target, less importance removed is better.

With `--cifar-model` (default: the sparsity-trained ResNet-20 of a
`examples/cifar10_resnet.py` run, if present), the same on real data: the
accuracy on the recipe's 5,000-image validation split right after pruning
(no fine-tuning), which is what the importance stands for. The test set is
not used. `--pause PID` stops other jobs while timing. Writes
benchmarks/results/latency_allocation.{json,md}.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_slim  # noqa: E402
from keras_slim import _keras  # noqa: E402
from keras_slim.export.bench import benchmark_tflite  # noqa: E402
from keras_slim.export.latency_model import LatencyModel  # noqa: E402
from keras_slim.training.cifar import models  # noqa: E402
from _results import save_results, table  # noqa: E402
from speedup import log, machine, paused, sparsity_like_gammas  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCHS = {
    "vgg16": ("VGG-16 (CIFAR, 32x32)", lambda: models.vgg(16)),
    "resnet56": ("PreAct-ResNet-56 (bottleneck, 32x32)", lambda: models.preact_resnet(56)),
    "mobilenetv2": ("MobileNetV2 1.0 (96x96)", lambda: keras.applications.MobileNetV2(
        input_shape=(96, 96, 3), weights=None)),
}
TARGETS = ("70%", "50%", "30%")
ALLOCATIONS = ("score", "latency")


def gamma_mass(model) -> dict:
    """BN layer name -> sum of |gamma| (the importance the bn_scale criterion ranks by)."""
    return {layer.name: float(np.abs(keras.ops.convert_to_numpy(layer.gamma)).sum())
            for layer in _keras.walk_layers(model)
            if _keras.is_batch_norm(layer) and getattr(layer, "gamma", None) is not None}


def cases_for(name: str, model, lm, round_tos, workdir: str) -> list[dict]:
    """Plan, prune and export every (round_to, target, allocation); timing comes later."""
    total = gamma_mass(model)
    out = []
    for round_to in round_tos:
        for target in TARGETS:
            for allocation in ALLOCATIONS:
                case = dict(arch=name, round_to=round_to, target=target, allocation=allocation)
                t0 = time.perf_counter()
                try:
                    p = keras_slim.plan(model, target_latency_ms=target, latency_model=lm,
                                        round_to=round_to, allocation=allocation)
                except keras_slim.ModelError as err:
                    case["unreachable"] = str(err)
                    out.append(case)
                    continue
                case["plan_s"] = time.perf_counter() - t0
                small = keras_slim.prune(model, p)
                kept = gamma_mass(small)
                case.update(estimated_ms=p.target["reached"]["latency_ms"],
                            macs_kept=p.macs_after / p.macs_before,
                            params_kept=p.params_after / p.params_before,
                            removed_channels=p.removed_channels,
                            importance_removed=1 - sum(kept.get(k, 0.0) for k in total)
                            / sum(total.values()),
                            groups_priced=len(p.target.get("prices", [])))
                path = os.path.join(workdir, f"{name}_{round_to}_{target[:-1]}_{allocation}.tflite")
                keras_slim.export_tflite(small, path, verify=False)
                case["path"] = path
                case["model"] = small
                out.append(case)
    return out


def time_rounds(files: list[str], rounds: int, runs: int) -> dict:
    """path -> [median ms per round], the files timed one after another in each round."""
    times: dict = {f: [] for f in files}
    for _ in range(rounds):
        for f in files:
            times[f].append(benchmark_tflite(f, threads=1, runs=runs, warmup=5).median_ms)
    return times


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", nargs="+", choices=sorted(ARCHS), default=sorted(ARCHS))
    ap.add_argument("--round-to", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=30)
    default_cifar = os.path.join(ROOT, "runs", "resnet_cpu", "models", "sparse.keras")
    ap.add_argument("--cifar-model", default=default_cifar if os.path.exists(default_cifar)
                    else None, help="a sparsity-trained model of the CIFAR recipe (val split)")
    ap.add_argument("--data", default=os.path.join(os.path.dirname(ROOT), "shared", "data",
                                                   "cifar10-jpeg.tar.gz"))
    ap.add_argument("--pause", type=int, nargs="+", default=[], metavar="PID")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
    ap.add_argument("--stem", default="latency_allocation")
    args = ap.parse_args(argv)
    start = time.time()
    all_cases: list[dict] = []
    measured: dict = {}
    with tempfile.TemporaryDirectory() as workdir:
        subjects = []
        for key in args.archs:
            label, build = ARCHS[key]
            model = build()
            sparsity_like_gammas(model, 0)
            subjects.append((label, model, None))
        if args.cifar_model:
            subjects.append(("ResNet-20, CIFAR-10 sparsity-trained", keras.models.load_model(
                args.cifar_model), args.cifar_model))
        for label, model, source in subjects:
            log(f"{label}: latency model")
            t0 = time.perf_counter()
            with paused(args.pause):
                lm = LatencyModel.measure(model, threads=1)
            measured[label] = dict(seconds=time.perf_counter() - t0, layers=len(lm.layers),
                                   full_estimate_ms=lm.estimate(keras_slim.plan(model, 0).layers),
                                   source=source)
            log(f"{label}: planning")
            cases = cases_for(label.split()[0], model, lm, args.round_to, workdir)
            original = os.path.join(workdir, f"{label.split()[0]}_original.tflite")
            keras_slim.export_tflite(model, original, verify=False)
            files = [original] + [c["path"] for c in cases if "path" in c]
            log(f"{label}: timing {len(files)} files x {args.rounds} rounds")
            with paused(args.pause):
                times = time_rounds(files, args.rounds, args.runs)
            measured[label]["original_ms"] = float(np.median(times[original]))
            for c in cases:
                c["label"] = label
                if "path" in c:
                    c["rounds_ms"] = times[c["path"]]
                    c["measured_ms"] = float(np.median(times[c["path"]]))
                    c["speedup"] = float(np.median(np.array(times[original])
                                                   / np.array(times[c["path"]])))
            if source:
                _val_accuracy(cases, args.data)
            all_cases += cases
    for c in all_cases:
        c.pop("model", None)
        c.pop("path", None)
    _pair_ratios(all_cases)
    meta = dict(command="python benchmarks/" + os.path.basename(__file__) + " " + " ".join(
        argv if argv is not None else sys.argv[1:]), machine=machine(),
        minutes=(time.time() - start) / 60, latency_models=measured, paused=args.pause)
    save_results(args.out, args.stem, dict(meta=meta, cases=all_cases), _markdown(meta, all_cases))
    return 0


def _val_accuracy(cases, data_path: str) -> None:
    """Accuracy on the recipe's validation split (5,000 training images, seed 0), no fine-tuning."""
    from keras_slim.training import cifar
    from keras_slim.training.cifar.recipe import split_validation

    train, _ = cifar.load_cifar10(data_path)
    _, (x_val, y_val) = split_validation(train, 5000, 0)
    val = cifar.make_dataset(x_val, y_val, 256, training=False)
    for c in cases:
        small = c.get("model")
        if small is not None:
            small.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
            c["val_accuracy"] = float(small.evaluate(val, verbose=0, return_dict=True)["accuracy"])


def _pair_ratios(cases) -> None:
    """Per latency-allocation case: its same-round latency over the score plan's (median)."""
    by_key = {(c["label"], c["round_to"], c["target"], c["allocation"]): c for c in cases}
    for c in cases:
        other = by_key.get((c["label"], c["round_to"], c["target"], "score"))
        if c["allocation"] == "latency" and other and "rounds_ms" in c and "rounds_ms" in other:
            c["latency_over_score"] = float(np.median(np.array(c["rounds_ms"])
                                                      / np.array(other["rounds_ms"])))


def _markdown(meta, cases) -> str:
    lines = [f"Command: `{meta['command']}`; {meta['machine']}; {meta['minutes']:.1f} min"
             f"{'; other jobs paused while timing' if meta['paused'] else ''}.  ",
             "LiteRT + XNNPACK, 1 thread, batch 1; measured = median over interleaved rounds of "
             "each round's median; `lat/score` = the same-round ratio of the latency plan's time "
             "to the score plan's. Importance removed = |gamma| mass of the BN channels cut, as "
             "a share of the model's (lower is better at a met target).", ""]
    for label, info in meta["latency_models"].items():
        lines.append(f"- {label}: latency model of {info['layers']} layers in "
                     f"{info['seconds']:.0f} s, estimate of the unpruned model "
                     f"{info['full_estimate_ms']:.3f} ms, measured {info['original_ms']:.3f} ms"
                     + (f"; weights {os.path.relpath(info['source'], ROOT)}" if info["source"]
                        else "; random weights, sparsity-like gammas"))
    lines.append("")
    head = ["model", "round_to", "target", "allocation", "estimated ms", "measured ms",
            "speed-up", "lat/score", "MACs kept", "params kept", "importance removed", "val acc"]
    rows = []
    for c in cases:
        if "unreachable" in c:
            rows.append([c["label"], c["round_to"], c["target"], c["allocation"],
                         "not reachable", "", "", "", "", "", "", ""])
            continue
        rows.append([c["label"], c["round_to"], c["target"], c["allocation"],
                     f"{c['estimated_ms']:.3f}", f"{c['measured_ms']:.3f}",
                     f"{c['speedup']:.2f}x",
                     f"{c['latency_over_score']:.3f}" if "latency_over_score" in c else "",
                     f"{100 * c['macs_kept']:.1f}%", f"{100 * c['params_kept']:.1f}%",
                     f"{100 * c['importance_removed']:.2f}%",
                     f"{100 * c['val_accuracy']:.2f}%" if "val_accuracy" in c else ""])
    return "\n".join(lines + table(head, rows))


if __name__ == "__main__":
    sys.exit(main())
