"""`keras-slim export`: verified .tflite, .onnx, ncnn and/or .mnn files."""
from __future__ import annotations

import argparse
import os
from typing import Any

import numpy as np

from keras_slim.cli.loading import check_input_file, check_json_path, check_output_file, load_model
from keras_slim.cli.output import EXIT_EXPORT, EXIT_OK, logger, write_json
from keras_slim.errors import ArgumentError, CliError, MissingDependencyError

# How load_calibration's errors name its arguments: as the options that set them.
_CALIB_OPTIONS = {"source": "--calib", "scale": "--calib-scale", "mean": "--calib-mean",
                  "std": "--calib-std"}


def run(args: argparse.Namespace) -> int:
    """Check the options, load the model and calibration data, export, print the reports."""
    _check_options(args)
    import keras_slim.export as export  # looked up at call time (tests replace exporters)

    model = load_model(args.model, args.unsafe)
    calib = _calibration(args, model) if args.calib else None
    verify_inputs = None if calib is None else [a[:8] for a in calib]
    reports = []
    try:
        if args.tflite:
            logger.info("Converting to TFLite (%s) ...", args.quantize or "float32")
            reports.append(export.export_tflite(
                model, args.tflite, quantize=args.quantize,
                representative_data=calib, int8_io=args.int8_io or False,
                verify=not args.no_verify, sample_inputs=verify_inputs,
                fold_bn=not args.no_fold_bn, num_calibration_samples=args.calib_count,
                for_threads=args.for_threads))
        if args.onnx:
            logger.info("Converting to ONNX (opset %d) ...", args.opset)
            reports.append(export.export_onnx(
                model, args.onnx, opset=args.opset, nchw_input=args.nchw,
                verify=not args.no_verify, sample_inputs=verify_inputs,
                fold_bn=not args.no_fold_bn, for_threads=args.for_threads))
        if args.ncnn:
            logger.info("Converting to ncnn (%s) ...", args.quantize or "float32")
            reports.append(export.export_ncnn(
                model, args.ncnn, name=_stem(args.model), quantize=args.quantize,
                opset=args.opset, verify=not args.no_verify, sample_inputs=verify_inputs,
                fold_bn=not args.no_fold_bn))
        if args.mnn:
            logger.info("Converting to MNN (%s) ...", args.quantize or "float32")
            reports.append(export.export_mnn(
                model, args.mnn, quantize=args.quantize, opset=args.opset,
                verify=not args.no_verify, sample_inputs=verify_inputs,
                fold_bn=not args.no_fold_bn))
    except export.ExportError as err:
        raise CliError(str(err), EXIT_EXPORT) from err
    except ImportError as err:
        raise CliError(str(err), EXIT_EXPORT) from err
    except (TypeError, ValueError) as err:
        raise CliError(f"cannot export model {model.name!r}: {err}", EXIT_EXPORT) from err
    finally:
        if reports:  # print what was written even if a later export failed
            print("\n\n".join(str(r) for r in reports))
    if args.json:
        write_json(args.json, [r.to_dict() for r in reports])
    return EXIT_OK


def _check_options(args: argparse.Namespace) -> None:
    """Usage errors (exit 2) found before any model is loaded."""
    if not (args.tflite or args.onnx or args.ncnn or args.mnn):
        raise CliError("nothing to export: give --tflite PATH, --onnx PATH, --ncnn DIR and/or "
                       "--mnn PATH")
    if args.tflite:
        check_output_file(args.tflite, (".tflite",), "--tflite")
    elif args.int8_io:
        raise CliError("--int8-io applies to TFLite export; add --tflite PATH")
    if args.for_threads != 1 and not (args.tflite or args.onnx):
        raise CliError("--for-threads applies to TFLite and ONNX export (ncnn and MNN files are "
                       "laid out for 1 thread); add --tflite PATH or --onnx PATH")
    if args.quantize and not (args.tflite or args.ncnn or args.mnn):
        raise CliError("--quantize applies to TFLite, ncnn and MNN export; add --tflite PATH, "
                       "--ncnn DIR or --mnn PATH")
    if args.ncnn:
        _check_ncnn_dir(args.ncnn)
        if args.quantize not in (None, "float16"):
            raise CliError(f"--ncnn supports --quantize float16 only (got --quantize "
                           f"{args.quantize}): ncnn's int8 tools are not in its Python wheels; "
                           "export the ncnn files in a separate command")
    if args.mnn:
        check_output_file(args.mnn, (".mnn",), "--mnn")
        if args.quantize == "int8":
            raise CliError("--mnn supports --quantize float16 or dynamic (int8 weights), not "
                           "int8 (MNN's full-integer tool needs its own calibration set-up); "
                           "export the .mnn file in a separate command")
    if args.onnx:
        check_output_file(args.onnx, (".onnx",), "--onnx")
    elif args.nchw:
        raise CliError("--nchw applies to ONNX export; add --onnx PATH")
    check_json_path(args.json, "--json")
    if args.quantize == "int8" and not args.calib:
        raise CliError("--quantize int8 needs --calib (a .npy/.npz array file or a directory "
                       "of images, ~100 typical inputs) to calibrate activation ranges; "
                       "--quantize dynamic needs no data")
    if args.int8_io and args.quantize != "int8":
        raise CliError(f"--int8-io needs --quantize int8 (got --quantize "
                       f"{args.quantize or 'none (float32)'})")
    if args.calib:
        if not os.path.exists(args.calib):
            raise CliError(f"--calib {args.calib!r}: no such file or directory")
        if not os.path.isdir(args.calib):
            check_input_file(args.calib, (".npy", ".npz"), "calibration")


def _check_ncnn_dir(path: str) -> None:
    """--ncnn DIR: a folder, or a new one whose parent exists."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise CliError(f"--ncnn {path!r} is a file; give a folder (the .ncnn.param and "
                       ".ncnn.bin files are written into it)")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise CliError(f"--ncnn {path!r}: the folder {parent!r} does not exist")


def _stem(model_path: str) -> str:
    """'runs/small.keras' -> 'small': the name of the ncnn files."""
    return os.path.splitext(os.path.basename(model_path))[0] or "model"


def _calibration(args: argparse.Namespace, model: Any) -> list[np.ndarray]:
    """--calib through keras_slim.export.load_calibration; its errors are usage errors."""
    from keras_slim.export.calibration import load_calibration

    try:
        arrays = load_calibration(args.calib, model, args.calib_count, args.calib_scale,
                                  args.calib_mean, args.calib_std,
                                  argument_names=_CALIB_OPTIONS)
    except (ArgumentError, MissingDependencyError) as err:
        raise CliError(str(err)) from err
    logger.info("Calibration: %d sample(s) from %s", len(arrays[0]), args.calib)
    return arrays
