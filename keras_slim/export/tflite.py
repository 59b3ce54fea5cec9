"""Export a Keras 3 model to a verified .tflite file (LiteRT builtin ops only).

Route: Keras ExportArchive -> SavedModel -> `TFLiteConverter.from_saved_model`.
`from_keras_model` swallows conversion failures on Keras 3 and
`from_concrete_functions` produced NaNs, so neither is used.
"""
from __future__ import annotations

import logging
import os
import re
import tempfile
import warnings
from typing import Any

from keras_slim.errors import ArgumentError
from keras_slim.export import _deps
from keras_slim.export._atomic import check_output_path
from keras_slim.export._flatbuffer import tflite_op_histogram, non_builtin_ops
from keras_slim.export._litert import SignatureRunner, representative_dataset, xnnpack_partitions
from keras_slim.export._model_io import (
    ModelInterface, calibration_and_samples, describe_model, fix_input_shapes, reference_shapes,
)
from keras_slim.export._pipeline import Tolerance, write_verified
from keras_slim.export._tf_graph import ENDPOINT, serving_function, write_saved_model
from keras_slim.export.fold import maybe_fold
from keras_slim.export.absorb import check_for_threads, selections_for_export
from keras_slim.export.report import ExportError, ExportReport

logger = logging.getLogger(__name__)

QUANTIZE_MODES = (None, "float16", "dynamic", "int8")
FLOAT32_TOLERANCE = 1e-4  # max |diff| / max(1, max|ref|) allowed for an unquantized file
_INT8_IO = {False: None, True: "int8", "int8": "int8", "uint8": "uint8"}


