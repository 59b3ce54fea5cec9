"""`keras-slim export`: verified .tflite and/or .onnx files."""
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
                fold_bn=not args.no_fold_bn, num_calibration_samples=args.calib_count))
        if args.onnx:
            logger.info("Converting to ONNX (opset %d) ...", args.opset)
            reports.append(export.export_onnx(
                model, args.onnx, opset=args.opset, nchw_input=args.nchw,
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
    if not args.tflite and not args.onnx:
        raise CliError("nothing to export: give --tflite PATH and/or --onnx PATH")
    if args.tflite:
        check_output_file(args.tflite, (".tflite",), "--tflite")
    else:
        for flag, value in (("--quantize", args.quantize), ("--int8-io", args.int8_io)):
            if value:
                raise CliError(f"{flag} applies to TFLite export; add --tflite PATH")
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
