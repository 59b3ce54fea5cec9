"""Where a .tflite file's time goes in LiteRT: every operator timed on its own.

LiteRT's Python API (ai-edge-litert 2.3) has no per-op profiler: the C++
`benchmark_model --enable_op_profiling` tool is not in the wheel, and the
Interpreter's only profiling flag (`experimental_force_delegate_node_profiling`)
feeds a profiler Python cannot attach. So each operator of the exported file
is cut out into a one-op file (its constant inputs kept, its other inputs made
graph inputs, everything else dropped) and timed with XNNPACK like the whole
file (`keras_slim.export._latency_probes.time_file`: fastest of `runs`
invokes). The fixed cost of an invoke (an empty one-op file's time) is
subtracted from each op, so the ops' sum can be set against the whole file's
fastest invoke; what that sum misses is what running the ops together costs
or saves (XNNPACK fuses some ops, reuses caches across others).

    python benchmarks/_speedup_profile.py FILE.tflite [FILE2.tflite ...] [--threads 1 2]
        [--curves] [--grid] [--pause PID ...] [--stem speedup_profile]

writes benchmarks/results/STEM.{json,md}: per file, the time per op type and per
(op, kernel, output size) -- the stages of a CNN -- with their share of the MACs.
`--grid` adds narrow convs at 32x32 timed against both widths (3x3 w -> w,
1x1 64 -> w, 1x1 w -> 64), which shows how a kernel's time follows its input
and output widths where MACs follow their product.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from keras_slim.export import _deps  # noqa: E402
from keras_slim.export._latency_probes import ProbeSpec, probe_file, time_file  # noqa: E402


def _load(path: str):
    s = _deps.litert_schema()
    with open(path, "rb") as f:
        buf = f.read()
    return s, s.ModelT.InitFromObj(s.Model.GetRootAs(buf, 0))


def _op_names(s, model) -> list[str]:
    names = {v: k for k, v in vars(s.BuiltinOperator).items() if not k.startswith("_")}
    out = []
    for code in model.operatorCodes:
        value = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        out.append(names.get(value, str(value)))
    return out


def one_op_files(path: str) -> list[dict]:
    """[{index, op, inputs (shapes), output (shape), content (bytes)}] for subgraph 0's ops."""
    import flatbuffers

    s, model = _load(path)
    names = _op_names(s, model)
    graph = model.subgraphs[0]
    out = []
    for index, op in enumerate(graph.operators):
        used = [int(t) for t in list(op.inputs) + list(op.outputs) if int(t) >= 0]
        remap, tensors, buffers, graph_inputs = {}, [], [s.BufferT()], []
        for t in dict.fromkeys(used):
            tensor = copy.copy(graph.tensors[t])
            data = model.buffers[tensor.buffer].data if tensor.buffer else None
            constant = data is not None and len(data) > 0
            buffers.append(model.buffers[tensor.buffer] if constant else s.BufferT())
            tensor.buffer = len(buffers) - 1
            remap[t] = len(tensors)
            tensors.append(tensor)
            if constant is False and t in [int(i) for i in op.inputs]:
                graph_inputs.append(remap[t])
        new_op = copy.copy(op)
        new_op.inputs = np.asarray([remap.get(int(t), -1) for t in op.inputs], np.int32)
        new_op.outputs = np.asarray([remap[int(t)] for t in op.outputs], np.int32)
        new_op.opcodeIndex = 0
        sub = s.SubGraphT()
        sub.tensors, sub.operators, sub.name = tensors, [new_op], "main"
        sub.inputs = np.asarray(graph_inputs, np.int32)
        sub.outputs = np.asarray(new_op.outputs, np.int32)
        m = s.ModelT()
        m.version, m.description = 3, "one op"
        m.subgraphs, m.buffers = [sub], buffers
        m.operatorCodes = [model.operatorCodes[op.opcodeIndex]]
        builder = flatbuffers.Builder(1024)
        builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
        shape = lambda t: [int(d) for d in graph.tensors[int(t)].shape]  # noqa: E731
        out.append(dict(index=index, op=names[op.opcodeIndex],
                        inputs=[shape(t) for t in op.inputs if int(t) >= 0],
                        output=shape(op.outputs[0]), content=bytes(builder.Output())))
    return out


def _time_any(content: bytes, threads: int, runs: int, warmup: int) -> float:
    """time_file for files whose inputs may be several (it fills the first; fill them all)."""
    import time

    Interpreter, OpResolverType = _deps.litert_interpreter_cls()
    interp = Interpreter(model_content=content, num_threads=threads,
                         experimental_op_resolver_type=OpResolverType.AUTO)
    interp.allocate_tensors()
    rng = np.random.default_rng(0)
    for d in interp.get_input_details():
        interp.set_tensor(d["index"], rng.uniform(-1, 1, d["shape"]).astype(d["dtype"]))
    for _ in range(warmup):
        interp.invoke()
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        interp.invoke()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def overhead_ms(threads: int, runs: int = 200, warmup: int = 20) -> float:
    """Fastest invoke of a 1x1x1 -> 1 conv: the per-invoke cost every one-op file pays."""
    return time_file(probe_file(ProbeSpec("conv", (1, 1), (1, 1)), 1, 1), threads, runs, warmup)


