"""The runtimes `speedup.py` times beside LiteRT: onnxruntime, ncnn and MNN.

Every model (original and pruned) is also exported with `export_onnx`,
`export_ncnn` and `export_mnn` (float32, each verified against Keras) and
timed at batch 1 with each runtime's defaults, as `compare_latency` does:
LiteRT with XNNPACK, onnxruntime with all graph optimisations, ncnn with its
default fp16 storage/arithmetic options (fp16 storage on x86 CPUs with F16C,
fp16 arithmetic on ARMv8.2), MNN at "normal" precision. The speed-up of a
pruned model is then t(original) / t(pruned) in the same runtime and round.
"""
from __future__ import annotations

import os
from importlib import metadata

from keras_slim.export import (
    benchmark_mnn, benchmark_ncnn, benchmark_onnx, benchmark_tflite, export_mnn, export_ncnn,
    export_onnx,
)

RUNTIMES = ("litert", "onnx", "ncnn", "mnn")
LABELS = {"litert": "LiteRT", "onnx": "onnxruntime", "ncnn": "ncnn", "mnn": "MNN"}
_BENCH = {"litert": benchmark_tflite, "onnx": benchmark_onnx, "ncnn": benchmark_ncnn,
          "mnn": benchmark_mnn}
_PACKAGES = {"onnx": "onnxruntime", "ncnn": "ncnn", "mnn": "MNN"}


def export_all(model, tflite_path: str, runtimes) -> dict[str, str]:
    """{runtime: file} for `model`, already written to `tflite_path` for LiteRT."""
    stem = tflite_path[:-len(".tflite")]
    files = {"litert": tflite_path}
    if "onnx" in runtimes:
        export_onnx(model, stem + ".onnx")
        files["onnx"] = stem + ".onnx"
    if "ncnn" in runtimes:
        files["ncnn"] = export_ncnn(model, os.path.dirname(stem),
                                    name=os.path.basename(stem)).path
    if "mnn" in runtimes:
        export_mnn(model, stem + ".mnn")
        files["mnn"] = stem + ".mnn"
    return files


def bench(runtime: str, path: str, threads: int, runs: int, warmup: int) -> float:
    """Median ms of one batch-1 inference of `path` in `runtime`."""
    return _BENCH[runtime](path, threads=threads, runs=runs, warmup=warmup).median_ms


def slot(record: dict, runtime: str) -> dict:
    """Where a runtime's measurements live: LiteRT's at the top (older JSON), others below."""
    return record if runtime == "litert" else record.setdefault("runtimes", {}).setdefault(
        runtime, {})


def versions(runtimes) -> dict[str, str]:
    out = {}
    for rt in runtimes:
        if rt in _PACKAGES:
            out[_PACKAGES[rt]] = metadata.version(_PACKAGES[rt])
    if "ncnn" in runtimes:
        out["pnnx"] = metadata.version("pnnx")
    return out


def markdown_lines(result: dict, round_to_text=lambda c: str(c["round_to"]),
                   selection_text=lambda c: "on" if c["channel_selection"] else "off"
                   ) -> list[str]:
    """The speed-up of every pruned model in every runtime measured, side by side.

    `round_to_text` / `selection_text` label a case's columns (the report's own
    labels, so that both tables name a case alike).
    """
    runtimes = result["meta"].get("runtimes", ["litert"])
    if len(runtimes) < 2:
        return []
    threads = [str(t) for t in result["meta"]["threads"]]
    vers = ", ".join(f"{k} {v}" for k, v in result["meta"].get("runtime_versions", {}).items())
    lines = ["", "## The same models in every runtime", "",
             "Speed-up t(original) / t(pruned) in the same runtime (median over rounds of "
             "same-round ratios), efficiency = speed-up / MACs reduction in brackets, and the "
             "original's latency in the header row of each model. Each runtime at its defaults: "
             "LiteRT with XNNPACK, onnxruntime with all graph optimisations, ncnn with its fp16 "
             "storage/arithmetic options, MNN at normal precision" + (f" ({vers})" if vers else "")
             + ". Cases exported without channel reordering are LiteRT-only.", ""]
    head = ["model", "round_to", "channel selection", "prune ratio", "MACs"]
    head += [f"{t}T {LABELS[rt]}" for t in threads for rt in runtimes]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * (len(head) - 3)]
    for e in result["models"]:
        row = [e["arch"], "", "original", "", "1.000"]
        row += [f"{slot(e, rt)['latency_ms'][t]:.2f} ms" if t in slot(e, rt).get("latency_ms", {})
                else "-" for t in threads for rt in runtimes]
        lines.append("| " + " | ".join(row) + " |")
        for c in e["cases"]:
            if not c.get("order_channels", True):
                continue
            row = ["", round_to_text(c), selection_text(c),
                   f"{c['ratio']:.1f}", f"{c['macs'] / e['macs']:.3f}"]
            for t in threads:
                for rt in runtimes:
                    s = slot(c, rt)
                    row.append(f"{s['speedup'][t]:.2f}x ({s['efficiency'][t]:.2f})"
                               if t in s.get("speedup", {}) else "-")
            lines.append("| " + " | ".join(row) + " |")
    return lines
