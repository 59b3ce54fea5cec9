"""Does fewer MACs mean proportionally lower latency? Pruned vs original, measured.

    python benchmarks/speedup.py [--rounds 9] [--runs 30] [--threads 1 2]
        [--runtimes litert onnx ncnn mnn]

For three architectures (CIFAR VGG-16 at 32x32, pre-activation bottleneck
ResNet-56 at 32x32, MobileNetV2 alpha 1.0 at 128x128) with "sparsity-trained
like" BN scaling factors, prunes at 0.3/0.5/0.7 of the channels (round_to 1
and 8), exports every model to a float32 .tflite and measures batch-1 LiteRT
latency with XNNPACK at 1 and 2 threads; with `--runtimes` (default: all four)
also as .onnx, ncnn and .mnn files in onnxruntime, ncnn and MNN, timed the
same way, so each pruned model's speed-up shows in every runtime side by side
(`_speedup_runtimes.py`). Reported side by side, per case:

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

Writes benchmarks/results/speedup.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
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

ARCHS = {
    "VGG-16 (CIFAR, 32x32)": lambda: models.vgg(16),
    "PreAct-ResNet-56 (bottleneck, 32x32)": lambda: models.preact_resnet(56),
    "MobileNetV2 1.0 (128x128)": lambda: keras.applications.MobileNetV2(
        weights=None, alpha=1.0, input_shape=(128, 128, 3)),
}
ARCH_KEYS = {"vgg": "VGG-16 (CIFAR, 32x32)", "resnet": "PreAct-ResNet-56 (bottleneck, 32x32)",
             "mobilenetv2": "MobileNetV2 1.0 (128x128)"}


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
            unordered: bool = False, runtimes=("litert",)) -> dict:
    """Build, sparsify, prune and export one architecture; sizes and MACs per case.

    Cases are every (round_to, ratio) pair with channel selection on (the
    library default). If that inserts ChannelSelection layers, the same pairs
    are repeated with channel_selection=False for comparison, and with
    `unordered` also exported with `order_channels=False` (GATHERs, the file
    as it was before export reordered channels).
    """
    model = ARCHS[arch]()
    sparsity_like_gammas(model, seed)
    slug = "".join(c for c in arch.split(" ")[0].lower() if c.isalnum())
    base_path = os.path.join(workdir, f"{slug}_original.tflite")
    log(f"{arch}: exporting the original")
    base_report = keras_slim.export_tflite(model, base_path)
    base_files = runtimes_.export_all(model, base_path, runtimes)
    zero = keras_slim.plan(model, 0.0)
    def build(selection: bool, order: bool = True) -> list[dict]:
        out = []
        for round_to in round_tos:
            for ratio in ratios:
                p = keras_slim.plan(model, ratio, round_to=round_to, channel_selection=selection)
                small = keras_slim.prune(model, p)
                selections = sum(isinstance(layer, keras_slim.ChannelSelection)
                                 for layer in _keras.walk_layers(small))
                path = os.path.join(workdir, f"{slug}_r{int(ratio * 100)}_q{round_to}"
                                             f"_cs{int(selection)}_o{int(order)}.tflite")
                log(f"{arch}: ratio {ratio} round_to {round_to} channel_selection {selection}: "
                    f"MACs {p.macs_after / p.macs_before:.3f} of the original; exporting")
                report = keras_slim.export_tflite(small, path, order_channels=order)
                files = runtimes_.export_all(small, path, runtimes if order else ("litert",))
                partitions, outside = xnnpack_partitions(path)
                gathers = report.op_histogram.get("GATHER", 0)
                widths = conv_widths(small)
                out.append(dict(
                    ratio=ratio, round_to=round_to, channel_selection=selection,
                    selections=selections, gathers=gathers, order_channels=order,
                    channel_order=report.details.get("channel_order", ""), path=path,
                    files=files, removed_channels=p.removed_channels,
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
    partitions, outside = xnnpack_partitions(base_path)
    return dict(arch=arch, path=base_path, files=base_files, params=zero.params_before,
                macs=zero.macs_before,
                xnnpack_partitions=partitions, ops_outside_xnnpack=outside,
                size_bytes=base_report.size_bytes, op_histogram=base_report.op_histogram,
                depthwise_macs_share=depthwise_macs_share(zero),
                conv_widths_not_multiple_of_8=sum(w % 8 != 0 for w in conv_widths(model)),
                cases=cases)


def measure(entry: dict, threads: int, rounds: int, runs: int, warmup: int,
            runtime: str = "litert") -> None:
    """Interleaved latency rounds in `runtime`: per-case speed-up and latency at `threads`."""
    cases = [c for c in entry["cases"] if runtime in c["files"]]
    paths = [entry["files"][runtime]] + [c["files"][runtime] for c in cases]
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


def markdown(result: dict) -> str:
    meta = result["meta"]
    threads = meta["threads"]
    lines = [
        "# Pruned vs original: MACs, size and measured LiteRT latency", "",
        f"Command: `{meta['command']}`", "",
        f"Machine: {meta['machine']} (shared with other jobs; load average "
        f"{meta['load_before']} before, {meta['load_after']} after). "
        f"TensorFlow {meta['tensorflow']}, Keras {meta['keras']}, ai-edge-litert "
        f"{meta['litert']}. Batch 1, float32 .tflite, XNNPACK on; {meta['rounds']} interleaved "
        f"rounds x {meta['runs']} runs (after {meta['warmup']} warm-up) per model and thread "
        f"count; {meta['elapsed_min']:.1f} min in all.", "",
        "Ratios are pruned / original. Speed-up = t(original) / t(pruned) (median over rounds "
        "of same-round ratios); efficiency = speed-up / (MACs original / MACs pruned): 1.0 is "
        "latency falling exactly as much as the arithmetic, the goal is >= 0.9 (bold). IQR: "
        "inter-quartile range of the per-round speed-ups. \"convs not x8\": conv layers whose "
        "output width is not a multiple of 8.", "",
    ]
    head = ["model", "round_to", "channel selection", "prune ratio", "MACs", "params",
            "file size"]
    for t in threads:
        head += [f"{t}T ms (orig -> pruned)", f"{t}T speed-up (IQR)", f"{t}T efficiency",
                 f"{t}T eff. (fastest rounds)"]
    head += ["convs not x8", "XNNPACK partitions"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * (len(head) - 3)]
    for e in result["models"]:
        for c in e["cases"]:
            selection = _selection_text(c)
            row = [e["arch"], str(c["round_to"]), selection, f"{c['ratio']:.1f}",
                   f"{c['macs'] / e['macs']:.3f}", f"{c['params'] / e['params']:.3f}",
                   f"{c['size_bytes'] / e['size_bytes']:.3f}"]
            for t in map(str, threads):
                eff = c["efficiency"][t]
                low, high = c["speedup_iqr"][t]
                best = _fastest_efficiency(e, c, t)
                row += [f"{e['latency_ms'][t]:.2f} -> {c['latency_ms'][t]:.2f}",
                        f"{c['speedup'][t]:.2f}x ({low:.2f}-{high:.2f})",
                        f"**{eff:.2f}**" if eff >= 0.9 else f"{eff:.2f}",
                        f"**{best:.2f}**" if best >= 0.9 else f"{best:.2f}"]
            row.append(f"{c['conv_widths_not_multiple_of_8']}/{c['conv_layers']}")
            row.append(str(c.get("xnnpack_partitions", "?")))
            lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Originals: " + "; ".join(
        f"{e['arch']}: {e['macs'] / 1e6:.1f} M MACs, {e['params'] / 1e6:.2f} M params, "
        f"{e['size_bytes'] / 2 ** 20:.2f} MiB, depthwise share of MACs "
        f"{100 * e['depthwise_macs_share']:.0f}%" for e in result["models"]) + "."]
    notes = observations(result)
    if notes:
        lines += ["", "Checks on this run's data:", ""] + [f"* {n}" for n in notes]
    lines += runtimes_.markdown_lines(result)
    return "\n".join(lines) + "\n"


def _paired(on: dict, off: dict, t: str, key) -> str:
    ratios = [b / a for a, b in zip(on["latency_rounds_ms"][t], off["latency_rounds_ms"][t])]
    low, high = np.percentile(ratios, 25), np.percentile(ratios, 75)
    return (f"round_to {key[0]} ratio {key[1]}: {statistics.median(ratios):.2f} "
            f"(IQR {low:.2f}-{high:.2f}; efficiency {on['efficiency'][t]:.2f} vs "
            f"{off['efficiency'][t]:.2f})")


def _selection_text(case: dict) -> str:
    """'on (18 sel.: 0 GATHER)'; older JSON counted selections as GATHERs."""
    if not case["channel_selection"]:
        return "off"
    if not case.get("order_channels", True):
        return f"on, not reordered ({case['gathers']} GATHER)"
    selections = case.get("selections", case["gathers"])
    if not selections:
        return "on (none needed)"
    return f"on ({selections} sel.: {case['gathers']} GATHER)"


def _fastest_efficiency(entry: dict, case: dict, t: str) -> float:
    """Efficiency from the fastest round of each model (recomputed for older JSON)."""
    speedup = min(entry["latency_rounds_ms"][t]) / min(case["latency_rounds_ms"][t])
    return speedup / (entry["macs"] / case["macs"])


def observations(result: dict) -> list[str]:
    """Data-driven caveats: contention at 2 threads, GATHER cases, goal misses."""
    notes = []
    threads = [str(t) for t in result["meta"]["threads"]]
    if "1" in threads:
        for t in (t for t in threads if t != "1"):
            slower = [e["arch"] for e in result["models"]
                      if e["latency_ms"][t] >= e["latency_ms"]["1"]]
            if slower:
                notes.append(
                    f"At {t} threads the original is not faster than at 1 thread for "
                    f"{', '.join(slower)}: the other core(s) were busy with other work, so the "
                    f"{t}-thread columns measure contention more than the models (compare the "
                    "IQRs); trust the 1-thread columns.")
    gather = [c for e in result["models"] for c in e["cases"] if c["gathers"]]
    if gather:
        worst = min(gather, key=lambda c: c["efficiency"].get("1", 0.0))
        parts = sorted({c.get("xnnpack_partitions") for c in gather} - {None})
        split = (f" (here {parts[0]}-{parts[-1]} XNNPACK partitions instead of 1)"
                 if parts else "")
        notes.append(
            f"{len(gather)} case(s) contain ChannelSelection layers (TFLite GATHER), which the "
            "XNNPACK delegate does not take: each one splits the delegated graph" + split +
            " and runs on LiteRT's builtin kernel. Their 1-thread efficiency is "
            f"{min(c['efficiency']['1'] for c in gather):.2f} to "
            f"{max(c['efficiency']['1'] for c in gather):.2f}"
            f" (worst: ratio {worst['ratio']}, round_to {worst['round_to']}); the same cases "
            "with channel_selection=False are listed for comparison.")
    for e in result["models"]:
        on = {(c["round_to"], c["ratio"]): c for c in e["cases"]
              if c.get("selections") and c.get("order_channels", True)}
        for label, other in (("without channel selection, t(off) / t(on)",
                              lambda c: not c["channel_selection"]),
                             ("not reordered (GATHER), t(not reordered) / t(on)",
                              lambda c: c["channel_selection"] and not c.get("order_channels", True))):
            pairs = [(key, c, o) for o in e["cases"] if other(o)
                     for key, c in on.items() if key == (o["round_to"], o["ratio"])]
            for t in threads:
                if pairs:
                    notes.append(f"{e['arch']}, {t} thread(s): selection (reordered) vs {label}, "
                                 "same-round latency ratio (> 1: the reordered selection is "
                                 "faster): " + "; ".join(_paired(c, o, t, key)
                                                        for key, c, o in pairs) + ".")
    if "1" in threads:
        noisy = sorted({e["arch"] for e in result["models"] for c in e["cases"]
                        if abs(c["efficiency"]["1"] - _fastest_efficiency(e, c, "1")) > 0.1})
        if noisy:
            notes.append("At 1 thread the paired-median and fastest-round efficiencies differ "
                         f"by more than 0.1 for {', '.join(noisy)}: some rounds were contended "
                         "(wide IQR); the fastest-round column is the better estimate there.")
        misses = [(e["arch"], c, min(c["efficiency"]["1"], _fastest_efficiency(e, c, "1")))
                  for e in result["models"] for c in e["cases"] if not c["gathers"]]
        misses = [m for m in misses if m[2] < 0.9]
        if misses:
            notes.append("Below the 0.9 goal at 1 thread by either estimate, without GATHER: "
                         + "; ".join(f"{a} ratio {c['ratio']} round_to {c['round_to']} "
                                     f"({low:.3f})" for a, c, low in misses) + ".")
    return notes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--archs", nargs="+", choices=sorted(ARCH_KEYS), default=list(ARCH_KEYS))
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
    ap.add_argument("--render", metavar="JSON",
                    help="only rewrite speedup.md from an existing speedup.json (no measuring)")
    args = ap.parse_args(argv)
    if args.render:
        with open(args.render) as f:
            result = json.load(f)
        text = markdown(result)
        with open(os.path.join(os.path.dirname(os.path.abspath(args.render)), "speedup.md"),
                  "w") as f:
            f.write(text)
        print(text)
        return 0
    runtimes = ["litert"] + [rt for rt in args.runtimes if rt != "litert"]
    logging.getLogger("keras_slim").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="keras")
    start = time.time()
    load_before = [round(x, 2) for x in os.getloadavg()]
    entries = []
    with tempfile.TemporaryDirectory(prefix="keras_slim_speedup_") as workdir:
        for key in args.archs:
            arch = ARCH_KEYS[key]
            keras.backend.clear_session()
            entry = prepare(arch, args.ratios, args.round_tos, workdir, args.seed,
                            args.unordered, runtimes)
            for t in args.threads:
                for rt in runtimes:
                    measure(entry, t, args.rounds, args.runs, args.warmup, rt)
            for record in [entry] + entry["cases"]:
                record["path"] = os.path.basename(record["path"])
                record["files"] = {k: os.path.basename(v) for k, v in record["files"].items()}
            entries.append(entry)
    import tensorflow as tf
    from importlib import metadata

    cmd = "python benchmarks/speedup.py" + ("".join(" " + a for a in argv) if argv is not None
                                            else "".join(" " + a for a in sys.argv[1:]))
    result = dict(meta=dict(command=cmd, machine=machine(), threads=args.threads,
                            rounds=args.rounds, runs=args.runs, warmup=args.warmup,
                            seed=args.seed, load_before=load_before,
                            load_after=[round(x, 2) for x in os.getloadavg()],
                            elapsed_min=(time.time() - start) / 60,
                            tensorflow=tf.__version__, keras=keras.__version__,
                            litert=metadata.version("ai-edge-litert"), runtimes=runtimes,
                            runtime_versions=runtimes_.versions(runtimes)),
                  models=entries)
    save_results(args.out, "speedup", result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
