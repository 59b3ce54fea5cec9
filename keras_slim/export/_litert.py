"""Running a .tflite file in LiteRT by signature names: the runner both TFLite
exporters (post-training and QAT) verify their files with."""
from __future__ import annotations

import numpy as np

from keras_slim.export import _deps
from keras_slim.export._model_io import ModelInterface, iter_batches
from keras_slim.export._tf_graph import ENDPOINT
from keras_slim.export.report import ExportError, TensorInfo


class SignatureRunner:
    """Runs a .tflite file by signature input names, (de)quantizing integer I/O."""

    def __init__(self, path: str, iface: ModelInterface, num_threads: int = 1):
        Interpreter, _ = _deps.litert_interpreter_cls()
        self._iface = iface
        self._interp = Interpreter(model_path=path, num_threads=num_threads)
        keys = list(self._interp.get_signature_list())
        self._runner = self._interp.get_signature_runner(ENDPOINT if ENDPOINT in keys else keys[0])
        self._in = self._runner.get_input_details()
        self._out = self._runner.get_output_details()

    def __call__(self, flat: list[np.ndarray]) -> list[np.ndarray]:
        feed = {name: _quantize(x, self._in[name]) for name, x in zip(self._iface.input_names, flat)}
        result = self._runner(**feed)
        return [_dequantize(result[name], self._out[name]) for name in self._iface.output_names]

    def io_infos(self) -> tuple[list[TensorInfo], list[TensorInfo]]:
        """The file's inputs and outputs as LiteRT reports them (shapes, dtypes, quantization)."""
        return ([_info(n, self._in[n]) for n in self._iface.input_names],
                [_info(n, self._out[n]) for n in self._iface.output_names])


def representative_dataset(calibration: list[np.ndarray], iface: ModelInterface,
                           batch_size: int | None):
    """The converter's `representative_dataset`: full batches by input name."""
    step = batch_size or 1
    if len(calibration[0]) < step:
        raise ExportError(f"representative_data has {len(calibration[0])} sample(s), fewer than "
                          f"batch_size={batch_size}.")

    def generate():
        for batch in iter_batches(calibration, step):
            if len(batch[0]) == step:  # a static batch axis cannot take a short tail
                yield dict(zip(iface.input_names, batch))

    return generate


def _info(name: str, detail: dict) -> TensorInfo:
    scale, zero_point = detail["quantization"]
    quantized = scale != 0.0
    return TensorInfo(name=name, shape=tuple(int(d) for d in detail["shape_signature"]),
                      dtype=np.dtype(detail["dtype"]).name,
                      scale=float(scale) if quantized else None,
                      zero_point=int(zero_point) if quantized else None)


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    scale, zero_point = detail["quantization"]
    if scale == 0.0 or not np.issubdtype(dtype, np.integer) or np.issubdtype(x.dtype, np.integer):
        return np.ascontiguousarray(x, dtype=dtype)
    info = np.iinfo(dtype)
    q = np.round(x.astype(np.float64) / scale + zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


def _dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if scale == 0.0 or not np.issubdtype(y.dtype, np.integer):
        return np.asarray(y)
    return (y.astype(np.float32) - zero_point) * np.float32(scale)


# Ops the XNNPACK delegate of LiteRT 2.x takes in float32 models (its
# xnnpack_delegate.cc). Only for the estimate when the node list cannot be read.
XNNPACK_FLOAT_OPS = frozenset(
    "ABS ADD AVERAGE_POOL_2D BATCH_MATMUL CEIL CONCATENATION CONV_2D DEPTH_TO_SPACE "
    "DEPTHWISE_CONV_2D DEQUANTIZE DIV ELU EXP FLOOR FULLY_CONNECTED GELU HARD_SWISH LEAKY_RELU "
    "LOGISTIC MAX_POOL_2D MAXIMUM MEAN MINIMUM MUL NEG PAD PRELU QUANTIZE RELU RELU6 "
    "RELU_N1_TO_1 RESHAPE RESIZE_BILINEAR ROUND RSQRT SLICE SOFTMAX SPACE_TO_DEPTH SPLIT SQRT "
    "SQUARE SQUARED_DIFFERENCE STRIDED_SLICE SUB TANH TRANSPOSE TRANSPOSE_CONV".split())


def xnnpack_partitions(path: str, histogram: dict[str, int] | None = None) -> dict:
    """How LiteRT's XNNPACK delegate splits a .tflite file (float32 CPU path).

    Applies the delegate the way `benchmark_tflite` does (1 thread) and reads
    the node list: LiteRT keeps the original nodes and appends one DELEGATE
    node per partition, whose outputs are computed from its inputs by the
    original nodes it replaced. An original node no partition covers runs on
    LiteRT's builtin CPU kernels. Returns `{"partitions", "delegated_nodes",
    "cpu_ops" ({op: count}), "source": "interpreter"}`. The node list is read
    with `Interpreter._get_ops_details`, which LiteRT does not document; where
    it is missing, returns `source: "op histogram"` with `partitions: None` and
    `cpu_ops` the ops that the delegate is not known to take (an estimate).
    """
    Interpreter, OpResolverType = _deps.litert_interpreter_cls()
    interp = Interpreter(model_path=path, num_threads=1,
                         experimental_op_resolver_type=OpResolverType.AUTO)
    try:
        interp.allocate_tensors()
        nodes = interp._get_ops_details()
    except (AttributeError, RuntimeError, ValueError):
        if histogram is None:
            from keras_slim.export._flatbuffer import tflite_op_histogram
            with open(path, "rb") as f:
                histogram = tflite_op_histogram(f.read())
        cpu = {op: n for op, n in histogram.items() if op not in XNNPACK_FLOAT_OPS}
        return {"partitions": None, "delegated_nodes": None, "cpu_ops": cpu,
                "source": "op histogram"}
    delegates = [n for n in nodes if n["op_name"] == "DELEGATE"]
    originals = [n for n in nodes if n["op_name"] != "DELEGATE"]
    producer = {int(t): i for i, n in enumerate(originals) for t in n["outputs"]}
    covered: set[int] = set()
    for d in delegates:  # walk back from each partition's outputs to its inputs
        stop = {int(t) for t in d["inputs"]}
        stack = [int(t) for t in d["outputs"]]
        while stack:
            t = stack.pop()
            i = producer.get(t)
            if t in stop or i is None or i in covered:
                continue
            covered.add(i)
            stack.extend(int(u) for u in originals[i]["inputs"] if int(u) >= 0)
    cpu: dict[str, int] = {}
    for i, n in enumerate(originals):
        if i not in covered:
            cpu[n["op_name"]] = cpu.get(n["op_name"], 0) + 1
    return {"partitions": len(delegates), "delegated_nodes": len(covered),
            "cpu_ops": dict(sorted(cpu.items())), "source": "interpreter"}