def profile(path: str, threads: int = 1, runs: int = 30, warmup: int = 5) -> dict:
    """Per-op ms (overhead subtracted), their sum, and the whole file's fastest invoke."""
    base = overhead_ms(threads)
    ops = []
    for item in one_op_files(path):
        ms = _time_any(item.pop("content"), threads, runs, warmup)
        ops.append(dict(item, ms=max(ms - base, 0.0)))
    with open(path, "rb") as f:
        whole = _time_any(f.read(), threads, runs, warmup)
    return dict(path=os.path.basename(path), threads=threads, overhead_ms=base,
                whole_ms=whole, ops_sum_ms=sum(o["ms"] for o in ops), ops=ops)


def by_type(result: dict) -> dict[str, float]:
    """ms per op type, largest first."""
    totals: dict[str, float] = {}
    for o in result["ops"]:
        totals[o["op"]] = totals.get(o["op"], 0.0) + o["ms"]
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def _macs(op: dict) -> int:
    out, w = op["output"], op["inputs"][1] if len(op["inputs"]) > 1 else None
    if op["op"] == "CONV_2D":
        return out[1] * out[2] * out[3] * w[1] * w[2] * w[3]
    if op["op"] == "DEPTHWISE_CONV_2D":
        return out[1] * out[2] * out[3] * w[1] * w[2]
    if op["op"] == "FULLY_CONNECTED":
        return w[0] * w[1]
    return 0


def misaligned_ms(result: dict, block: int = 32) -> float:
    """ms of the conv/depthwise ops whose output width is not a multiple of `block`."""
    return sum(o["ms"] for o in result["ops"] if o["op"] in ("CONV_2D", "DEPTHWISE_CONV_2D")
               and o["output"][-1] % block)


CURVE_POINTS = (8, 16, 17, 24, 31, 32, 33, 48, 63, 64, 96, 128, 136, 256, 264)


def curves(threads, runs: int = 30, warmup: int = 5) -> dict:
    """The conv and depthwise width curves (`_latency_probes.measure_curve`) at each count."""
    from keras_slim.export._latency_probes import measure_curve

    out = {}
    for kind in ("conv", "depthwise"):
        for t in threads:
            c = measure_curve(kind, t, runs, warmup)
            out[f"{kind} {t}"] = dict(zip(c.widths, c.ms))
    return out


GRID_WIDTHS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64)
GRID_SHAPES = {  # name -> (kernel, cin of width w, cout of width w), 32x32 pixels, ReLU
    "3x3 w -> w": (3, lambda w: w, lambda w: w),
    "1x1 64 -> w": (1, lambda w: 64, lambda w: w),
    "1x1 w -> 64": (1, lambda w: w, lambda w: 64),
}


def grid(threads, runs: int = 30, warmup: int = 5) -> dict:
    """us of each GRID_SHAPES conv at every GRID_WIDTHS width (fastest invoke, overhead off)."""
    out = {}
    for t in threads:
        base = overhead_ms(t)
        for name, (k, cin, cout) in GRID_SHAPES.items():
            spec = ProbeSpec("conv", (32, 32), (32, 32), (k, k), activation="relu")
            out[f"{name}, {t}T"] = {w: 1000 * max(time_file(probe_file(spec, cin(w), cout(w)), t,
                                                            runs, warmup) - base, 0.0)
                                    for w in GRID_WIDTHS}
    return out


def by_stage(result: dict) -> list[tuple]:
    """(op, kernel, output HxW, count, ms, MACs) per group of ops, most time first."""
    groups: dict[tuple, list] = {}
    for o in result["ops"]:
        kernel = ("x".join(map(str, o["inputs"][1][1:3]))
                  if o["op"] in ("CONV_2D", "DEPTHWISE_CONV_2D") else "")
        hw = "x".join(map(str, o["output"][1:3])) if len(o["output"]) == 4 else ""
        g = groups.setdefault((o["op"], kernel, hw), [0, 0.0, 0])
        g[0] += 1
        g[1] += o["ms"]
        g[2] += _macs(o)
    return sorted(((*k, *v) for k, v in groups.items()), key=lambda r: -r[4])


