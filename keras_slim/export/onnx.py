"""Export a Keras 3 model to a verified .onnx file through tf2onnx.

Route: a `tf.function` with a named input signature -> `tf2onnx.convert.from_function`
(the route Keras' own ONNX export takes; `from_keras` does not understand Keras 3).
BatchNormalization is folded first because tf2onnx leaves a Mul/Add pair after
depthwise convolutions.
"""
from __future__ import annotations

import collections
import logging
import os
from typing import Any

import numpy as np

from keras_slim.errors import ArgumentError
from keras_slim.export import _deps
from keras_slim.export._atomic import check_output_path
from keras_slim.export._model_io import (
    ModelInterface, as_flat_inputs, describe_model, random_inputs,
)
from keras_slim.export._pipeline import Tolerance, write_verified
from keras_slim.export._tf_graph import serving_function
from keras_slim.export.absorb import check_for_threads, selections_for_export
from keras_slim.export.fold import maybe_fold
from keras_slim.export.report import ExportError, ExportReport, TensorInfo

logger = logging.getLogger(__name__)

MIN_OPSET = 13  # first opset with the Squeeze/Unsqueeze/ReduceSum forms tf2onnx emits today
FLOAT32_TOLERANCE = 1e-4


def export_onnx(
    model: Any,
    path: str | os.PathLike,
    opset: int = 17,
    nchw_input: bool = False,
    verify: bool = True,
    sample_inputs: Any = None,
    labelled_data: Any = None,
    *,
    fold_bn: bool = True,
    order_channels: bool = True,
    for_threads: int = 1,
    batch_size: int | None = 1,
    tolerance: float = FLOAT32_TOLERANCE,
    num_verify_samples: int = 8,
    label_output: str | None = None,
) -> ExportReport:
    """Convert `model` to an ONNX file, checked with onnxruntime.

    Args:
        model: a Functional or Sequential Keras 3 model.
        path: the .onnx file to write, atomically: on any failure nothing is left
            at `path` or beside it.
        opset: ONNX opset, from 13 to the newest tf2onnx supports (18 for
            tf2onnx 1.17).
        nchw_input: make every input of rank >= 3 channels-first (NCHW), with a
            Transpose at the front of the graph, for runtimes that want NCHW
            (ncnn, MNN, TensorRT). Outputs keep Keras' layout.
        verify: run the file in onnxruntime on `sample_inputs` (default:
            `num_verify_samples` random in [-1, 1)) and require
            max |diff| / max(1, max|ref|) < `tolerance`.
        sample_inputs: a numpy array, list/tuple of arrays (model.inputs order)
            or dict {input_name: array}, in Keras' channels-last layout even
            when `nchw_input` is set.
        labelled_data: (x, y) to report top-1 agreement and both accuracies on
            output `label_output` (default: the first).
        fold_bn: fold BatchNormalization into the preceding conv/dense first.
        order_channels: as in `export_tflite`: reorder the channels ChannelSelection
            layers read so each selection is a few slices + one concatenation
            instead of a Gather, and absorb selections into the layers after
            them where that is cheaper. ncnn and MNN files, built from this
            ONNX file, inherit it. `report.details["channel_order"]` says what
            changed.
        for_threads: as in `export_tflite`: the thread count the selections
            are laid out for (the cost model is LiteRT's; ncnn and MNN use 1).
        batch_size: static batch size; None keeps a dynamic batch axis.

    The model's None axes (e.g. keras.Input((None, None, 3))) stay dynamic in
    the file. Such a file is verified at two sizes: `sample_inputs`' (default
    224 per spatial axis) and 160 (224 if that was 160), to prove the axes
    resize; `report.input_size` is then "dynamic".

    Returns:
        ExportReport (format "onnx") with size, op histogram, I/O specs, errors.

    Raises:
        TypeError / ValueError: bad arguments. ExportError: conversion or
        verification failed (no file written).
    """
    _deps.keras_backend("ONNX export (tf2onnx traces the model as a TensorFlow function)",
                        ("tensorflow",))
    tf2onnx = _deps.tf2onnx()
    onnx = _deps.onnx()
    max_opset = max(tf2onnx.constants.OPSET_TO_IR_VERSION)
    if not isinstance(opset, int) or isinstance(opset, bool) or not MIN_OPSET <= opset <= max_opset:
        raise ArgumentError(f"opset={opset!r} is not supported; use an int from {MIN_OPSET} to "
                         f"{max_opset} (the newest this tf2onnx {tf2onnx.__version__} knows).")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ArgumentError(f"batch_size must be a positive int or None, got {batch_size!r}.")
    if not tolerance > 0:
        raise ArgumentError(f"tolerance must be > 0, got {tolerance!r}.")
    if not isinstance(num_verify_samples, int) or num_verify_samples < 1:
        raise ArgumentError(f"num_verify_samples must be a positive int, got "
                            f"{num_verify_samples!r}.")
    check_for_threads(for_threads)  # before any work: a bad value fails fast
    target = check_output_path(path, ".onnx")
    iface = describe_model(model)
    samples = (as_flat_inputs(sample_inputs, iface, "sample_inputs") if sample_inputs is not None
               else random_inputs(iface, num_verify_samples))

    export_model, n_folded = maybe_fold(model, fold_bn)
    export_model, channel_order = selections_for_export(export_model, order_channels,
                                                        for_threads)
    proto = _convert(export_model, iface, batch_size, nchw_input, opset)
    buf = proto.SerializeToString()
    histogram = dict(sorted(collections.Counter(
        (n.domain + "." if n.domain else "") + n.op_type for n in proto.graph.node).items()))

    report = ExportReport(path=os.fspath(path), format="onnx", quantize=None,
                          size_bytes=len(buf), op_histogram=histogram,
                          inputs=_infos(proto.graph.input, proto, onnx),
                          outputs=_infos(proto.graph.output, proto, onnx),
                          folded_batchnorms=n_folded,
                          input_size="dynamic" if iface.dynamic else "static",
                          details={"opset": opset, "nchw_input": nchw_input,
                                   "batch_size": batch_size})
    if channel_order:
        report.details["channel_order"] = channel_order
    check = Tolerance(tolerance, "the .onnx output differs from Keras",
                      tail="; pass verify=False to write it anyway.")
    # the runner is opened even without verification: it proves onnxruntime loads the file
    write_verified(buf, target, report, lambda tmp: _OrtRunner(tmp, iface, nchw_input), iface,
                   batch_size=batch_size, samples=samples, tolerance=check if verify else None,
                   labelled_data=labelled_data, label_output=label_output)
    logger.info("Exported %s (%d bytes, opset %d).", target, len(buf), opset)
    return report


