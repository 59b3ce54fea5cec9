"""When are slices + concatenation cheaper than one GATHER for a channel selection?

    python benchmarks/selection_cutoff.py [--rounds 7] [--runs 30] [--threads 1]

At the three stream shapes of a CIFAR pre-activation ResNet (64 channels at
32x32, 128 at 16x16, 256 at 8x8), builds a chain of 6 residual blocks, each
reading its shared input through a selection of ~60% of the channels in k
runs, expressed either way (`keras_slim.layers.select_channels` with the cut-off
forced), plus the same chain with a plain slice (no selection cost). Exports
float32 .tflite, times batch-1 LiteRT XNNPACK at `--threads` (1) in interleaved
rounds, and reports the cost per selection over the plain chain and its
XNNPACK partitions. `keras_slim.layers.MIN_MEAN_RUN` is set from this table.

Writes benchmarks/results/selection_cutoff.{json,md} (selection_cutoff_2threads.* at 2).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers, ops  # noqa: E402

import keras_slim  # noqa: E402
from keras_slim import layers as slim_layers  # noqa: E402
from keras_slim.export import _litert, benchmark_tflite  # noqa: E402
from _results import save_results  # noqa: E402

SHAPES = [(64, 32, (1, 4, 8, 16, 24)), (128, 16, (1, 8, 16, 32, 48)),
          (256, 8, (1, 8, 16, 32, 48, 64))]
BLOCKS = 6


class _Select(layers.Layer):
    """A selection forced to one form ("slices", "gather", or "none": a plain slice)."""

    def __init__(self, indices, form, **kwargs):
        super().__init__(**kwargs)
        self.indices, self.form = list(indices), form

    def call(self, x):
        if self.form == "none":
            return x[..., :len(self.indices)]
        if self.form == "gather":  # forced, even for one run (select_channels slices those)
            return ops.take(x, ops.convert_to_tensor(self.indices, "int32"), axis=-1)
        return slim_layers.select_channels(
            x, self.indices,
            take=lambda t, idx: ops.take(t, ops.convert_to_tensor(idx, "int32"), axis=-1),
            slice_last=lambda t, a, b: t[..., a:b],
            concat=lambda parts: ops.concatenate(parts, axis=-1),
            min_mean_run=0 if self.form == "slices" else float("inf"))


def _indices(rng, channels: int, runs: int) -> list[int]:
    """~60% of `channels` in exactly `runs` runs."""
    keep = int(0.6 * channels)
    lengths = np.full(runs, keep // runs)
    lengths[: keep - lengths.sum()] += 1
    gaps = np.full(runs, (channels - keep) // runs)
    out, pos = [], 0
    for length, gap in zip(lengths, gaps):
        pos += int(gap) if out else 0
        out += list(range(pos, pos + int(length)))
        pos += int(length)
    return out


def _chain(channels: int, hw: int, runs: int, form: str) -> keras.Model:
    rng = np.random.default_rng(runs)
    inp = keras.Input((hw, hw, channels))
    x = inp
    for _ in range(BLOCKS):
        y = _Select(_indices(rng, channels, runs), form)(x)
        y = layers.Conv2D(channels // 4, 1)(y)
        y = layers.Conv2D(channels, 1)(layers.ReLU()(y))
        x = layers.Add()([x, y])
    return keras.Model(inp, x)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--stem", default=None, help="output name (default: selection_cutoff, "
                    "selection_cutoff_2threads at 2 threads)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "results"))
    ap.add_argument("--render", metavar="JSON", help="only rewrite the markdown from a JSON")
    args = ap.parse_args(argv)
    if args.render:
        import json

        with open(args.render) as f:
            result = json.load(f)
        stem = os.path.splitext(os.path.basename(args.render))[0]
        save_results(os.path.dirname(os.path.abspath(args.render)), stem, result,
                     markdown(result))
        return 0
    load_before = [round(x, 2) for x in os.getloadavg()]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for channels, hw, run_counts in SHAPES:
            files = {}
            for runs in run_counts:
                for form in (("none", "gather", "slices") if runs == 1 else ("gather", "slices")):
                    path = os.path.join(tmp, f"c{channels}_r{runs}_{form}.tflite")
                    keras_slim.export_tflite(_chain(channels, hw, runs, form), path, fold_bn=False,
                                             order_channels=False)
                    files[(runs, form)] = path
            times = {k: [] for k in files}
            for r in range(args.rounds):
                keys = list(files)
                keys = keys[r % len(keys):] + keys[:r % len(keys)]
                for k in keys:
                    times[k].append(benchmark_tflite(files[k], threads=args.threads, runs=args.runs,
                                                     warmup=5).median_ms)
            plain = times[(1, "none")]
            for (runs, form), path in files.items():
                if form == "none":
                    continue
                extra = [(t - p) * 1000 / BLOCKS for t, p in zip(times[(runs, form)], plain)]
                rows.append(dict(channels=channels, hw=hw, runs=runs, form=form,
                                 selected=len(_indices(np.random.default_rng(0), channels, runs)),
                                 us_per_selection=statistics.median(extra),
                                 iqr=[float(np.percentile(extra, 25)),
                                      float(np.percentile(extra, 75))],
                                 partitions=_litert.xnnpack_partitions(path)["partitions"]))
    cmd = "python benchmarks/selection_cutoff.py" + "".join(" " + a for a in (argv or sys.argv[1:]))
    meta = dict(command=cmd, rounds=args.rounds, runs=args.runs, threads=args.threads,
                load_before=load_before,
                load_after=[round(x, 2) for x in os.getloadavg()])
    result = dict(meta=meta, rows=rows)
    stem = args.stem or ("selection_cutoff" + (f"_{args.threads}threads" if args.threads > 1
                                               else ""))
    save_results(args.out, stem, result, markdown(result))
    return 0


def markdown(result: dict) -> str:
    meta, rows = result["meta"], result["rows"]
    threads = meta.get("threads", 1)
    lines = [f"# Channel selection: slices + concatenation vs GATHER (LiteRT XNNPACK, {threads} "
             f"thread{'s' if threads > 1 else ''})", "",
             f"Command: `{meta['command']}`. Load average {meta['load_before']} before, "
             f"{meta['load_after']} after (2 shared cores).", "",
             f"Extra latency per selection (us) over the same {BLOCKS}-block chain with a plain "
             "slice, median of same-round differences (IQR); ~60% of the channels selected in "
             "`runs` runs. One run is always a single slice (as cheap as the plain slice), so it "
             "is not listed. Slices win while the mean run is >= ~4 channels: "
             "`keras_slim.layers.MIN_MEAN_RUN = 4`.", "",
             "| channels @ HxW | runs | mean run | GATHER us | slices us | slices / GATHER |"
             " partitions (gather, slices) |", "|---|---:|---:|---:|---:|---:|---|"]
    for c, hw, _ in SHAPES:
        for runs in sorted({r["runs"] for r in rows if r["channels"] == c} - {1}):
            g, s = ([r for r in rows if (r["channels"], r["runs"], r["form"]) == (c, runs, f)][0]
                    for f in ("gather", "slices"))
            lines.append(
                f"| {c} @ {hw}x{hw} | {runs} | {g['selected'] / runs:.1f} | "
                f"{g['us_per_selection']:.1f} ({g['iqr'][0]:.1f}-{g['iqr'][1]:.1f}) | "
                f"{s['us_per_selection']:.1f} ({s['iqr'][0]:.1f}-{s['iqr'][1]:.1f}) | "
                f"{s['us_per_selection'] / g['us_per_selection']:.2f} | "
                f"{g['partitions']}, {s['partitions']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