def export_tflite(
    model: Any,
    path: str | os.PathLike,
    quantize: str | None = None,
    representative_data: Any = None,
    int8_io: bool | str = False,
    verify: bool = True,
    sample_inputs: Any = None,
    labelled_data: Any = None,
    *,
    fold_bn: bool = True,
    order_channels: bool = True,
    for_threads: int = 1,
    batch_size: int | None = 1,
    tolerance: float | None = None,
    num_calibration_samples: int = 100,
    num_verify_samples: int = 8,
    label_output: str | None = None,
    allow_float_fallback: bool = False,
    input_shape: Any = None,
) -> ExportReport:
    """Convert `model` to a .tflite file that the stock LiteRT runtime can run.

    Args:
        model: a Functional or Sequential Keras 3 model.
        path: the .tflite file to write. Written atomically: on any failure
            (conversion or verification) nothing is left at `path` or beside it.
        quantize: None (float32), "float16" (fp16 weights, ~half size),
            "dynamic" (int8 weights, float activations; TF leaves weight tensors
            under 1024 elements in float) or "int8" (full integer, needs
            `representative_data`).
        representative_data: calibration inputs: a tf.data.Dataset (elements x or
            (x, y), batched or not), a numpy array, a list/tuple of arrays
            (multi-input, model.inputs order), a dict {input_name: array}, a
            generator, or a callable returning one. The first
            `num_calibration_samples` samples are used.
        int8_io: with quantize="int8", True or "int8" makes the file's inputs and
            outputs int8, "uint8" makes them uint8 (NNAPI, Edge TPU, MCUs); False
            keeps float32 I/O with (de)quantize ops at the ends.
        verify: run the written file in LiteRT and compare with Keras. float32 must
            match within `tolerance` (default 1e-4 relative) or ExportError is
            raised; quantized files have their error reported (and enforced only
            when `tolerance` is given).
        sample_inputs: inputs for verification (same forms as
            representative_data's arrays); default: the first
            `num_verify_samples` representative samples, else random in [-1, 1).
        labelled_data: (x, y) to report top-1 agreement between Keras and TFLite
            and both accuracies on output `label_output` (default: the first).
        fold_bn: fold BatchNormalization into the preceding conv/dense first.
        order_channels: reorder the channels of the tensors ChannelSelection
            layers read so that each selection is a few slices + one
            concatenation (XNNPACK runs them) instead of a GATHER (it does
            not), and absorb a selection into the BN and convs after it
            where a cost model says its copy costs more than the dropped
            channels would (`keras_slim.export.absorb`). The file computes
            the same function (up to float rounding; verified like any
            other); `report.details["channel_order"]` says what changed.
        for_threads: the LiteRT thread count the file is laid out for: which
            selections are absorbed rather than sliced (at 2 threads and more
            each slice costs a hand-off, so more are absorbed; see
            `keras_slim.export.absorb`). The file runs at any thread count;
            only its speed differs, and only with ChannelSelection layers.
        batch_size: static batch size of the file (mobile runtimes want static
            shapes); None keeps it dynamic.
        input_shape: for a model with None axes (e.g. keras.Input((None, None,
            3))), the size to fix them at in the file, without the batch axis:
            (224, 224, 3), or a list with one shape per input. Known axes must
            agree (ValueError). Default None keeps them dynamic (shape signature
            -1): the app resizes the input before allocating tensors. A dynamic
            file is verified at two sizes: the samples' (default 224 per spatial
            axis, or the representative data's) and 160 (224 if that was 160).
            `report.input_size` says which ("static", "dynamic" or "fixed").
        allow_float_fallback: with "int8", let ops lacking an int8 kernel stay
            float instead of failing (the file is then not fully integer).

    Returns:
        ExportReport with size, op histogram, XNNPACK partitioning, I/O specs
        and measured errors.

    Raises:
        TypeError / ValueError: bad arguments (the message says what is allowed).
        ExportError: conversion needs non-builtin (Flex) ops, or verification failed.
    """
    check_for_threads(for_threads)  # before any work: a bad value fails fast
    io_type = _check_args(quantize, representative_data, int8_io, batch_size, tolerance,
                          num_calibration_samples, num_verify_samples)
    target = check_output_path(path, ".tflite")
    model_iface = describe_model(model)
    iface = fix_input_shapes(model_iface, input_shape)  # the file's inputs
    input_size = ("static" if not model_iface.dynamic
                  else "dynamic" if iface.dynamic else "fixed")

    calibration, samples = calibration_and_samples(iface, representative_data, sample_inputs,
                                                   num_calibration_samples, num_verify_samples)

    export_model, n_folded = maybe_fold(model, fold_bn)
    export_model, channel_order = selections_for_export(export_model, order_channels,
                                                        for_threads)
    serve, specs = serving_function(export_model, iface, batch_size)
    with tempfile.TemporaryDirectory(prefix="keras_slim_tflite_") as saved_model_dir:
        write_saved_model(export_model, serve, specs, saved_model_dir)
        try:
            buf = _convert(saved_model_dir, quantize, calibration, io_type,
                           allow_float_fallback, iface, batch_size)
        except ExportError as err:
            if not iface.dynamic:
                raise
            raise ExportError(f"{err}\n{_dynamic_hint(iface)}") from err.__cause__

    histogram = tflite_op_histogram(buf)
    extra_ops = non_builtin_ops(histogram)
    if extra_ops:  # only reachable if the converter let a custom op through
        raise ExportError(_flex_message(extra_ops, "The converted file contains"))

    report = ExportReport(path=os.fspath(path), format="tflite", quantize=quantize,
                          size_bytes=len(buf), op_histogram=histogram, inputs=[], outputs=[],
                          folded_batchnorms=n_folded, input_size=input_size,
                          details={"batch_size": batch_size, "io_type": io_type or "float32"})
    if channel_order:
        report.details["channel_order"] = channel_order
    limit = tolerance if tolerance is not None else (FLOAT32_TOLERANCE if quantize is None else None)
    check = Tolerance(limit, "the .tflite output differs from Keras", f" ({quantize or 'float32'})",
                      ". Pass a larger `tolerance` if this error is acceptable for your use, or "
                      "verify=False to write the file unchecked.")
    write_verified(buf, target, report, lambda tmp: SignatureRunner(tmp, iface), iface,
                   batch_size=batch_size, samples=samples, tolerance=check if verify else None,
                   labelled_data=labelled_data, label_output=label_output)
    report.xnnpack = _partitioning(os.fspath(target), histogram)
    logger.info("Exported %s (%d bytes, %s).", target, len(buf), quantize or "float32")
    return report


def _partitioning(path: str, histogram: dict[str, int]) -> dict | None:
    """`xnnpack_partitions` of the written file; None (logged) if LiteRT cannot load it."""
    try:
        return xnnpack_partitions(path, histogram)
    except Exception as err:  # the file is verified already: never fail the export here
        logger.warning("Could not read the XNNPACK partitioning of %s: %s", path, err)
        return None


