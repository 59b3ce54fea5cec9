"""Export a Keras 3 model to a verified ncnn model (.ncnn.param + .ncnn.bin) through pnnx.

Route: `export_onnx(..., nchw_input=True)` (verified in onnxruntime) -> two
ONNX rewrites pnnx needs (`_onnx_fixes.py`: channel Gathers as Slice + Concat,
zero Pads folded into the convs they feed) -> the `pnnx` converter
executable -> both files run in ncnn (in a child process) and compared with
Keras. pnnx is run without torch: its wheel declares torch, but the converter
is a self-contained executable (`pip install --no-deps pnnx`).

Why the first probe differed by 0.58: the numbers are ncnn's, not the file's.
ncnn's default options store activations in fp16 (and compute in fp16 on
ARMv8.2), pnnx stores the weights in fp16 unless told `fp16=0`, ncnn takes
channels-first arrays without a batch axis, and `ncnn.Mat(array)` borrows the
array's memory (a temporary array freed before `extract` is read as garbage).
This exporter writes float32 weights unless `quantize="float16"`, verifies
with ncnn's fp16 options off, and reports the error under ncnn's default
options as well (`report.details["ncnn_default_options"]`).
"""
from __future__ import annotations

import collections
import logging
import os
import re
import subprocess
import tempfile
from typing import Any


from keras_slim.errors import ArgumentError
from keras_slim.export import _deps, _mobile, _onnx_fixes
from keras_slim.export._atomic import atomic_file, check_output_path
from keras_slim.export._model_io import ModelInterface
from keras_slim.export._model_io import verify as compare_outputs
from keras_slim.export._pipeline import Tolerance, write_verified
from keras_slim.export.report import ExportError, ExportReport, TensorInfo

logger = logging.getLogger(__name__)

_UNSUPPORTED = {
    "int8": "ncnn's int8 models are made by ncnn2table + ncnn2int8, C++ tools that neither the "
            "ncnn nor the pnnx wheel ships; use quantize='float16', or TFLite/MNN for int8.",
    "dynamic": "ncnn has no int8-weights-only mode; use quantize='float16' (half the size).",
}


