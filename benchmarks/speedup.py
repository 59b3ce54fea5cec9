"""Does fewer MACs mean proportionally lower latency? Pruned vs original, measured.

    python benchmarks/speedup.py [--archs vgg resnet mobilenetv2 resnet50 mobilenetv2_96]
        [--ratios 0.3 0.5 0.7] [--round-to 1 8] [--equal-macs [16 32]] [--rounds 9] [--runs 30]
        [--threads 1 2] [--runtimes litert onnx ncnn mnn] [--stem speedup] [--keep DIR]
        [--pause PID [PID ...]] [--floor]

Architectures (`--archs`, default the first three): CIFAR VGG-16 at 32x32
(vgg), pre-activation bottleneck ResNet-56 at 32x32 (resnet), MobileNetV2
alpha 1.0 at 128x128 (mobilenetv2), keras.applications ResNet-50 at 96x96
(resnet50) and MobileNetV2 1.0 at 96x96 (mobilenetv2_96), all with
"sparsity-trained like" BN scaling factors. Each is pruned at every ratio
and round_to given, exported to a float32 .tflite and timed at batch 1 in
LiteRT with XNNPACK at each thread count; with `--runtimes` (default: all
four) also as .onnx, ncnn and .mnn files in onnxruntime, ncnn and MNN, timed
the same way, so each pruned model's speed-up shows in every runtime side by
side (`_speedup_runtimes.py`). `--equal-macs` adds, for every round_to > 1
(or each one listed after it), the plan `plan(target_macs=M, round_to=...)` with M the MACs of the
round_to=1 plan at that ratio: widths at multiples of round_to for the same
compression (a plain round_to rounds every layer up from the ratio's cut,
so it keeps more MACs). Reported side by side, per case
(`_speedup_report.py`):

* MACs ratio, params ratio, .tflite size ratio (pruned / original);
* latency speed-up = t(original) / t(pruned);
* efficiency = speed-up / MACs reduction, where MACs reduction =
  MACs(original) / MACs(pruned). 1.0 means latency fell exactly as much as the
  arithmetic (the physical limit, barring cache effects); the goal is >= 0.9.

Gamma distribution ("sparsity-trained like"). Random BN statistics first
(`keras_slim.testing.randomize_batchnorm`), then every BN's gamma is redrawn:
BN layer i of L gets a "dead" fraction p_i = clip(0.15 + 0.6 * i / (L - 1) +
N(0, 0.1), 0.05, 0.9) (deeper layers sparser, as the paper's VGG shows); a
dead channel has |gamma| ~ |N(0, 2e-3)|, a live one gamma ~ LogNormal(ln 0.4,
0.5). That is the bimodal histogram L1 sparsity training produces: the
global ranking cuts the near-zero mode first, unevenly across layers, so the
pruned widths are irregular (e.g. 37, 203) unless round_to is set.

Measurement. Each (threads) setting runs `--rounds` rounds; a round times
every model of an architecture once with `keras_slim.export.benchmark_tflite`
(`--runs` timed invokes after `--warmup`, median), in an order rotated each
round. A case's speed-up is the median over rounds of t(original) / t(pruned)
from the same round, so machine load that comes and goes affects both sides
of each ratio. Latencies shown are medians over rounds of the round medians.
On a shared machine a round can still land in a busy moment for one model
and not the other, so a second estimate is reported too: the ratio of the
fastest round medians ("fastest rounds"), i.e. both models when the core was
least disturbed. Where the two estimates disagree, the run was contended.

Writes benchmarks/results/STEM.{json,md} (default speedup). `--keep DIR`
keeps the exported files (for `_speedup_profile.py`, which times each op);
`--floor` also times each model with every layer at its minimum width
(`latency_floor`): the time no plan can remove, reported with each case's
efficiency above it. `--pause PID...` stops other jobs on a shared machine while timing (SIGSTOP,
SIGCONT after each timing phase, also when it fails).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_slim  # noqa: E402
from keras_slim import _keras, testing  # noqa: E402
from keras_slim.export import _litert  # noqa: E402
from keras_slim.training.cifar import models  # noqa: E402
import _speedup_runtimes as runtimes_  # noqa: E402
from _results import save_results  # noqa: E402
from _speedup_report import markdown  # noqa: E402

ARCHS = {
    "VGG-16 (CIFAR, 32x32)": lambda: models.vgg(16),
    "PreAct-ResNet-56 (bottleneck, 32x32)": lambda: models.preact_resnet(56),
    "MobileNetV2 1.0 (128x128)": lambda: keras.applications.MobileNetV2(
        weights=None, alpha=1.0, input_shape=(128, 128, 3)),
    "ResNet-50 (96x96)": lambda: keras.applications.ResNet50(
        weights=None, input_shape=(96, 96, 3)),
    "MobileNetV2 1.0 (96x96)": lambda: keras.applications.MobileNetV2(
        weights=None, alpha=1.0, input_shape=(96, 96, 3)),
}
ARCH_KEYS = {"vgg": "VGG-16 (CIFAR, 32x32)", "resnet": "PreAct-ResNet-56 (bottleneck, 32x32)",
             "mobilenetv2": "MobileNetV2 1.0 (128x128)", "resnet50": "ResNet-50 (96x96)",
             "mobilenetv2_96": "MobileNetV2 1.0 (96x96)"}
DEFAULT_ARCHS = ["vgg", "resnet", "mobilenetv2"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sparsity_like_gammas(model, seed: int = 0) -> None:
    """Redraw every BN gamma from the bimodal distribution in the module docstring."""
    testing.randomize_batchnorm(model, seed)
    rng = np.random.default_rng(seed + 1)
    bns = [layer for layer in _keras.walk_layers(model)
           if _keras.is_batch_norm(layer) and getattr(layer, "gamma", None) is not None]
    for i, layer in enumerate(bns):
        n = int(layer.gamma.shape[0])
        p_dead = float(np.clip(0.15 + 0.6 * i / max(1, len(bns) - 1) + rng.normal(0, 0.1),
                               0.05, 0.9))
        dead = rng.random(n) < p_dead
        gamma = np.where(dead, np.abs(rng.normal(0.0, 2e-3, n)),
                         rng.lognormal(np.log(0.4), 0.5, n))
        layer.gamma.assign(gamma.astype("float32"))


def conv_widths(model) -> list[int]:
    """Output channels of every conv-like layer that has a `filters` count."""
    widths = []
    for layer in _keras.walk_layers(model):
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            widths.append(int(layer.output.shape[-1]))
        elif isinstance(layer, keras.layers.Conv2D):
            widths.append(int(layer.filters))
    return widths


def xnnpack_partitions(path: str) -> tuple[int | None, list[str]]:
    """(XNNPACK partitions, op types LiteRT runs outside XNNPACK) of a .tflite file."""
    info = _litert.xnnpack_partitions(path)
    return info["partitions"], sorted(info["cpu_ops"])


def depthwise_macs_share(the_plan) -> float:
    dw = sum(r.macs_after for r in the_plan.layers if r.class_name == "DepthwiseConv2D")
    return dw / the_plan.macs_after if the_plan.macs_after else 0.0


def prepare(arch: str, ratios, round_tos, workdir: str, seed: int,
            unordered: bool = False, runtimes=("litert",), equal_macs=(),
            readers: bool = False, floor: bool = False, threads=(1,)) -> dict:
    """Build, sparsify, prune and export one architecture; sizes and MACs per case.

    Cases are every (round_to, ratio) pair with channel selection on (the
    library default). If that inserts ChannelSelection layers, the same pairs
    are repeated with channel_selection=False for comparison, and with
    `unordered` also exported with `order_channels=False` (GATHERs, the file
    as it was before export reordered channels). Every round_to in
    `equal_macs` is also planned as `plan(target_macs=M, round_to=...)`, M
    being the MACs of the round_to=1 plan at that ratio: widths at multiples
    of round_to for the same compression (`budget: "equal_macs"`), where the
    ratio alone rounds every layer up and keeps more MACs. With `readers`,
    models that needed a selection are also planned with
    criterion="bn_scale_readers", which cuts the shared streams instead.
    Files with channel selections are also exported laid out for each
    thread count in `threads` above 1 (`export_tflite(for_threads=t)`), and
    timed at that count in LiteRT (`litert_for_threads`).
    """
    model = ARCHS[arch]()
    sparsity_like_gammas(model, seed)
    slug = "".join(c for c in arch.lower() if c.isalnum())  # unique per architecture
    base_path = os.path.join(workdir, f"{slug}_original.tflite")
    log(f"{arch}: exporting the original")
    base_report = keras_slim.export_tflite(model, base_path)
    base_files = runtimes_.export_all(model, base_path, runtimes)
    zero = keras_slim.plan(model, 0.0)
    unreachable: list[dict] = []

    def build(selection: bool, order: bool = True, criterion: str = "bn_scale") -> list[dict]:
        out = []
        plans = [(round_to, ratio, None) for round_to in round_tos for ratio in ratios]
        plans += [(round_to, ratio, keras_slim.plan(
            model, ratio, channel_selection=selection, criterion=criterion).macs_after)
            for round_to in equal_macs for ratio in ratios]
        for round_to, ratio, budget in plans:
            if budget is None:
                p = keras_slim.plan(model, ratio, round_to=round_to, channel_selection=selection,
                                    criterion=criterion)
            else:
                try:
                    p = keras_slim.plan(model, target_macs=budget, round_to=round_to,
                                        channel_selection=selection, criterion=criterion)
                except keras_slim.ModelError as err:  # widths already at the multiple
                    unreachable.append(dict(ratio=ratio, round_to=round_to,
                                            channel_selection=selection, reason=str(err)))
                    log(f"{arch}: ratio {ratio}'s MACs at round_to {round_to}: not reachable")
                    continue
            small = keras_slim.prune(model, p)
            selections = sum(isinstance(layer, keras_slim.ChannelSelection)
                             for layer in _keras.walk_layers(small))
            path = os.path.join(workdir, f"{slug}_r{int(ratio * 100)}_q{round_to}"
                                         f"{'_eq' if budget else ''}"
                                         f"_cs{int(selection)}_o{int(order)}"
                                         f"{'_readers' if criterion != 'bn_scale' else ''}.tflite")
            log(f"{arch}: ratio {ratio} round_to {round_to} channel_selection {selection}: "
                f"MACs {p.macs_after / p.macs_before:.3f} of the original; exporting")
            report = keras_slim.export_tflite(small, path, order_channels=order)
            files = runtimes_.export_all(small, path, runtimes if order else ("litert",))
            for_threads = {}
            for t in sorted({t for t in threads if t > 1}) if selections and order else ():
                for_threads[str(t)] = path[:-len(".tflite")] + f"_for{t}t.tflite"
                keras_slim.export_tflite(small, for_threads[str(t)], for_threads=t)
            partitions, outside = xnnpack_partitions(path)
            gathers = report.op_histogram.get("GATHER", 0)
            widths = conv_widths(small)
            out.append(dict(
                ratio=ratio, round_to=round_to, channel_selection=selection, criterion=criterion,
                budget="equal_macs" if budget else "ratio",
                conv_widths=widths,
                selections=selections, gathers=gathers, order_channels=order,
                channel_order=report.details.get("channel_order", ""), path=path,
                files=files, litert_for_threads=for_threads, removed_channels=p.removed_channels,
                prunable_channels=p.prunable_channels, params=p.params_after,
                macs=p.macs_after, size_bytes=report.size_bytes,
                max_rel_error=report.max_rel_error,
                conv_layers=len(widths),
                conv_widths_not_multiple_of_8=sum(w % 8 != 0 for w in widths),
                depthwise_macs_share=depthwise_macs_share(p),
                op_histogram=report.op_histogram, xnnpack_partitions=partitions,
                ops_outside_xnnpack=outside))
        return out

    cases = build(True)
    if any(c["selections"] for c in cases):
        cases += build(False)
        if unordered:  # the file as before export reordered channels: GATHERs
            cases += build(True, order=False)
        if readers:  # cut the shared streams rather than select from them
            cases += build(True, criterion="bn_scale_readers")
    partitions, outside = xnnpack_partitions(base_path)
    floor_record = latency_floor(model, os.path.join(workdir, f"{slug}_floor.tflite")) if floor \
        else None
    return dict(arch=arch, path=base_path, files=base_files, params=zero.params_before,
                floor=floor_record,
                macs=zero.macs_before,
                xnnpack_partitions=partitions, ops_outside_xnnpack=outside,
                size_bytes=base_report.size_bytes, op_histogram=base_report.op_histogram,
                depthwise_macs_share=depthwise_macs_share(zero),
                conv_widths_not_multiple_of_8=sum(w % 8 != 0 for w in conv_widths(model)),
                cases=cases, unreachable=unreachable)


def latency_floor(model, path: str) -> dict:
    """The model with every layer cut to its minimum width, exported to `path`.

    `plan(model, 0.99, criterion="bn_scale_readers")` cuts nearly every channel
    the constraints allow, residual streams included: what is left is the time
    that does not depend on the widths (one invoke per op, the input, the
    per-op minimum of each kernel). A plan's latency t cannot go below this
    file's tf, so efficiency at MACs ratio m is at most m t0 / tf; the report
    also shows the efficiency if the time above tf fell with the MACs
    (`_speedup_report`).
    """
    with warnings.catch_warnings():  # "leaves these layers almost no channels": the point
        warnings.simplefilter("ignore")
        p = keras_slim.plan(model, 0.99, criterion="bn_scale_readers")
    keras_slim.export_tflite(keras_slim.prune(model, p), path)
    return dict(path=path, files={"litert": path}, macs=p.macs_after, params=p.params_after)


def measure(entry: dict, threads: int, rounds: int, runs: int, warmup: int,
            runtime: str = "litert") -> None:
    """Interleaved latency rounds in `runtime`: per-case speed-up and latency at `threads`."""
    cases = [c for c in entry["cases"] if runtime in c["files"]]
    if entry.get("floor") and runtime in entry["floor"]["files"]:
        cases.append(entry["floor"])  # timed in the same rounds; reported apart from the cases
    def file_of(c):  # LiteRT: the layout made for this thread count, where there is one
        laid_out = c.get("litert_for_threads", {}) if runtime == "litert" else {}
        return laid_out.get(str(threads), c["files"][runtime])

    paths = [entry["files"][runtime]] + [file_of(c) for c in cases]
    per_round: dict[str, list[float]] = {p: [] for p in paths}
    for r in range(rounds):
        shift = r % len(paths)
        for path in paths[shift:] + paths[:shift]:
            per_round[path].append(runtimes_.bench(runtime, path, threads, runs, warmup))
        log(f"{entry['arch']}: {runtime}, {threads} thread(s), round {r + 1}/{rounds}: original "
            f"{per_round[paths[0]][-1]:.3f} ms")
    base = per_round[paths[0]]
    original = runtimes_.slot(entry, runtime)
    original.setdefault("latency_ms", {})[str(threads)] = statistics.median(base)
    original.setdefault("latency_rounds_ms", {})[str(threads)] = base
    for record, path in zip(cases, paths[1:]):
        mine = per_round[path]
        reduction = entry["macs"] / record["macs"]
        case = runtimes_.slot(record, runtime)
        speedups = [b / m for b, m in zip(base, mine)]
        speedup = statistics.median(speedups)
        case.setdefault("latency_ms", {})[str(threads)] = statistics.median(mine)
        case.setdefault("latency_rounds_ms", {})[str(threads)] = mine
        case.setdefault("speedup", {})[str(threads)] = speedup
        case.setdefault("speedup_iqr", {})[str(threads)] = [
            float(np.percentile(speedups, 25)), float(np.percentile(speedups, 75))]
        case.setdefault("efficiency", {})[str(threads)] = speedup / reduction
        fastest = min(base) / min(mine)
        case.setdefault("speedup_fastest_rounds", {})[str(threads)] = fastest
        case.setdefault("efficiency_fastest_rounds", {})[str(threads)] = fastest / reduction


@contextlib.contextmanager
def paused(pids):
    """SIGSTOP `pids` for the block, SIGCONT them afterwards (also when the block fails)."""
    stopped = []
    try:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:  # a job that finished meanwhile needs no pause
                continue
            stopped.append(pid)
        time.sleep(1 if stopped else 0)  # let their running threads park
        yield
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {platform.machine()}, {os.cpu_count()} cores, {platform.system()}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--archs", nargs="+", choices=sorted(ARCH_KEYS), default=DEFAULT_ARCHS)
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    ap.add_argument("--round-to", type=int, nargs="+", default=[1, 8], dest="round_tos")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "results"))
    ap.add_argument("--runtimes", nargs="+", choices=runtimes_.RUNTIMES,
                    default=list(runtimes_.RUNTIMES),
                    help="runtimes to time besides LiteRT (which always runs)")
    ap.add_argument("--unordered", action="store_true",
                    help="also time the selection cases exported with order_channels=False")
    ap.add_argument("--readers", action="store_true",
                    help="also plan the selection cases with criterion='bn_scale_readers' "
                         "(cuts the shared streams instead of selecting from them)")
    ap.add_argument("--floor", action="store_true",
                    help="also time each model with every layer at its minimum width (the "
                         "latency no cut can go below; LiteRT only): the report adds each "
                         "case's efficiency above that floor and the ceiling it sets")
    ap.add_argument("--equal-macs", type=int, nargs="*", metavar="ROUND_TO",
                    help="also plan at the MACs of the round_to=1 plan (target_macs=) with "
                         "these round_to values (none given: every --round-to > 1): aligned "
                         "widths for the same compression")
    ap.add_argument("--keep", metavar="DIR",
                    help="keep the exported files in DIR (for _speedup_profile.py)")
    ap.add_argument("--pause", metavar="PID", type=int, nargs="+", default=[],
                    help="stop these processes (SIGSTOP) while timing, continue them "
                         "(SIGCONT) after each timing phase: other jobs on a shared machine")
    ap.add_argument("--stem", default="speedup",
                    help="results file names: OUT/STEM.json and OUT/STEM.md")
    ap.add_argument("--render", metavar="JSON",
                    help="only rewrite STEM.md from an existing STEM.json (no measuring)")
    args = ap.parse_args(argv)
    if args.render:
        with open(args.render) as f:
            result = json.load(f)
        text = markdown(result)
        with open(os.path.splitext(os.path.abspath(args.render))[0] + ".md", "w") as f:
            f.write(text)
        print(text)
        return 0
    runtimes = ["litert"] + [rt for rt in args.runtimes if rt != "litert"]
    logging.getLogger("keras_slim").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="keras")
    start = time.time()
    load_before = [round(x, 2) for x in os.getloadavg()]
    entries = []
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
    equal_macs = ([] if args.equal_macs is None else args.equal_macs
                  or [r for r in args.round_tos if r > 1])
    with tempfile.TemporaryDirectory(prefix="keras_slim_speedup_") as tmp:
        workdir = args.keep or tmp
        for key in args.archs:
            arch = ARCH_KEYS[key]
            keras.backend.clear_session()
            entry = prepare(arch, args.ratios, args.round_tos, workdir, args.seed,
                            args.unordered, runtimes, equal_macs, args.readers, args.floor,
                            args.threads)
            for t in args.threads:
                for rt in runtimes:
                    with paused(args.pause):
                        load = [round(x, 2) for x in os.getloadavg()]
                        measure(entry, t, args.rounds, args.runs, args.warmup, rt)
                        entry.setdefault("load", {})[f"{rt} {t}"] = [
                            load, [round(x, 2) for x in os.getloadavg()]]
            for record in [entry] + entry["cases"] + ([entry["floor"]] if entry["floor"] else []):
                record["path"] = os.path.basename(record["path"])
                record["files"] = {k: os.path.basename(v) for k, v in record["files"].items()}
            entries.append(entry)
    import tensorflow as tf
    from importlib import metadata

    cmd = "python benchmarks/speedup.py" + ("".join(" " + a for a in argv) if argv is not None
                                            else "".join(" " + a for a in sys.argv[1:]))
    result = dict(meta=dict(command=cmd, machine=machine(), threads=args.threads,
                            equal_macs=equal_macs, paused_pid=args.pause,
                            rounds=args.rounds, runs=args.runs, warmup=args.warmup,
                            seed=args.seed, load_before=load_before,
                            load_after=[round(x, 2) for x in os.getloadavg()],
                            elapsed_min=(time.time() - start) / 60,
                            tensorflow=tf.__version__, keras=keras.__version__,
                            litert=metadata.version("ai-edge-litert"), runtimes=runtimes,
                            runtime_versions=runtimes_.versions(runtimes)),
                  models=entries)
    save_results(args.out, args.stem, result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
