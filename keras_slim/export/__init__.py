"""Deployment: BN folding, verified TFLite/ONNX/QAT export, calibration data and latency.

Importing this package only needs Keras/NumPy; TensorFlow's converter, LiteRT,
tf2onnx, onnxruntime, tf_keras and TFMOT are imported when a function that
needs them runs (install them with `pip install keras-slim[export]`, and
`keras-slim[qat]` for quantization-aware training).

Layout: `tflite.py`, `onnx.py` and `qat/` convert; `_pipeline.py` is the
write -> verify -> labelled-check tail they share (atomic, `_atomic.py`);
`_model_io.py` reads a model's named inputs/outputs and normalises data;
`calibration.py` loads calibration inputs from files; `fold.py` folds BN;
`bench.py` times files; `report.py` holds the result types.
"""
from keras_slim.export.bench import benchmark_onnx, benchmark_tflite, compare_latency
from keras_slim.export.calibration import CALIB_SCALES, load_calibration
from keras_slim.export.fold import fold_batchnorm
from keras_slim.export.onnx import export_onnx
from keras_slim.export.qat import export_qat_tflite, quantize_aware, to_tf_keras
from keras_slim.export.report import (
    ExportError, ExportReport, LatencyReport, LatencyTable, TensorInfo,
)
from keras_slim.export.tflite import export_tflite

__all__ = [
    "export_tflite",
    "export_onnx",
    "export_qat_tflite",
    "quantize_aware",
    "to_tf_keras",
    "fold_batchnorm",
    "load_calibration",
    "CALIB_SCALES",
    "benchmark_tflite",
    "benchmark_onnx",
    "compare_latency",
    "ExportReport",
    "LatencyReport",
    "LatencyTable",
    "TensorInfo",
    "ExportError",
]
