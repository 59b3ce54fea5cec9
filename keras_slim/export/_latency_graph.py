"""The latency model's third term: what running the layers as one graph adds to their sum.

Each one-op probe is timed hot: its few MB of weights stay in cache from
one invoke to the next. In the whole file every layer's weights are
evicted by the others' before it runs again, and once a model's weights
pass the core's L2 they stream from the last-level cache or memory. On the
2-core AVX512 Xeon here a chain of N 3x3 256->256 convs at 6x6 costs 1.05x
the single conv per op at 4 MB of weights, 1.11x at 18 MB and 1.74x at
72 MB; ResNet-50 at 96x96 (97 MB) ran its exported file in 24.2 ms against
a 12.4 ms sum of its ops timed alone. A per-layer sum cannot see that.

So the model's own layers are written into one file, side by side (each
reads its own graph input, as in `_latency_probes`), at 1/4, 1/2, 3/4 and
all of their widths, and timed once: the whole minus the fitted per-layer
sum at the same widths is the graph's extra time at that total of weights.
A plan's estimate adds that extra, read off those points at the plan's
weights (linear between them, through 0 at no weights; beyond the largest,
proportional). The curve is made non-decreasing in the weights, since
timing noise, not the memory system, makes it fall. What this leaves out:
the activations' traffic (each probe reads its own input, where the graph
reads the last op's output) and the ops without MACs, timed hot in
`_latency_elementwise`.
"""
from __future__ import annotations

import hashlib
import json
from typing import Sequence

import numpy as np

from keras_slim.export._latency_probes import _Builder, add_probe, time_file

FRACTIONS = (0.25, 0.5, 0.75, 1.0)  # of every layer's widths, for the graph files
MAX_FILE_MB = 1800.0  # of weights in one graph file: under flatbuffers' 2 GiB, with room


def weights_mb(spec, cin: float, cout: float) -> float:
    """MB of float32 weights a conv/dense layer reads at these widths (biases left out)."""
    taps = spec.kernel[0] * spec.kernel[1]
    if spec.kind == "depthwise":
        n = taps * cout
    elif spec.kind == "separable":
        n = taps * cin * spec.multiplier + cin * spec.multiplier * cout
    else:  # conv; dense has kernel (1, 1)
        n = taps * cin * cout
    return 4.0 * n / 2 ** 20


def widths_at(layers: Sequence, fraction: float) -> list[tuple[int, int]]:
    """Every layer's (cin, cout) at `fraction`, the model's input and output widths kept."""
    out = []
    for i, c in enumerate(layers):
        cin = c.cin if i == 0 else max(1, round(c.cin * fraction))
        cout = c.cout if i == len(layers) - 1 else max(1, round(c.cout * fraction))
        if c.spec.kind == "depthwise":
            cout = cin * c.spec.multiplier
        out.append((cin, cout))
    return out


def cache_spec(layers: Sequence) -> dict:
    """What the graph files are made of, as a short cache key."""
    text = json.dumps([[c.spec.key(), c.cin, c.cout] for c in layers], sort_keys=True)
    return {"layers": len(layers), "sha1": hashlib.sha1(text.encode()).hexdigest(),
            "fractions": list(FRACTIONS)}


def measure(layers: Sequence, overhead_ms: float, threads: int, runs: int,
            warmup: int) -> list[list[float]]:
    """[[weights MB, whole - sum ms], ...] of the graph files, one per distinct fraction.

    Fractions that give the same widths (a model of one or two layers keeps
    its input and output widths) are timed once, and a file over
    `MAX_FILE_MB` of weights is not written (flatbuffers cap a file at 2 GiB):
    `extra_ms` extends the largest point measured, and a model whose smallest
    file is over the cap gets no graph term.
    """
    points, seen = [], set()
    for f in FRACTIONS:
        widths = widths_at(layers, f)
        mb = sum(weights_mb(c.spec, cin, cout) for c, (cin, cout) in zip(layers, widths))
        if tuple(widths) in seen or mb > MAX_FILE_MB:
            continue
        seen.add(tuple(widths))
        b = _Builder()
        inputs, outputs, single = [], [], 0.0
        for c, (cin, cout) in zip(layers, widths):
            x, y = add_probe(b, c.spec, cin, cout)
            inputs.append(x)
            outputs.append(y)
            single += max(c.ms(cin, cout) - overhead_ms, 0.0)
        whole = time_file(b.finish(inputs, outputs), threads, runs, warmup) - overhead_ms
        points.append([mb, whole - single])
    return points


def extra_ms(points: Sequence, mb: float) -> float:
    """The graph's extra ms at `mb` of weights, read off the measured points."""
    if not points or mb <= 0:
        return 0.0
    p = np.asarray(sorted(points), np.float64)
    w = np.concatenate([[0.0], p[:, 0]])
    gap = np.maximum.accumulate(np.maximum(np.concatenate([[0.0], p[:, 1]]), 0.0))
    if mb <= w[-1]:
        return float(np.interp(mb, w, gap))
    return float(gap[-1] * mb / w[-1]) if w[-1] > 0 else 0.0
