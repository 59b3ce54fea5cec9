"""Export a Keras 3 model to a verified MNN file (.mnn) through MNNConvert.

Route: `export_onnx(..., nchw_input=True)` (verified in onnxruntime) -> the
ONNX ops checked against the list MNNConvert prints (`--OP`), so an op it
cannot convert is named before anything runs -> MNNConvert (the `_tools`
extension the `MNN` wheel ships, run in a child process: its Python wrapper
`MNN.tools.mnnconvert` also installs and calls a telemetry client, so it is
not used) -> the file run in MNN's Module API (in a child process) and
compared with Keras.
"""
from __future__ import annotations

import functools
import logging
import os
import subprocess
import sys
import tempfile
from typing import Any

from keras_slim.export import _mobile
from keras_slim.export._atomic import check_output_path
from keras_slim.export._model_io import ModelInterface
from keras_slim.export._pipeline import Tolerance, write_verified
from keras_slim.export.report import ExportError, ExportReport, TensorInfo

logger = logging.getLogger(__name__)

# MNNConvert run as `python -c`: argv[0] is "-c", which it takes as its program name
_CONVERT = "import sys; sys.path.pop(0); import _tools; _tools.mnnconvert(sys.argv)"
_FLAGS = {None: [], "float16": ["--fp16"], "dynamic": ["--weightQuantBits", "8"]}
# the CPU precision each file is verified at: "low" computes in fp16 where the CPU can
PRECISION = {None: "high", "float16": "low", "dynamic": "normal"}
_UNSUPPORTED = {
    "int8": "MNN's full-integer models come from its mnnquant tool, calibrated on an image "
            "folder with its own preprocessing config; keras_slim does not drive it. Use "
            "quantize='dynamic' (int8 weights, float compute) or 'float16', or TFLite for "
            "full int8.",
}


def export_mnn(
    model: Any,
    path: str | os.PathLike,
    quantize: str | None = None,
    verify: bool = True,
    sample_inputs: Any = None,
    labelled_data: Any = None,
    *,
    fold_bn: bool = True,
    opset: int = 17,
    tolerance: float | None = None,
    num_verify_samples: int = 8,
    label_output: str | None = None,
) -> ExportReport:
    """Write an .mnn file, checked in MNN against Keras.

    Args:
        model: a Functional or Sequential Keras 3 model (TensorFlow backend).
        path: the .mnn file, written atomically (nothing left on failure).
        quantize: None (float32), "float16" (fp16 weights, verified at MNN's
            "low" precision, which computes in fp16 where the CPU can) or
            "dynamic" (int8 weights, `--weightQuantBits 8`; computed in float).
        verify: run the file in MNN (CPU, 1 thread) on `sample_inputs` (default
            `num_verify_samples` random in [-1, 1)) and require
            max |diff| / max(1, max|ref|) < `tolerance` (default 1e-4 for
            float32; quantized files report their error, limited only if
            `tolerance` is given). The ONNX step is verified too.
        sample_inputs, labelled_data, label_output: as `export_onnx` (arrays
            in Keras' channels-last layout).
        fold_bn: fold BatchNormalization into the preceding conv/dense first.
        opset: ONNX opset of the intermediate file.

    The file takes the model's input names, channels-first (NCHW) with the
    batch axis; outputs keep Keras' layout and names.

    Returns:
        ExportReport (format "mnn").

    Raises:
        ArgumentError: bad arguments. MissingDependencyError: MNN missing.
        ExportError: an op MNNConvert does not support (named), a converter or
        runtime failure, or verification failed (nothing written).
    """
    limit, iface, samples = _mobile.start(model, "MNN", quantize, tuple(_FLAGS), _UNSUPPORTED,
                                          tolerance, num_verify_samples, sample_inputs)
    _mobile.require_runtime("mnn")
    target = check_output_path(path, ".mnn")
    with tempfile.TemporaryDirectory(prefix="keras_slim_mnn_") as work:
        onnx_path, onnx_report, proto = _mobile.verified_onnx(
            model, work, samples, opset=opset, fold_bn=fold_bn, verify=verify, fmt="MNN")
        unsupported = sorted({n.op_type for n in proto.graph.node} - supported_onnx_ops())
        if unsupported:
            raise ExportError(f"MNNConvert cannot convert the ONNX op(s) {', '.join(unsupported)} "
                              "of this model (`MNNConvert -f ONNX --OP` lists what it can). "
                              "Replace them in the model, or deliver it as TFLite or ONNX.")
        buf = _convert(onnx_path, os.path.join(work, "model.mnn"), quantize,
                       onnx_report.op_histogram)
    in_shapes = _mobile.onnx_shapes(_mobile.graph_inputs(proto))
    out_shapes = _mobile.onnx_shapes(proto.graph.output)
    report = ExportReport(
        path=os.fspath(path), format="mnn", quantize=quantize, size_bytes=len(buf),
        op_histogram=onnx_report.op_histogram,
        inputs=[TensorInfo(n, s, "float32") for n, s in zip(iface.input_names, in_shapes)],
        outputs=[TensorInfo(n, s, "float32") for n, s in zip(iface.output_names, out_shapes)],
        folded_batchnorms=onnx_report.folded_batchnorms, input_size=onnx_report.input_size,
        details={"layout": "NCHW inputs (batch axis kept), outputs as in Keras",
                 "precision": PRECISION[quantize], "opset": opset,
                 "onnx_max_rel_error": onnx_report.max_rel_error,
                 "op_histogram_source": "the ONNX file MNNConvert read"})
    check = Tolerance(limit, "the .mnn output differs from Keras", f" ({quantize or 'float32'})",
                      ". Pass a larger `tolerance` if this error is acceptable, or verify=False "
                      "to write the file unchecked.")
    write_verified(buf, target, report,
                   lambda tmp: open_mnn(tmp, iface, out_shapes, PRECISION[quantize]), iface,
                   batch_size=1, samples=samples, tolerance=check if verify else None,
                   labelled_data=labelled_data, label_output=label_output)
    logger.info("Exported %s (%d bytes).", target, len(buf))
    return report


