"""keras_slim: Network Slimming for Keras.

Sparsity-train with an L1 penalty on BatchNormalization scaling factors,
then remove the channels whose factors went to zero and get back a
physically smaller model (Liu et al., "Learning Efficient Convolutional
Networks through Network Slimming", ICCV 2017).
"""
import os as _os
import sys as _sys

if _sys.argv and _os.path.basename(_sys.argv[0]).startswith("keras-slim"):
    # The keras-slim command: hide TF's C++ start-up logs before keras loads TF
    # (unless -v/--debug). `import keras_slim` from user code changes nothing.
    from keras_slim._quiet import _silence_tf_logs

    _silence_tf_logs(_sys.argv[1:])

from keras_slim import criteria, testing  # noqa: E402
from keras_slim.training import plots
from keras_slim.training.callbacks import SparsityMonitor
from keras_slim.handlers.context import ChannelInfo
from keras_slim.export import (
    ExportError,
    ExportReport,
    LatencyReport,
    LatencyTable,
    benchmark_onnx,
    benchmark_tflite,
    compare_latency,
    export_onnx,
    export_tflite,
    fold_batchnorm,
)
from keras_slim.handlers.base import Handler, slice_weights
from keras_slim.handlers.registry import register_handler, unregister_handler
from keras_slim.training.cifar import cifar_augment, load_cifar10, make_dataset
from keras_slim.layers import ChannelSelection
from keras_slim.training.multipass import MultiPassResult, PassRecord, slim_multipass
from keras_slim.planning import LayerPlan, Plan
from keras_slim.pruning import plan, prune
from keras_slim.regularizers import BNL1, bn_l1
from keras_slim.sparsity import add_bn_l1
from keras_slim.version import __version__

__all__ = [
    "BNL1", "ChannelInfo", "ChannelSelection", "ExportError", "ExportReport", "Handler",
    "LatencyReport", "LatencyTable", "LayerPlan", "Plan", "benchmark_onnx", "benchmark_tflite",
    "compare_latency", "export_onnx", "export_tflite", "fold_batchnorm",
    "MultiPassResult", "PassRecord", "SparsityMonitor", "cifar_augment", "criteria",
    "load_cifar10", "make_dataset", "plots", "slim_multipass", "testing",
    "__version__", "add_bn_l1", "bn_l1", "plan", "prune", "register_handler", "slice_weights", "unregister_handler",
]
