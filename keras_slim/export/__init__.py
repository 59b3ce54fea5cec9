"""Deployment: BN folding, verified TFLite/ONNX/ncnn/MNN/QAT export, calibration, latency.

Importing this package only needs Keras/NumPy; TensorFlow's converter, LiteRT,
tf2onnx, onnxruntime, tf_keras and TFMOT are imported when a function that
needs them runs (install them with `pip install keras-slim[export]`, and
`keras-slim[qat]` for quantization-aware training); ncnn, pnnx and MNN are
never imported into this process: they run as child processes
(`keras-slim[ncnn]` plus `pip install --no-deps pnnx`, `keras-slim[mnn]`).

Layout: `tflite.py`, `onnx.py`, `ncnn.py`, `mnn.py` and `qat/` convert
(`_mobile.py`: what ncnn and MNN share, `_runtime_child.py`: their runtimes
in a child process); `_pipeline.py` is the
write -> verify -> labelled-check tail they share (atomic, `_atomic.py`);
`_model_io.py` reads a model's named inputs/outputs and normalises data;
`calibration.py` loads calibration inputs from files; `fold.py` folds BN;
`bench.py` times files; `report.py` holds the result types.
"""
from keras_slim.export.bench import (
    benchmark_file, benchmark_mnn, benchmark_ncnn, benchmark_onnx, benchmark_tflite,
    compare_latency,
)
from keras_slim.export.calibration import CALIB_SCALES, load_calibration
from keras_slim.export.fold import fold_batchnorm
from keras_slim.export.latency_check import LatencyCheck, check_latency
from keras_slim.export.latency_model import LatencyModel
from keras_slim.export.mnn import export_mnn
from keras_slim.export.ncnn import export_ncnn
from keras_slim.export.onnx import export_onnx
from keras_slim.export.qat import export_qat_tflite, quantize_aware, to_tf_keras
from keras_slim.export.report import (
    ExportError, ExportReport, LatencyReport, LatencyTable, TensorInfo,
)
from keras_slim.export.tflite import export_tflite

__all__ = [
    "export_tflite",
    "export_onnx",
    "export_ncnn",
    "export_mnn",
    "export_qat_tflite",
    "quantize_aware",
    "to_tf_keras",
    "fold_batchnorm",
    "load_calibration",
    "CALIB_SCALES",
    "benchmark_file",
    "benchmark_tflite",
    "benchmark_onnx",
    "benchmark_ncnn",
    "benchmark_mnn",
    "compare_latency",
    "LatencyModel",
    "LatencyCheck",
    "check_latency",
    "ExportReport",
    "LatencyReport",
    "LatencyTable",
    "TensorInfo",
    "ExportError",
]