@functools.lru_cache(maxsize=None)
def supported_onnx_ops() -> frozenset:
    """The ONNX op types `MNNConvert -f ONNX --OP` says it converts."""
    result = _run_converter(["-f", "ONNX", "--OP"])
    lines = result.stdout.splitlines()
    start = next((i for i, line in enumerate(lines) if "support Ops" in line), None)
    if start is None:
        raise _mobile.tool_failure("MNNConvert", result, "Its supported-op list (--OP) could "
                                   "not be read; check the MNN installation.")
    return frozenset(line.strip() for line in lines[start + 1:] if line.strip())


def _run_converter(args: list[str]) -> subprocess.CompletedProcess:
    _mobile.package_dir("_tools", "MNN export (MNNConvert)", "pip install 'keras-slim[mnn]'")
    try:
        return subprocess.run([sys.executable, "-c", _CONVERT] + args, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, errors="replace",
                              timeout=900)
    except subprocess.TimeoutExpired as err:
        raise ExportError("MNNConvert did not finish in 900 s.") from err


def _convert(onnx_path: str, out: str, quantize: str | None, ops: dict) -> bytes:
    result = _run_converter(["-f", "ONNX", "--modelFile", onnx_path, "--MNNModel", out,
                             "--bizCode", "keras_slim"] + _FLAGS[quantize])
    # MNNConvert's exit status says nothing (it returns True either way): read its log
    if result.returncode != 0 or "Converted Success" not in result.stdout \
            or not os.path.isfile(out):
        raise _mobile.tool_failure("MNNConvert", result,
                                   f"The ONNX file's ops: {', '.join(sorted(ops))}.")
    with open(out, "rb") as f:
        return f.read()


def open_mnn(path: str, iface: ModelInterface, out_shapes: list[tuple], precision: str,
             threads: int = 1) -> _mobile.ChildRunner:
    """An .mnn file in MNN's Module API (child process), fed by the model's names."""
    spec = {"runtime": "mnn", "path": path, "precision": precision, "threads": threads,
            "inputs": list(iface.input_names), "outputs": list(iface.output_names)}
    return _mobile.ChildRunner(_mobile.RuntimeProcess(spec, "MNN"), out_shapes,
                               batch_axis=True)
