"""Lazy imports of the optional export dependencies.

TensorFlow, LiteRT, tf2onnx, onnx and onnxruntime are the `export` extra
(TensorFlow is no requirement of the core, which runs on any Keras 3 backend),
so they are imported only when an export function runs, and a missing one
gives an actionable message (MissingDependencyError).
"""
from __future__ import annotations

import importlib
from types import ModuleType

from keras_slim.errors import MissingDependencyError

_EXTRA_HINT = "Install the export extras with: pip install 'keras-slim[export]'"


def require(module: str, purpose: str, package: str | None = None) -> ModuleType:
    """Import `module` or raise MissingDependencyError (an ImportError) naming the
    pip package and the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingDependencyError(
            f"{purpose} needs the '{package or module}' package, which could not be "
            f"imported ({err}). {_EXTRA_HINT}"
        ) from err


def tensorflow() -> ModuleType:
    return require("tensorflow", "Exporting a model", "tensorflow")


def keras_backend(purpose: str, supported: tuple[str, ...]) -> None:
    """Raise MissingDependencyError unless Keras runs on one of the `supported` backends.

    The converters read a TensorFlow graph: Keras builds one from the TensorFlow
    backend, and from JAX through jax2tf (what ExportArchive does there); torch
    models and tf2onnx on JAX have no such route.
    """
    import keras

    backend = keras.backend.backend()
    if backend in supported:
        return
    raise MissingDependencyError(
        f"{purpose} needs Keras on the {' or '.join(supported)} backend; this process runs "
        f"the {backend!r} backend (KERAS_BACKEND; Keras picks it once, at import). Save the "
        f"model (model.save('model.keras')) and export it from a process started with "
        f"KERAS_BACKEND=tensorflow, e.g. `KERAS_BACKEND=tensorflow keras-slim export "
        f"model.keras ...` ({_EXTRA_HINT}).")


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
    from keras_slim import _keras

    _keras.patch_tf2onnx()
    return mod
