"""`export_qat_tflite`: a fine-tuned QAT model -> verified int8 .tflite file."""
from __future__ import annotations

import logging
import os
import tempfile
import warnings
from typing import Any

from keras_slim import _keras
from keras_slim.errors import ArgumentError, ArgumentTypeError
from keras_slim.export import _deps
from keras_slim.export._atomic import check_output_path
from keras_slim.export._flatbuffer import non_builtin_ops, tflite_op_histogram
from keras_slim.export._litert import SignatureRunner, representative_dataset
from keras_slim.export._model_io import ModelInterface, calibration_and_samples, unique_names
from keras_slim.export._pipeline import Tolerance, write_verified
from keras_slim.export._tf_graph import ENDPOINT
from keras_slim.export.qat._imports import tfmot_keras_module
from keras_slim.export.report import ExportError, ExportReport

logger = logging.getLogger(__name__)


def export_qat_tflite(
    qat_model: Any,
    path: str | os.PathLike,
    *,
    int8_io: bool | str = False,
    representative_data: Any = None,
    allow_float_fallback: bool = False,
    verify: bool = True,
    sample_inputs: Any = None,
    labelled_data: Any = None,
    batch_size: int | None = 1,
    tolerance: float | None = None,
    num_calibration_samples: int = 100,
    num_verify_samples: int = 8,
    label_output: str | None = None,
) -> ExportReport:
    """Convert a fine-tuned QAT model (from `quantize_aware`) to an int8 .tflite file.

    The TFLite converter (`Optimize.DEFAULT`) turns the fake-quant ranges
    learned during QAT into int8 weights and activations. Tensors QAT has no
    range for (inside a BatchNormalization that follows no conv, as in
    pre-activation ResNets) are calibrated on `representative_data`; without
    it such a model fails with an ExportError that says so. The result must be
    fully int8 unless `allow_float_fallback`; the file is written atomically, run in LiteRT
    through its signature runner and compared with the QAT model (which
    simulates the same quantization), like `keras_slim.export_tflite`.

    Args:
        qat_model: the tf_keras model returned by `quantize_aware` (trained).
        path: the .tflite file; nothing is left there on failure.
        int8_io: True/"int8" or "uint8" makes the file's inputs/outputs
            integer; False keeps float32 I/O with (de)quantize at the ends.
        representative_data: optional calibration inputs (same forms as
            `export_tflite`), only for layers QAT left without ranges.
        allow_float_fallback: let ops without int8 ranges/kernels stay float.
        verify: compare the file's outputs with the QAT model's; the error is
            reported and, if `tolerance` is given, enforced (relative to
            max(1, max |output|)). Without `tolerance`, an error above
            `SUSPECT_ERROR` (0.25) is logged as a warning.
        sample_inputs: verification inputs (default: representative samples,
            else random in [-1, 1)).
        labelled_data: (x, y) for top-1 agreement and both accuracies.
        batch_size: static batch size of the file (None: dynamic).

    Returns:
        ExportReport (format "tflite", quantize "int8", details["source"] = "qat").

    Raises:
        TypeError: `qat_model` is not a tf_keras model.
        ExportError: conversion failed or the verification tolerance was exceeded.
    """
    tf = _deps.tensorflow()
    qkeras = tfmot_keras_module()
    if not isinstance(qat_model, qkeras.Model) or not _keras.is_graph_model(qat_model):
        raise ArgumentTypeError(f"export_qat_tflite expects the tf_keras model returned by "
                        f"quantize_aware, got {type(qat_model).__module__}."
                        f"{type(qat_model).__name__}. For a Keras 3 model use "
                        "keras_slim.export_tflite(model, path, quantize='int8', ...).")
    if int8_io not in (False, True, "int8", "uint8"):
        raise ArgumentError(f"int8_io={int8_io!r}: use False, True/'int8' or 'uint8'.")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ArgumentError(f"batch_size must be a positive int or None, got {batch_size!r}.")
    if tolerance is not None and not tolerance > 0:
        raise ArgumentError(f"tolerance must be > 0 or None, got {tolerance!r}.")
    fake_quant = sum(type(layer).__name__ in ("QuantizeWrapperV2", "QuantizeWrapper",
                                              "QuantizeLayer") for layer in qat_model.layers)
    if not fake_quant:
        logger.warning("export_qat_tflite: %r has no TFMOT quantize layers; was it made by "
                       "quantize_aware? Activations will be calibrated only if "
                       "representative_data is given.", qat_model.name)
    target = check_output_path(path, ".tflite")
    iface = _tf_keras_interface(qat_model)
    calibration, samples = calibration_and_samples(iface, representative_data, sample_inputs,
                                                   num_calibration_samples, num_verify_samples)

    io_type = {False: None, True: "int8", "int8": "int8", "uint8": "uint8"}[int8_io]
    buf = _convert_qat(tf, qat_model, iface, batch_size, io_type, calibration,
                       allow_float_fallback)
    histogram = tflite_op_histogram(buf)
    extra = non_builtin_ops(histogram)
    if extra:
        raise ExportError(f"The converted file needs non-builtin ops {extra}; the stock LiteRT "
                          "runtime cannot run it.")
    float_ops = _float_compute_ops(buf)
    if float_ops and not allow_float_fallback:
        fix = ("pass representative_data (a few hundred training inputs) so the converter "
               "can calibrate the tensors QAT has no range for (e.g. the MUL/ADD a "
               "BatchNormalization without a preceding conv becomes)" if calibration is None
               else "give those layers a QuantizeConfig in quantize_aware(quantize_configs=...)")
        raise ExportError(f"The QAT model did not convert to full int8: {float_ops} stay "
                          f"float. To fix, {fix}; or pass allow_float_fallback=True to accept "
                          "float ops. Nothing was written.")
    report = ExportReport(path=os.fspath(path), format="tflite", quantize="int8",
                          size_bytes=len(buf), op_histogram=histogram, inputs=[], outputs=[],
                          details={"source": "qat", "batch_size": batch_size,
                                   "io_type": io_type or "float32", "float_ops": float_ops,
                                   "calibrated": calibration is not None})
    check = Tolerance(tolerance, "the int8 file differs from the QAT model")
    write_verified(buf, target, report, lambda tmp: SignatureRunner(tmp, iface), iface,
                   batch_size=batch_size, samples=samples, tolerance=check if verify else None,
                   labelled_data=labelled_data, label_output=label_output)
    logger.info("Exported QAT int8 %s (%d bytes, max rel error %s).", target, len(buf),
                report.max_rel_error)
    if verify and tolerance is None and report.max_rel_error > SUSPECT_ERROR:
        logger.warning(
            "keras_slim: the QAT int8 file %s differs from its QAT model by %.3g relative, "
            "more than quantization explains (the file runs the same fake-quant ranges; "
            "QAT files here match their model to ~0.02-0.03): check the converter's messages "
            "(e.g. 'scale out of expressed type range'), and pass tolerance= to refuse such "
            "a file.", target, report.max_rel_error)
    return report