def markdown(result: dict) -> str:
    meta = result["meta"]
    lines = ["# Where the time goes: each op of the exported files timed alone (LiteRT, XNNPACK)",
             "", f"Command: `{meta['command']}`", "",
             f"{meta['machine']}; load average {meta['load_before']} before, "
             f"{meta['load_after']} after. Fastest of {meta['runs']} invokes per one-op file "
             "and per whole file; the empty-invoke overhead is subtracted from each op. "
             "\"sum\" is the ops' total; whole - sum is what running them as one graph adds "
             "(thread hand-offs between ops, weights no longer in cache). MACs share and time "
             "share per op type; \"not x32\": time in conv/depthwise ops whose output width is "
             "not a multiple of 32.", ""]
    types = ["CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "PAD"]
    head = ["file", "threads", "whole ms", "sum ms", "whole - sum"] + [
        f"{t} ms (time %, MACs %)" for t in types] + ["not x32 ms"]
    lines += ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in result["profiles"]:
        total = sum(_macs(o) for o in r["ops"]) or 1
        kinds = by_type(r)
        cells = []
        for t in types:
            ms = kinds.get(t, 0.0)
            macs = sum(_macs(o) for o in r["ops"] if o["op"] == t)
            cells.append(f"{ms:.3f} ({100 * ms / r['ops_sum_ms']:.0f}%, {100 * macs / total:.0f}%)")
        lines.append("| " + " | ".join([r["path"], str(r["threads"]), f"{r['whole_ms']:.3f}",
                                        f"{r['ops_sum_ms']:.3f}",
                                        f"{r['whole_ms'] - r['ops_sum_ms']:.3f}"] + cells
                                       + [f"{misaligned_ms(r):.3f}"]) + " |")
    for r in result["profiles"]:
        total_ms = r["ops_sum_ms"] or 1.0
        total_macs = sum(_macs(o) for o in r["ops"]) or 1
        lines += ["", f"By op, kernel and output size: {r['path']}, {r['threads']} thread(s) "
                  "(ops under 1% of the time left out)", "",
                  "| op | kernel | output | ops | ms | time % | MACs % | ns per kMAC |",
                  "|---|---|---|---:|---:|---:|---:|---:|"]
        for op, kernel, hw, n, ms, macs in by_stage(r):
            if ms / total_ms < 0.01:
                continue
            per = f"{1e9 * ms / macs:.1f}" if macs else ""
            lines.append(f"| {op} | {kernel} | {hw} | {n} | {ms:.3f} | "
                         f"{100 * ms / total_ms:.0f} | {100 * macs / total_macs:.0f} | {per} |")
    if result.get("grid"):
        lines += ["", "Narrow convs at 32x32 pixels (ReLU), us per invoke with the empty-invoke "
                  "overhead off, at each width w:", ""]
        lines += ["| conv, threads | " + " | ".join(map(str, GRID_WIDTHS)) + " |",
                  "|---|" + "---:|" * len(GRID_WIDTHS)]
        for name, row in result["grid"].items():
            row = {int(k): v for k, v in row.items()}
            lines.append(f"| {name} | " + " | ".join(f"{row[w]:.1f}" for w in GRID_WIDTHS)
                         + " |")
    if result.get("curves"):
        lines += ["", "Width curves: one reference op (3x3, 16x16 pixels; conv: 32 input "
                  "channels) timed at each output width, in microseconds:", ""]
        head = ["op, threads"] + [str(w) for w in CURVE_POINTS]
        lines += ["| " + " | ".join(head) + " |", "|---|" + "---:|" * len(CURVE_POINTS)]
        for name, curve in result["curves"].items():
            curve = {int(k): v for k, v in curve.items()}
            lines.append("| " + " | ".join([name] + [f"{1000 * curve[w]:.0f}" if w in curve
                                                     else "" for w in CURVE_POINTS]) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    import platform
    import time

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--curves", action="store_true", help="also measure the width curves")
    ap.add_argument("--grid", action="store_true",
                    help="also time narrow convs against their input and output widths")
    ap.add_argument("--pause", metavar="PID", type=int, nargs="+", default=[],
                    help="stop these processes (SIGSTOP) while timing (speedup.py's --pause)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "results"))
    ap.add_argument("--stem", default="speedup_profile")
    args = ap.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _results import save_results
    from speedup import machine, paused

    load_before = [round(x, 2) for x in os.getloadavg()]
    with paused(args.pause):
        profiles = [profile(path, t, args.runs) for t in args.threads for path in args.files]
        grid_us = grid(args.threads, args.runs) if args.grid else None
        curve_ms = curves(args.threads, args.runs) if args.curves else None
    result = dict(meta=dict(command="python benchmarks/_speedup_profile.py " + " ".join(
        sys.argv[1:] if argv is None else argv), machine=machine(), runs=args.runs,
        platform=platform.platform(), load_before=load_before, time=time.ctime()),
        profiles=profiles, grid=grid_us, curves=curve_ms)
    result["meta"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
    save_results(args.out, args.stem, result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
