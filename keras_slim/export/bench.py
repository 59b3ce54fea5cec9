"""Batch-1 latency of exported files in LiteRT (XNNPACK), onnxruntime, ncnn and MNN.

Only `invoke()` / `run()` is timed: inputs are allocated and filled once, the
warm-up runs are discarded, and the thread count is always set explicitly
(LiteRT's Python Interpreter would otherwise pick its own default). ncnn and
MNN run in a child process (`_runtime_child.py`, as in verification) and time
themselves there, so the timings hold no inter-process traffic: one ncnn run
is an extractor's input + extract of every output, one MNN run a Module
`forward` and the read of its outputs.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Callable, Iterable, Sequence

import numpy as np

from keras_slim.errors import ArgumentError
from keras_slim.export import _deps, _mobile
from keras_slim.export.report import LatencyReport, LatencyTable

logger = logging.getLogger(__name__)


def benchmark_tflite(
    path: str | os.PathLike,
    threads: int = 1,
    runs: int = 50,
    warmup: int = 10,
    use_xnnpack: bool = True,
) -> LatencyReport:
    """Median/p90 latency (ms) of one `invoke()` of a .tflite file at batch 1.

    Dynamic axes are set to 1; static shapes are kept as exported.
    `use_xnnpack=False` runs LiteRT's builtin kernels without default delegates.
    """
    path = _check(path, threads, runs, warmup)
    Interpreter, OpResolverType = _deps.litert_interpreter_cls()
    resolver = (OpResolverType.AUTO if use_xnnpack  # AUTO applies the XNNPACK delegate
                else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp = Interpreter(model_path=path, num_threads=threads,
                         experimental_op_resolver_type=resolver)
    for d in interp.get_input_details():
        if any(s < 0 for s in d["shape_signature"]):
            interp.resize_tensor_input(d["index"], [1 if s < 0 else int(s)
                                                    for s in d["shape_signature"]])
    interp.allocate_tensors()
    rng = np.random.default_rng(0)
    for d in interp.get_input_details():
        interp.set_tensor(d["index"], _random(rng, tuple(d["shape"]), np.dtype(d["dtype"])))
    times = _time(interp.invoke, runs, warmup)
    batch = _batch_of(interp.get_input_details()[0]["shape"])
    return _report(path, "litert", threads, batch, runs, warmup, times, use_xnnpack)


def benchmark_onnx(
    path: str | os.PathLike,
    threads: int = 1,
    runs: int = 50,
    warmup: int = 10,
    optimize: bool = True,
) -> LatencyReport:
    """Median/p90 latency (ms) of one `session.run()` of an .onnx file at batch 1.

    Uses the CPU execution provider with `threads` intra-op threads, one
    inter-op thread, and all graph optimisations unless `optimize=False`.
    """
    path = _check(path, threads, runs, warmup)
    ort = _deps.onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    options.log_severity_level = 3
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {}
    for i in session.get_inputs():
        shape = tuple(d if isinstance(d, int) and d > 0 else 1 for d in i.shape)
        feed[i.name] = _random(rng, shape, _ort_dtype(i.type))
    times = _time(lambda: session.run(None, feed), runs, warmup)
    batch = _batch_of(next(iter(feed.values())).shape)
    return _report(path, "onnxruntime", threads, batch, runs, warmup, times, optimize)


def benchmark_ncnn(
    path: str | os.PathLike,
    threads: int = 1,
    runs: int = 50,
    warmup: int = 10,
    fp16: bool = True,
    input_shapes: Sequence[Sequence[int]] | None = None,
) -> LatencyReport:
    """Median/p90 latency (ms) of one ncnn inference of an `.ncnn.param` file (+ its `.bin`).

    `fp16=True` keeps ncnn's default options (fp16 storage, and fp16
    arithmetic on CPUs that have it: what an app gets unless it turns them
    off); False turns them off (the float32 numbers verification uses).
    Input shapes (c, h, w per input, no batch axis) are read from the .param
    file, which `export_ncnn` writes them into; a model with dynamic sizes
    needs `input_shapes`.
    """
    path = _check(path, threads, runs, warmup)
    weights = path[:-len(".param")] + ".bin" if path.endswith(".param") else path + ".bin"
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"No ncnn weights at {weights!r} beside {path!r}.")
    _mobile.require_runtime("ncnn")
    process = _mobile.RuntimeProcess({"runtime": "ncnn", "param": path, "bin": weights,
                                      "fp16": fp16, "threads": threads}, "ncnn")
    try:
        if process.info["unknown_layers"]:
            raise ArgumentError(f"ncnn cannot load {path!r}: no layer "
                                f"{process.info['unknown_layers']}.")
        shapes = _shapes(input_shapes, process.info["inputs"], _param_input_shapes(path), path,
                         "(c, h, w) per input, no batch axis")
        times = np.asarray(process.request("bench", {"runs": runs, "warmup": warmup,
                                                     "shapes": shapes}))
    finally:
        process.close()
    return _report(path, "ncnn", threads, 1, runs, warmup, times, fp16)


def benchmark_mnn(
    path: str | os.PathLike,
    threads: int = 1,
    runs: int = 50,
    warmup: int = 10,
    precision: str = "normal",
    input_shapes: Sequence[Sequence[int]] | None = None,
) -> LatencyReport:
    """Median/p90 latency (ms) of one MNN Module `forward` of an .mnn file (CPU backend).

    `precision` is MNN's: "normal" (its default), "high" (float32, as
    verification runs) or "low" (fp16 arithmetic on CPUs that have it).
    Input shapes come from the file; dynamic ones need `input_shapes` (full
    shapes with the batch axis, NCHW as exported).
    """
    path = _check(path, threads, runs, warmup)
    if precision not in ("low", "normal", "high"):
        raise ArgumentError(f"precision must be 'low', 'normal' or 'high', got {precision!r}.")
    _mobile.require_runtime("mnn")
    process = _mobile.RuntimeProcess({"runtime": "mnn", "path": path, "precision": precision,
                                      "threads": threads}, "MNN")
    try:
        shapes = _shapes(input_shapes, process.info["inputs"], process.info["shapes"], path,
                         "full NCHW shapes with the batch axis")
        times = np.asarray(process.request("bench", {"runs": runs, "warmup": warmup,
                                                     "shapes": shapes}))
    finally:
        process.close()
    batch = _batch_of(shapes[0]) if shapes else 1
    return _report(path, "mnn", threads, batch, runs, warmup, times, precision != "high")


BENCHMARKED_SUFFIXES = (".tflite", ".onnx", ".param", ".mnn")


def benchmark_file(path: str | os.PathLike, threads: int = 1, runs: int = 50,
                   warmup: int = 10) -> LatencyReport:
    """Benchmark one exported file in the runtime its suffix names.

    .tflite: LiteRT with XNNPACK; .onnx: onnxruntime; .param: ncnn (its .bin
    beside it); .mnn: MNN; each at its defaults, as `compare_latency` says.
    """
    benches: dict[str, Callable[..., LatencyReport]] = {
        ".tflite": benchmark_tflite, ".onnx": benchmark_onnx, ".param": benchmark_ncnn,
        ".mnn": benchmark_mnn}
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix not in benches:
        raise ArgumentError(f"Cannot benchmark {os.fspath(path)!r}: expected a .tflite, .onnx, "
                            ".param (ncnn, with its .bin beside it) or .mnn file.")
    return benches[suffix](path, threads=threads, runs=runs, warmup=warmup)


def compare_latency(
    paths: Sequence[str | os.PathLike],
    threads: Iterable[int] = (1, 2),
    runs: int = 50,
    warmup: int = 10,
) -> LatencyTable:
    """Benchmark .tflite, .onnx, .ncnn.param (ncnn) and .mnn files at each thread count.

    Every runtime at its defaults: LiteRT with XNNPACK, onnxruntime with all
    graph optimisations, ncnn with its fp16 options, MNN at "normal" precision.
    """
    threads = list(threads)
    return LatencyTable([benchmark_file(p, threads=t, runs=runs, warmup=warmup)
                         for p in paths for t in threads])


def _param_input_shapes(path: str) -> list[list[int] | None]:
    """(c, h, w) of each Input layer of an ncnn .param file, None where it gives none."""
    keys = ("2", "11", "1", "0")  # c, d, h, w
    shapes = []
    with open(path) as f:
        for line in f.read().splitlines()[2:]:
            fields = line.split()
            if not fields or fields[0] != "Input":
                continue
            params = dict(p.split("=", 1) for p in fields[5:] if "=" in p)
            dims = [int(params[k]) for k in keys if k in params]
            shapes.append(dims if dims and "0" in params else None)
    return shapes


def _shapes(given, names: list[str], found: list, path: str, form: str) -> list[list[int]]:
    if given is not None:
        shapes = [[int(d) for d in s] for s in given]
        if len(shapes) != len(names):
            raise ArgumentError(f"input_shapes has {len(shapes)} shape(s); {path!r} has "
                                f"{len(names)} input(s) {names}.")
        return shapes
    if len(found) != len(names) or any(s is None or any(d <= 0 for d in s) for s in found):
        raise ArgumentError(f"{path!r} does not give static shapes for its inputs {names} "
                            f"(found {found}); pass input_shapes=[...], {form}.")
    return [list(s) for s in found]


def _check(path, threads: int, runs: int, warmup: int) -> str:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No model file at {path!r}.")
    for name, value, low in (("threads", threads, 1), ("runs", runs, 1), ("warmup", warmup, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ArgumentError(f"{name} must be an int >= {low}, got {value!r}.")
    return path


def _batch_of(shape) -> int:
    return int(shape[0]) if len(shape) else 1


def _time(fn: Callable[[], object], runs: int, warmup: int) -> np.ndarray:
    for _ in range(warmup):
        fn()
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        fn()
        times[i] = (time.perf_counter() - start) * 1e3
    return times


def _report(path, runtime, threads, batch, runs, warmup, times, accelerated) -> LatencyReport:
    report = LatencyReport(path=path, runtime=runtime, threads=threads, batch_size=batch, runs=runs,
                           warmup=warmup, median_ms=float(np.median(times)),
                           p90_ms=float(np.percentile(times, 90)), mean_ms=float(times.mean()),
                           min_ms=float(times.min()), accelerated=bool(accelerated))
    logger.info("%s", report)
    return report


def _random(rng: np.random.Generator, shape: tuple, dtype: np.dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        if dtype.itemsize == 1:  # quantized activations: the whole range
            info = np.iinfo(dtype)
            return rng.integers(info.min, info.max + 1, size=shape).astype(dtype)
        return rng.integers(0, 2, size=shape).astype(dtype)  # ids valid for any embedding
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(bool)
    return rng.uniform(-1, 1, size=shape).astype(dtype)


def _ort_dtype(type_str: str) -> np.dtype:
    """onnxruntime's 'tensor(float)' -> numpy dtype."""
    name = type_str[len("tensor("):-1] if type_str.startswith("tensor(") else type_str
    return np.dtype({"float": "float32", "double": "float64", "float16": "float16",
                     "bool": "bool"}.get(name, name))
