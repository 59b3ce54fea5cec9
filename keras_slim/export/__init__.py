"""Deployment: BN folding, verified TFLite/ONNX export and latency benchmarks.

Importing this package only needs Keras/NumPy; TensorFlow's converter, LiteRT,
tf2onnx and onnxruntime are imported when a function that needs them runs
(install them with `pip install keras-slim[export]`).
"""
from keras_slim.export.bench import benchmark_onnx, benchmark_tflite, compare_latency
from keras_slim.export.fold import fold_batchnorm
from keras_slim.export.onnx import export_onnx
from keras_slim.export.report import (
    ExportError, ExportReport, LatencyReport, LatencyTable, TensorInfo,
)
from keras_slim.export.tflite import export_tflite

__all__ = [
    "export_tflite",
    "export_onnx",
    "fold_batchnorm",
    "benchmark_tflite",
    "benchmark_onnx",
    "compare_latency",
    "ExportReport",
    "LatencyReport",
    "LatencyTable",
    "TensorInfo",
    "ExportError",
]
