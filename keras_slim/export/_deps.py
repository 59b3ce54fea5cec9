"""Lazy imports of the optional export dependencies.

TensorFlow is a hard dependency of keras_slim; LiteRT, tf2onnx, onnx and
onnxruntime are the `export` extra, so they are imported only when an export
function runs and a missing one gives an actionable message.
"""
from __future__ import annotations

import importlib
import warnings
from types import ModuleType

_EXTRA_HINT = "Install the export extras with: pip install 'keras-slim[export]'"


def require(module: str, purpose: str, package: str | None = None) -> ModuleType:
    """Import `module` or raise ImportError naming the pip package and the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{purpose} needs the '{package or module}' package, which could not be "
            f"imported ({err}). {_EXTRA_HINT}"
        ) from err


def tensorflow() -> ModuleType:
    return require("tensorflow", "Exporting a model", "tensorflow")


def litert_interpreter_cls():
    """The LiteRT `Interpreter` class (the runtime that ships on Android)."""
    mod = require("ai_edge_litert.interpreter", "Running a .tflite file", "ai-edge-litert")
    return mod.Interpreter, mod.OpResolverType


def litert_schema() -> ModuleType:
    """The generated flatbuffer schema of the .tflite format."""
    return require("ai_edge_litert.schema_py_generated", "Reading a .tflite file",
                   "ai-edge-litert")


def onnx() -> ModuleType:
    return require("onnx", "ONNX export", "onnx")


def onnxruntime() -> ModuleType:
    return require("onnxruntime", "Running an .onnx file", "onnxruntime")


def tf2onnx() -> ModuleType:
    """tf2onnx, patched for numpy>=2 the way Keras' own ONNX export does it."""
    mod = require("tf2onnx", "ONNX export", "tf2onnx")
    try:  # tf2onnx 1.17 still uses np.object/np.cast in a few rewriters.
        from keras.src.export.tf2onnx_lib import patch_tf2onnx
    except ImportError:  # older/newer Keras without the helper: tf2onnx may still work
        return mod
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        patch_tf2onnx()
    return mod