def export_ncnn(
    model: Any,
    out_dir: str | os.PathLike,
    name: str | None = None,
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
    """Write `out_dir/NAME.ncnn.param` and `NAME.ncnn.bin`, checked in ncnn against Keras.

    Args:
        model: a Functional or Sequential Keras 3 model (TensorFlow backend).
        out_dir: the folder to write into (created if missing; its parent must
            exist). On any failure neither file is left there.
        name: file stem (default: the model's name).
        quantize: None (float32 weights) or "float16" (fp16 weights, half the
            size; verified with ncnn's default fp16 storage/arithmetic options).
        verify: run both files in ncnn on `sample_inputs` (default
            `num_verify_samples` random in [-1, 1)) and require
            max |diff| / max(1, max|ref|) < `tolerance` (default 1e-4 for
            float32; fp16 files report their error, limited only if
            `tolerance` is given). The ONNX step is verified too.
        sample_inputs: arrays in Keras' channels-last layout (as export_onnx).
        labelled_data: (x, y) to report top-1 agreement and both accuracies.
        fold_bn: fold BatchNormalization into the preceding conv/dense first.
        opset: ONNX opset of the intermediate file.

    The app feeds blobs `in0`, `in1`, ... (the model's inputs in order,
    channels-first, no batch axis: `ncnn::Mat` of c x h x w) and extracts
    `out0`, ...; `report.details["blobs"]` maps them to the Keras names.

    Returns:
        ExportReport (format "ncnn"; `path` is the .param file, `details["bin"]`
        the weights), with ncnn's layer histogram, blob specs and errors.

    Raises:
        ArgumentError: bad arguments. MissingDependencyError: pnnx or ncnn
        missing. ExportError: an op pnnx or ncnn does not support (named), a
        converter or runtime crash, or verification failed (nothing written).
    """
    limit, iface, samples = _mobile.start(model, "ncnn", quantize, (None, "float16"),
                                          _UNSUPPORTED, tolerance, num_verify_samples,
                                          sample_inputs)
    pnnx = _mobile.pnnx_executable()
    _mobile.require_runtime("ncnn")
    stem = _stem(name if name is not None else model.name)
    folder, created = _mobile.output_directory(out_dir)
    try:
        param_target = check_output_path(os.path.join(folder, f"{stem}.ncnn.param"), ".param")
        bin_target = check_output_path(os.path.join(folder, f"{stem}.ncnn.bin"), ".bin")
        with tempfile.TemporaryDirectory(prefix="keras_slim_ncnn_") as work:
            onnx_path, onnx_report, proto = _mobile.verified_onnx(
                model, work, samples, opset=opset, fold_bn=fold_bn, verify=verify, fmt="ncnn")
            rewrites = _onnx_fixes.for_pnnx(proto)
            if any(rewrites.values()):
                _deps.onnx().save(proto, onnx_path)
            param, weights, ignored = _convert(pnnx, onnx_path, proto, iface, quantize, work)
        in_shapes = _mobile.onnx_shapes(_mobile.graph_inputs(proto))
        out_shapes = _mobile.onnx_shapes(proto.graph.output)
        param = _with_input_shapes(param, in_shapes)
        report = _report(out_dir, stem, param, weights, iface, in_shapes, out_shapes, quantize,
                         onnx_report, rewrites, ignored, opset)
        fp16 = quantize == "float16"
        check = Tolerance(limit, "the ncnn output differs from Keras",
                          f" ({quantize or 'float32'})",
                          ". Pass a larger `tolerance` if this error is acceptable, or "
                          "verify=False to write the files unchecked.")
        with atomic_file(param_target) as param_tmp:
            with open(param_tmp, "w") as f:
                f.write(param)
            write_verified(weights, bin_target, report,
                           lambda tmp: _runner(param_tmp, tmp, iface, out_shapes, fp16, report),
                           iface, batch_size=1, samples=samples,
                           tolerance=check if verify else None, labelled_data=labelled_data,
                           label_output=label_output)
    except BaseException:
        if created and not os.listdir(folder):
            os.rmdir(folder)
        raise
    report.details["runtime_options"] = "ncnn defaults" if fp16 else "fp16 storage/arithmetic off"
    if verify and not fp16:  # what an app that keeps ncnn's default options gets
        runner = _runner(param_target, bin_target, iface, out_shapes, True, None)
        abs_err, rel_err = compare_outputs(iface, runner, 1, samples)
        runner.process.close()
        report.details["ncnn_default_options"] = {"max_abs_error": abs_err,
                                                  "max_rel_error": rel_err}
    logger.info("Exported %s and %s (%d bytes).", param_target, bin_target, report.size_bytes)
    return report


def _stem(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ArgumentError(f"name must be a non-empty str (the file stem), got {name!r}.")
    return re.sub(r"[^\w.-]", "_", name.strip())


def _convert(pnnx: str, onnx_path: str, proto, iface: ModelInterface, quantize: str | None,
             work: str) -> tuple[str, bytes, list[str]]:
    """Run pnnx; (param text, bin bytes, pnnx's 'ignore ...' lines)."""
    shapes = _mobile.onnx_shapes(_mobile.graph_inputs(proto))
    args = [pnnx, onnx_path, "inputshape=" + _shape_arg(shapes, None)]
    if iface.dynamic:  # a second size tells pnnx which axes are dynamic
        args.append("inputshape2=" + _shape_arg(shapes, 160))
    outputs = {key: os.path.join(work, f"model.{ext}") for key, ext in (
        ("ncnnparam", "ncnn.param"), ("ncnnbin", "ncnn.bin"), ("ncnnpy", "ncnn.py"),
        ("pnnxparam", "pnnx.param"), ("pnnxbin", "pnnx.bin"), ("pnnxpy", "pnnx.py"),
        ("pnnxonnx", "pnnx.onnx"))}
    args += [f"{k}={v}" for k, v in outputs.items()]
    args.append(f"fp16={1 if quantize == 'float16' else 0}")
    ops = sorted({n.op_type for n in proto.graph.node})
    hint = f"The ONNX file's ops: {', '.join(ops)}."
    try:
        result = subprocess.run(args, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", timeout=900)
    except subprocess.TimeoutExpired as err:
        raise ExportError(f"pnnx did not finish converting the model in 900 s. {hint}") from err
    if result.returncode != 0 or not os.path.isfile(outputs["ncnnparam"]):
        raise _mobile.tool_failure("pnnx", result, hint)
    ignored = [line.strip() for line in result.stdout.splitlines() if line.startswith("ignore ")]
    with open(outputs["ncnnparam"]) as f:
        param = f.read()
    with open(outputs["ncnnbin"], "rb") as f:
        weights = f.read()
    return param, weights, ignored


def _shape_arg(shapes: list[tuple], dynamic: int | None) -> str:
    parts = []
    for shape in shapes:
        dims = [1 if i == 0 else (d if d > 0 else (dynamic or 224)) for i, d in enumerate(shape)]
        parts.append("[" + ",".join(str(d) for d in dims) + "]")
    return ",".join(parts)


def _with_input_shapes(param: str, in_shapes: list[tuple]) -> str:
    """Add w/h/c to each static Input layer (0=w 1=h 11=d 2=c): the file documents its input."""
    keys = {1: ("0",), 2: ("1", "0"), 3: ("2", "1", "0"), 4: ("2", "11", "1", "0")}
    lines = param.split("\n")
    for i, shape in enumerate(in_shapes):
        dims = shape[1:]
        if len(dims) not in keys or any(d <= 0 for d in dims):
            continue
        for j, line in enumerate(lines):
            fields = line.split()
            if len(fields) == 5 and fields[0] == "Input" and fields[4] == f"in{i}":
                pairs = list(zip(keys[len(dims)], dims))[::-1]  # ncnn's order: 0=w 1=h 2=c
                lines[j] = line + " " + " ".join(f"{k}={d}" for k, d in pairs)
    return "\n".join(lines)


def layer_histogram(param: str) -> dict[str, int]:
    """{ncnn layer type: count} of a .param file's text."""
    rows = [line.split() for line in param.splitlines()[2:] if line.strip()]
    return dict(sorted(collections.Counter(r[0] for r in rows).items()))


def _report(out_dir, stem, param, weights, iface, in_shapes, out_shapes, quantize,
            onnx_report, rewrites, ignored, opset) -> ExportReport:
    ins = [TensorInfo(f"in{i}", tuple(s[1:]), "float32") for i, s in enumerate(in_shapes)]
    outs = [TensorInfo(f"out{i}", tuple(s[1:]), "float32") for i, s in enumerate(out_shapes)]
    blobs = {**{f"in{i}": n for i, n in enumerate(iface.input_names)},
             **{f"out{i}": n for i, n in enumerate(iface.output_names)}}
    folder = os.fspath(out_dir)
    return ExportReport(
        path=os.path.join(folder, f"{stem}.ncnn.param"), format="ncnn", quantize=quantize,
        size_bytes=len(param.encode()) + len(weights), op_histogram=layer_histogram(param),
        inputs=ins, outputs=outs, folded_batchnorms=onnx_report.folded_batchnorms,
        input_size=onnx_report.input_size,
        details={"bin": os.path.join(folder, f"{stem}.ncnn.bin"), "blobs": blobs,
                 "layout": "channels-first, no batch axis (ncnn::Mat c x h x w)",
                 "weights": "float16" if quantize == "float16" else "float32",
                 "onnx_ops": onnx_report.op_histogram, "opset": opset,
                 "onnx_max_rel_error": onnx_report.max_rel_error,
                 **rewrites, "pnnx_ignored": ignored})


def _runner(param: str, weights: str, iface: ModelInterface, out_shapes: list[tuple],
            fp16: bool, report: ExportReport | None) -> _mobile.ChildRunner:
    spec = {"runtime": "ncnn", "param": param, "bin": weights, "fp16": fp16, "threads": 1,
            "inputs": [f"in{i}" for i in range(iface.num_inputs)],
            "outputs": [f"out{i}" for i in range(len(iface.output_names))]}
    process = _mobile.RuntimeProcess(spec, "ncnn")
    unknown = process.info["unknown_layers"]
    if unknown:
        process.close()
        ignored = report.details.get("pnnx_ignored") if report is not None else None
        onnx_ops = ", ".join(report.details.get("onnx_ops", {})) if report is not None else "?"
        raise ExportError(
            f"ncnn has no layer {', '.join(repr(u) for u in unknown)}: pnnx left these ops of "
            f"the model unconverted, so ncnn cannot load the file (the ONNX file's ops: "
            f"{onnx_ops})." + (f" pnnx also ignored: {'; '.join(ignored)}." if ignored else "")
            + " Replace those ops in the model, or deliver it as TFLite, ONNX or MNN.")
    if report is not None:
        report.details["ncnn_options"] = process.info["options"]
    return _mobile.ChildRunner(process, out_shapes, batch_axis=False)
