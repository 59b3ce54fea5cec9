"""Result types of the export and benchmark functions."""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from keras_slim.errors import ExportError  # noqa: F401  (re-exported by keras_slim.export)


@dataclasses.dataclass
class TensorInfo:
    """One input or output of an exported model, as the runtime sees it."""

    name: str
    shape: tuple  # -1 marks a dynamic dimension
    dtype: str
    scale: float | None = None  # quantization scale (per-tensor), None if float
    zero_point: int | None = None

    def __str__(self) -> str:
        shape = "x".join("?" if d < 0 else str(d) for d in self.shape) or "scalar"
        quant = "" if self.scale is None else f" q(scale={self.scale:.6g}, zp={self.zero_point})"
        return f"{self.name}: {self.dtype}[{shape}]{quant}"


@dataclasses.dataclass
class ExportReport:
    """What `export_tflite` / `export_onnx` wrote and how well it matches Keras.

    Errors compare the exported file (run in LiteRT / onnxruntime) against the
    Keras model on the same inputs: `max_abs_error` is max |diff| over all
    outputs, `max_rel_error` is max over outputs of max|diff| / max(1, max|ref|).

    `input_size` says how the file treats the model's input size: "static"
    (the model's inputs have no None axis but the batch), "dynamic" (the
    file keeps the model's None axes; runtimes resize the input, e.g. LiteRT's
    `resize_tensor_input`) or "fixed" (None axes set by `input_shape=`).
    `verified_shapes` lists, per check, the input shapes (without the batch
    axis) the file ran at: a dynamic file is checked at two sizes.

    `xnnpack` (TFLite only) says how LiteRT's XNNPACK delegate, its default CPU
    path, splits the file: `partitions` (1 is best: every op in one delegated
    graph), `delegated_nodes`, `cpu_ops` ({op: count} left to LiteRT's builtin
    kernels, e.g. GATHER) and `source`: "interpreter" when read from LiteRT's
    node list after delegation, "op histogram" when that list could not be
    read (then `partitions` is None and `cpu_ops` lists the ops the delegate is
    not known to take). None when the file could not be loaded.
    """

    path: str
    format: str  # "tflite", "onnx", "ncnn" or "mnn"
    quantize: str | None
    size_bytes: int
    op_histogram: dict[str, int]
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    verified: bool = False
    num_verify_samples: int = 0
    max_abs_error: float | None = None
    max_rel_error: float | None = None
    top1_agreement: float | None = None  # fraction of samples where argmaxes agree
    keras_accuracy: float | None = None
    exported_accuracy: float | None = None
    folded_batchnorms: int = 0
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    input_size: str = "static"
    verified_shapes: list = dataclasses.field(default_factory=list)
    xnnpack: dict | None = None

    def record_verification(self, checked) -> None:
        """Fill the verification fields from a `verify_sizes` result (every exporter)."""
        self.max_abs_error, self.max_rel_error = checked.max_abs_error, checked.max_rel_error
        self.verified, self.num_verify_samples = True, sum(checked.counts)
        self.verified_shapes = checked.shapes
        self.details["verify_counts"] = checked.counts
        if checked.note:
            self.details["verify_note"] = checked.note

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict (JSON serialisable)."""
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        rows = [
            ("file", self.path),
            ("format", self.format + (f" ({self.quantize})" if self.quantize else " (float32)")),
            ("size", format_bytes(self.size_bytes)),
            ("inputs", "; ".join(map(str, self.inputs))),
            ("outputs", "; ".join(map(str, self.outputs))),
            ("ops", ", ".join(f"{k}x{v}" for k, v in
                              sorted(self.op_histogram.items(), key=lambda kv: (-kv[1], kv[0])))),
        ]
        if self.details.get("blobs"):  # ncnn: blob names in0/out0 ... for the app
            rows.append(("blobs", ", ".join(f"{k} = {v}" for k, v in
                                            self.details["blobs"].items())))
        if self.folded_batchnorms:
            rows.append(("folded BN", str(self.folded_batchnorms)))
        if self.details.get("channel_order"):
            rows.append(("selections", self.details["channel_order"]))
        if self.xnnpack is not None:
            rows.append(("XNNPACK", xnnpack_text(self.xnnpack)))
        rows.append(("input size", _input_size_text(self.input_size)))
        if self.verified:
            rows.append(("verified on", _verified_text(self.num_verify_samples,
                                                       self.verified_shapes,
                                                       self.details.get("verify_counts"))))
            if self.details.get("verify_note"):
                rows.append(("note", self.details["verify_note"]))
            rows.append(("max abs err", f"{self.max_abs_error:.3g}"))
            rows.append(("max rel err", f"{self.max_rel_error:.3g}"))
            defaults = self.details.get("ncnn_default_options")
            if defaults:  # what an app keeping ncnn's fp16 defaults gets
                rows.append(("ncnn defaults", f"max rel err {defaults['max_rel_error']:.3g} with "
                                              "fp16 storage/arithmetic on"))
        else:
            rows.append(("verified", "no"))
        if self.top1_agreement is not None:
            rows.append(("top-1 agree", f"{self.top1_agreement:.2%}"))
            rows.append(("accuracy", f"keras {self.keras_accuracy:.2%} / "
                                     f"{self.format} {self.exported_accuracy:.2%}"))
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


@dataclasses.dataclass
class LatencyReport:
    """Batch-1 latency of one model file in one runtime configuration (ms)."""

    path: str
    runtime: str  # "litert", "onnxruntime", "ncnn" or "mnn"
    threads: int
    batch_size: int  # leading axis of the first input as timed (dynamic axes set to 1)
    runs: int
    warmup: int
    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    accelerated: bool  # XNNPACK for LiteRT, graph optimisations for onnxruntime

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        return (f"{self.path} [{self.runtime}, {self.threads} thread(s), batch "
                f"{self.batch_size}]: "
                f"median {self.median_ms:.3f} ms, p90 {self.p90_ms:.3f} ms "
                f"({self.runs} runs after {self.warmup} warm-up)")


@dataclasses.dataclass
class LatencyTable:
    """Several `LatencyReport`s, printable side by side (one row per file)."""

    reports: list[LatencyReport]

    def to_dict(self) -> dict[str, Any]:
        return {"reports": [r.to_dict() for r in self.reports]}

    def __str__(self) -> str:
        threads = sorted({r.threads for r in self.reports})
        files = list(dict.fromkeys((r.path, r.runtime) for r in self.reports))
        header = ["file", "runtime"] + [f"{t}T median / p90 ms" for t in threads]
        rows = []
        for path, runtime in files:
            row = [path, runtime]
            for t in threads:
                hit = [r for r in self.reports
                       if (r.path, r.runtime, r.threads) == (path, runtime, t)]
                row.append(f"{hit[0].median_ms:.3f} / {hit[0].p90_ms:.3f}" if hit else "-")
            rows.append(row)
        return _table(header, rows)


_INPUT_SIZES = {
    "static": "static (the model's own)",
    "dynamic": "dynamic (the model's None axes kept; resize the input at run time)",
    "fixed": "fixed by input_shape= (the model's None axes set)",
}


def xnnpack_text(info: dict) -> str:
    """'1 partition, 212 nodes delegated' / '7 partitions; on the CPU: GATHERx6'."""
    cpu = ", ".join(f"{k}x{v}" for k, v in sorted(info.get("cpu_ops", {}).items()))
    if info.get("partitions") is None:
        return ("partitioning not readable from LiteRT; ops the delegate does not take: "
                + (cpu or "none"))
    n = info["partitions"]
    text = f"{n} partition{'s' if n != 1 else ''}, {info['delegated_nodes']} nodes delegated"
    return text + (f"; on the CPU: {cpu}" if cpu else "")


def _input_size_text(mode: str) -> str:
    return _INPUT_SIZES.get(mode, mode)


def _verified_text(total: int, checks: list, counts: list | None) -> str:
    """'8 samples at 224x224x3, 2 at 160x160x3' (input shapes without the batch axis)."""
    if not checks:
        return f"{total} samples"
    counts = counts if counts and len(counts) == len(checks) else [total] + [None] * (len(checks) - 1)
    parts = []
    for i, (shapes, n) in enumerate(zip(checks, counts)):
        at = ", ".join("x".join(str(d) for d in s) or "scalar" for s in shapes)
        lead = "" if n is None else (f"{n} samples " if i == 0 else f"{n} ")
        parts.append(f"{lead}at {at}")
    return ", ".join(parts)


def format_bytes(n: int) -> str:
    """1023 B, 1.5 KiB, 2.25 MiB."""
    if n < 1024:
        return f"{n} B"
    return f"{n / 1024:.1f} KiB" if n < 1024 ** 2 else f"{n / 1024 ** 2:.2f} MiB"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])