SUSPECT_ERROR = 0.25  # relative error vs the QAT model above which the file is suspect


def _tf_keras_interface(model) -> ModelInterface:
    """The ModelInterface the export helpers use, read off a tf_keras model."""
    inputs = list(model.inputs)
    input_names = unique_names([t.name.split(":")[0] for t in inputs], "input")
    output_names = unique_names(list(model.output_names), "output")
    aliases = {}
    for i, (n, t) in enumerate(zip(input_names, inputs)):
        for alias in (n, t.name, t.name.split(":")[0]):
            aliases.setdefault(alias, i)
    return ModelInterface(model=model, input_names=input_names,
                          input_shapes=[tuple(t.shape) for t in inputs],
                          input_dtypes=[t.dtype.name for t in inputs],
                          output_names=output_names, aliases=aliases)


def _convert_qat(tf, model, iface: ModelInterface, batch_size, io_type, calibration,
                 allow_float_fallback: bool) -> bytes:
    specs = [tf.TensorSpec((batch_size,) + tuple(shape[1:]), dtype, name=name)
             for name, shape, dtype in zip(iface.input_names, iface.input_shapes,
                                           iface.input_dtypes)]

    @tf.function(input_signature=specs, autograph=False)
    def serve(*args):
        x = args[0] if len(args) == 1 else list(args)
        return dict(zip(iface.output_names, tf.nest.flatten(model(x, training=False))))

    with tempfile.TemporaryDirectory(prefix="keras_slim_qat_") as saved:
        # Track the variables only: saving the tf_keras model itself would also
        # trace and serialize every layer's call (slow, and not needed here).
        module = tf.Module()
        module.model_variables = list(model.variables)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tf.saved_model.save(module, saved,
                                signatures={ENDPOINT: serve.get_concrete_function()})
        converter = tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=[ENDPOINT])
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        # Not TFLITE_BUILTINS_INT8: on the SavedModel route TF 2.21 checks for a
        # representative dataset before it looks for the QAT fake-quant ops, so it
        # would refuse a QAT model. Float leftovers are checked on the result.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if io_type:
            converter.inference_input_type = getattr(tf, io_type)
            converter.inference_output_type = getattr(tf, io_type)
        if calibration is not None:
            converter.representative_dataset = representative_dataset(calibration, iface,
                                                                       batch_size)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return converter.convert()
        except Exception as err:  # ConverterError and friends: explain, keep the cause
            lines = [ln.strip() for ln in str(err).splitlines() if "error" in ln.lower()]
            hint = ("" if allow_float_fallback else
                    " If some op has no int8 range or kernel, pass representative_data (to "
                    "calibrate tensors QAT left without a range) and/or "
                    "allow_float_fallback=True.")
            raise ExportError("QAT TFLite conversion failed ("
                              f"{type(err).__name__}):\n" + "\n".join(lines[:8] or
                                                                      [str(err)[:2000]]) + hint
                              ) from err


def _float_compute_ops(buf: bytes) -> list[str]:
    """Ops (other than QUANTIZE/DEQUANTIZE) whose output tensor is float32."""
    schema = _deps.litert_schema()
    model = schema.Model.GetRootAs(bytearray(buf), 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items()
             if not k.startswith("_") and isinstance(v, int)}
    out = set()
    for s in range(model.SubgraphsLength()):
        sub = model.Subgraphs(s)
        for j in range(sub.OperatorsLength()):
            op = sub.Operators(j)
            code = model.OperatorCodes(op.OpcodeIndex())
            name = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?")
            if name in ("QUANTIZE", "DEQUANTIZE") or op.OutputsLength() == 0:
                continue
            if sub.Tensors(op.Outputs(0)).Type() == schema.TensorType.FLOAT32:
                out.add(name)
    return sorted(out)