def _convert(model: Any, iface: ModelInterface, batch_size: int | None, nchw_input: bool,
             opset: int):
    tf = _deps.tensorflow()
    tf2onnx = _deps.tf2onnx()
    onnx = _deps.onnx()
    serve, specs = serving_function(model, iface, batch_size, nchw_input=nchw_input)
    fn = tf.function(serve, input_signature=specs, autograph=False)
    quiet = logging.getLogger("tf2onnx")
    level = quiet.level
    quiet.setLevel(max(level, logging.WARNING))  # tf2onnx logs every rewrite at INFO
    try:
        proto, _ = tf2onnx.convert.from_function(fn, input_signature=specs, opset=opset)
        onnx.checker.check_model(proto)
    except Exception as err:
        raise ExportError(f"ONNX conversion failed ({type(err).__name__}): {str(err)[:2000]}. "
                          "Try another opset, or check the model for ops tf2onnx cannot map."
                          ) from err
    finally:
        quiet.setLevel(level)
    names = [o.name for o in proto.graph.output]
    if sorted(names) != sorted(iface.output_names):
        raise ExportError(f"tf2onnx named the outputs {names}, expected {iface.output_names}.")
    if names != iface.output_names:  # the serving dict came back sorted by name
        by_name = {}
        for o in proto.graph.output:
            by_name[o.name] = type(o)()
            by_name[o.name].CopyFrom(o)
        del proto.graph.output[:]
        proto.graph.output.extend(by_name[n] for n in iface.output_names)
    return proto


def _infos(values, proto, onnx) -> list[TensorInfo]:
    initializers = {i.name for i in proto.graph.initializer}
    infos = []
    for v in values:
        if v.name in initializers:
            continue
        t = v.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)).name
        infos.append(TensorInfo(name=v.name, shape=shape, dtype=dtype))
    return infos


class _OrtRunner:
    """Feeds NHWC samples by input name (transposed when the file takes NCHW)."""

    def __init__(self, path: str, iface: ModelInterface, nchw_input: bool):
        ort = _deps.onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.log_severity_level = 3
        self._session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self._iface = iface
        self._nchw = nchw_input

    def __call__(self, flat: list[np.ndarray]) -> list[np.ndarray]:
        feed = {}
        for name, x in zip(self._iface.input_names, flat):
            if self._nchw and x.ndim >= 3:
                x = np.transpose(x, (0, x.ndim - 1) + tuple(range(1, x.ndim - 1)))
            feed[name] = np.ascontiguousarray(x)
        return self._session.run(self._iface.output_names, feed)

    def io_infos(self) -> None:
        """None: the exporter read the I/O specs off the ONNX graph itself."""
        return None
