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
