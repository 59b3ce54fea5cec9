"""Export the trained models of a CIFAR example run again and time them beside the run's files.

The DenseNet example (benchmarks/results/example_densenet_cpu.md) exported its
pruned models before `export.order` reordered channels through Concatenate, so
its selections were absorbed into full-width convs or left as GATHER. This
script re-exports the run's `models/*.keras` with the current exporter and
times the new files and the run's own `tflite/*.tflite` in the same
interleaved rounds (LiteRT + XNNPACK, batch 1), with the selection runs,
XNNPACK partitions, GATHER count and file size of each.

    python benchmarks/selection_export.py --run /work/runs/densenet_cpu --threads 1 2
        [--for-threads 1 2]

`--for-threads` re-exports once per value (`export_tflite(for_threads=N)`: the
absorb cost model of that thread count), so the layouts for 1 and 2 threads are
timed side by side at every thread count.
"""
from __future__ import annotations

import argparse
import collections
import os
import platform
import signal
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _results import save_results, table  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="an example's --out folder (models/, tflite/)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    ap.add_argument("--for-threads", type=int, nargs="+", default=[1],
                    help="re-export once per value (export_tflite(for_threads=N))")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--pause", type=int, nargs="+", default=[], metavar="PID")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
    ap.add_argument("--stem", default="selection_export")
    args = ap.parse_args(argv)
    start = time.time()

    import keras

    from keras_slim.export import benchmark_tflite, export_tflite
    from keras_slim.export._flatbuffer import tflite_op_histogram
    from keras_slim.export._litert import xnnpack_partitions

    names = sorted(os.path.splitext(f)[0] for f in os.listdir(os.path.join(args.run, "tflite"))
                   if f.endswith(".tflite"))
    tmp = tempfile.mkdtemp(prefix="selection_export_")
    files, info = {}, {}
    for name in names:
        model = keras.models.load_model(os.path.join(args.run, "models", name + ".keras"))
        old = os.path.join(args.run, "tflite", name + ".tflite")
        files[(name, "run's file")] = old
        for n in args.for_threads:
            which = "re-exported" + (f" for {n}T" if args.for_threads != [1] else "")
            new = os.path.join(tmp, f"{name}_for{n}.tflite")
            report = export_tflite(model, new, for_threads=n)
            files[(name, which)] = new  # channel_order: what the order/absorb step did
            info[(name, which)] = dict(channel_order=report.details.get("channel_order"),
                                       reexport_max_abs_error=report.max_abs_error)
    rounds: dict = collections.defaultdict(list)
    for pid in args.pause:
        os.kill(pid, signal.SIGSTOP)
    try:
        for _ in range(args.rounds):
            for t in args.threads:
                for key, path in files.items():
                    rounds[key + (t,)].append(benchmark_tflite(path, threads=t,
                                                               runs=args.runs).median_ms)
    finally:
        for pid in args.pause:
            os.kill(pid, signal.SIGCONT)
    base = {t: rounds[("baseline", "run's file", t)] for t in args.threads}
    rows, data = [], []
    for (name, which), path in files.items():
        with open(path, "rb") as f:
            ops = tflite_op_histogram(f.read())
        xnn = xnnpack_partitions(path, ops)
        extra = info.get((name, which), {})
        note = extra.get("channel_order")
        row = dict(model=name, file=which, kib=os.path.getsize(path) / 1024,
                   gather=ops.get("GATHER", 0), slices=ops.get("STRIDED_SLICE", 0),
                   partitions=xnn.get("partitions"), **extra)
        cells = [name, which, note or "",
                 row["gather"], row["slices"],
                 row["partitions"], f"{row['kib']:,.0f}"]
        for t in args.threads:
            ms = rounds[(name, which, t)]
            med = statistics.median(ms)
            speed = statistics.median(b / m for b, m in zip(base[t], ms))
            row[f"ms_{t}t"], row[f"rounds_{t}t"], row[f"speedup_{t}t"] = med, ms, speed
            cells += [f"{med:.3f}", f"{speed:.2f}x"]
        rows.append(cells)
        data.append(row)
    head = ["model", "file", "channel order (re-export)", "GATHER", "STRIDED_SLICE",
            "XNNPACK partitions", "KiB"]
    for t in args.threads:
        head += [f"ms ({t}T)", f"speed-up vs baseline ({t}T)"]
    minutes = (time.time() - start) / 60
    cmd = "python benchmarks/selection_export.py " + " ".join(argv or sys.argv[1:])
    md = [f"Command: `{cmd}`; {platform.processor() or platform.machine()}, {os.cpu_count()} "
          f"cores; {minutes:.1f} min; {args.rounds} interleaved rounds of {args.runs} invokes, "
          "median per round, then the median; speed-up = the same round's baseline (the run's "
          "file) over this file.", ""] + table(head, rows)
    save_results(args.out, args.stem, dict(command=cmd, minutes=minutes, rows=data),
                 "\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