def _check_args(quantize, representative_data, int8_io, batch_size, tolerance,
                num_calibration_samples, num_verify_samples) -> str | None:
    if quantize not in QUANTIZE_MODES:
        raise ArgumentError(f"quantize={quantize!r} is not supported; use one of "
                         f"{list(QUANTIZE_MODES)} (None = float32).")
    if not (isinstance(int8_io, bool) or int8_io in ("int8", "uint8")):
        raise ArgumentError(f"int8_io={int8_io!r} is not supported; use False, True/'int8' or "
                         "'uint8'.")
    io_type = _INT8_IO[int8_io]
    if io_type and quantize != "int8":
        raise ArgumentError(f"int8_io={int8_io!r} needs quantize='int8' (got quantize={quantize!r}); "
                         "integer inputs/outputs only exist in a fully quantized model.")
    if quantize == "int8" and representative_data is None:
        raise ArgumentError(
            "quantize='int8' needs representative_data to calibrate activation ranges: pass "
            "~100 typical inputs, e.g. representative_data=x_train[:100] (a numpy array), a "
            "list of arrays for multi-input models, a tf.data.Dataset of x or (x, y), or a "
            "generator. Use quantize='dynamic' for weight-only int8 without data.")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ArgumentError(f"batch_size must be a positive int or None (dynamic), got "
                         f"{batch_size!r}.")
    if tolerance is not None and not tolerance > 0:
        raise ArgumentError(f"tolerance must be > 0 or None, got {tolerance!r}.")
    for name, value in (("num_calibration_samples", num_calibration_samples),
                        ("num_verify_samples", num_verify_samples)):
        if not isinstance(value, int) or value < 1:
            raise ArgumentError(f"{name} must be a positive int, got {value!r}.")
    return io_type


def _convert(saved_model_dir: str, quantize: str | None, calibration: list | None,
             io_type: str | None, allow_float_fallback: bool, iface: ModelInterface,
             batch_size: int | None) -> bytes:
    tf = _deps.tensorflow()
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir,
                                                         signature_keys=[ENDPOINT])
    ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize in ("float16", "dynamic", "int8"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if allow_float_fallback:
            ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
        converter.representative_dataset = representative_dataset(calibration, iface, batch_size)
        if io_type:
            converter.inference_input_type = getattr(tf, io_type)
            converter.inference_output_type = getattr(tf, io_type)
    converter.target_spec.supported_ops = ops
    try:
        with warnings.catch_warnings():  # calibration uses the deprecated tf.lite.Interpreter
            warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")
            return converter.convert()
    except Exception as err:  # ConverterError and friends: explain, keep the cause
        raise ExportError(_explain_conversion_error(err, quantize)) from err


def _explain_conversion_error(err: Exception, quantize: str | None) -> str:
    flex, where = [], []
    for data in getattr(err, "errors", None) or []:
        needs_flex = getattr(data, "ERROR_NEEDS_FLEX_OPS", object())
        if getattr(data, "error_code", None) == needs_flex and data.operator.name:
            flex.append(data.operator.name)
            calls = [c.name for c in data.location.call] if data.location.call else []
            if calls:
                where.append(calls[0].split("@")[0])
    flex += re.findall(r"'(tf\.\w+)' op is neither a custom op nor a flex op", str(err))
    if flex:
        msg = _flex_message(sorted(set(flex)), "Conversion needs")
        if where:
            msg += f" They come from: {', '.join(sorted(set(where)))}."
        return msg
    lines = [ln.strip() for ln in str(err).splitlines() if "error" in ln.lower()]
    summary = "\n".join(lines[:8]) or str(err)[:2000]
    hint = ""
    if quantize == "int8":
        hint = (" With quantize='int8' every op needs an int8 kernel; pass "
                "allow_float_fallback=True to keep such ops in float.")
    return f"TFLite conversion failed ({type(err).__name__}):\n{summary}{hint}"


def _dynamic_hint(iface: ModelInterface) -> str:
    """Why a dynamic-size conversion may fail, and the fixed-size export that avoids it."""
    shapes = reference_shapes(iface)
    example = shapes[0] if len(shapes) == 1 else shapes
    return (f"The model's inputs have dynamic axes ({', '.join(map(str, iface.input_shapes))}). "
            "Some layers lose their static shapes there (e.g. UpSampling2D, whose tf.repeat "
            "leaves the next conv an unknown channel count), and LiteRT's builtin kernels "
            f"need them. Export at a fixed size instead: export_tflite(..., "
            f"input_shape={example}).")


def _flex_message(ops: list[str], lead: str) -> str:
    return (f"{lead} TensorFlow ops that are not LiteRT builtins: {', '.join(ops)}. They would "
            "need the Flex delegate (SELECT_TF_OPS), which the stock Android/iOS LiteRT runtime, "
            "NNAPI, GPU delegates, Edge TPU and microcontrollers do not have. Replace the layers "
            "that emit them with builtin-friendly ops (keras.ops arithmetic, convolutions, "
            "reshape/transpose, gather).")
