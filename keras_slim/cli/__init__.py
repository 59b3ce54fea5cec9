"""The ``keras-slim`` command line: inspect, prune, export and benchmark models.

::

    keras-slim inspect model.keras [--ratios 0.3 0.5 0.7] [--json out.json]
    keras-slim prune model.keras --ratio 0.5 [--round-to 8] -o small.keras [--plan-json plan.json]
    keras-slim export small.keras --tflite small.tflite [--quantize int8 --calib calib.npy]
    keras-slim export small.keras --onnx small.onnx [--opset 17 --nchw]
    keras-slim bench model.tflite small.tflite small.onnx --threads 1 2 [--runs 50]

Result tables go to stdout; progress (``logging``, more with ``-v``) and errors
go to stderr, an error as one line (``--debug`` adds the traceback).
TensorFlow's C++ start-up log lines are hidden unless ``-v`` or ``--debug`` is given.

Exit codes: 0 success, 2 usage error (bad argument, missing or wrong file,
``--unsafe`` needed), 3 unsupported model (subclassed, no prunable
BatchNormalization, unknown custom layer), 4 export, verification or
benchmark failure, 1 unexpected internal error, 130 interrupted.

Models are loaded with ``keras.models.load_model(path, safe_mode=True)``:
``.keras`` files and legacy ``.h5`` files. A model with a ``Lambda`` layer
holds Python bytecode and only loads with ``--unsafe`` (only for files you
trust). ``keras_slim`` registers its own serializable objects (the ``BNL1``
regularizer and the ``ChannelSelection`` layer), so sparsity-trained and
pruned models load as they are; other custom layers need ``--import MODULE``
naming the module that registers them.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import re
import sys
import traceback
import warnings
import zipfile
from typing import Any, Callable, Iterator, Sequence

import numpy as np

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_UNSUPPORTED = 3
EXIT_EXPORT = 4
EXIT_INTERRUPTED = 130

MODEL_EXTENSIONS = (".keras", ".h5", ".hdf5")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
CALIB_SCALES = {
    "unit": "pixel / 255, in [0, 1] (default)",
    "signed": "pixel / 127.5 - 1, in [-1, 1] (keras.applications MobileNet preprocessing)",
    "raw": "pixel values as float32 in [0, 255] (models that rescale inside)",
}
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_EPILOG = ("exit codes: 0 ok, 2 usage error (bad argument, missing/wrong file, --unsafe needed), "
           "3 unsupported model, 4 export/verification/benchmark failure, 1 internal error.")

logger = logging.getLogger("keras_slim.cli")


# ---------------------------------------------------------------- TF start-up logs
# Loading TensorFlow prints ~10 C++ log lines (oneDNN, cuda, cpu_feature_guard,
# cuInit, absl's "before absl::InitializeLog()") ahead of a command's output.
# They can only be hidden before TF is first imported: TF reads
# TF_CPP_MIN_LOG_LEVEL once, and since TF 2.19 its libraries log some lines
# through absl while they load, whatever that variable says.
from keras_slim._quiet import _silence_tf_logs, _tf_logs_wanted  # noqa: E402,F401
from keras_slim.errors import CliError  # noqa: E402


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors become one-line `CliError`s instead of usage dumps."""

    def error(self, message: str):  # type: ignore[override]
        raise CliError(f"{message} (see '{self.prog} --help')", EXIT_USAGE)


# ---------------------------------------------------------------- argument types
def _ratio(text: str) -> float:
    value = _float(text, "ratio")
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(
            f"ratio must be in [0, 1), got {text} (0.5 removes half of the prunable channels)")
    return value


def _layer_ratio(text: str) -> float:
    value = _float(text, "max-layer-ratio")
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(
            f"max-layer-ratio must be in (0, 1], got {text} (0.5: no layer loses more than half)")
    return value


def _non_negative(text: str) -> float:
    value = _float(text, "value")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text}")
    return value


def _shape(text: str) -> tuple:
    """`224,224,3` -> (224, 224, 3): one input's size without the batch axis."""
    parts = [t.strip() for t in text.replace(" ", ",").split(",") if t.strip()]
    if not parts or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(
            f"expected an input size without the batch axis, whole numbers >= 1 separated by "
            f"commas (e.g. 224,224,3), got {text!r}")
    return tuple(int(p) for p in parts)


def _float(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be a number, got {text!r}") from None
    if not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"{what} must be a finite number, got {text}")
    return value


# ---------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The `keras-slim` argument parser with its four subcommands."""
    from keras_slim.version import __version__

    common = _Parser(add_help=False)
    group = common.add_argument_group("general options")
    group.add_argument("-v", "--verbose", action="count", default=0,
                       help="more progress on stderr (-v: keras_slim's log and "
                            "TensorFlow's start-up logs, -vv: debug)")
    group.add_argument("-q", "--quiet", action="store_true",
                       help="only warnings and errors on stderr")
    group.add_argument("--debug", action="store_true",
                       help="print the full traceback of an error")
    group.add_argument("--unsafe", action="store_true",
                       help="allow loading Lambda layers (Python bytecode): only for files you "
                            "trust (keras.models.load_model(..., safe_mode=False))")
    group.add_argument("--import", dest="imports", action="append", default=[],
                       metavar="MODULE",
                       help="import MODULE first (repeatable), e.g. one that registers your "
                            "custom layers with keras.saving.register_keras_serializable")

    parser = _Parser(prog="keras-slim", epilog=_EPILOG,
                     description="Network Slimming for Keras: inspect BatchNormalization "
                                 "scaling factors, prune channels, export to TFLite/ONNX and "
                                 "benchmark.")
    parser.add_argument("--version", action="version", version=f"keras-slim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    # inspect
    p = sub.add_parser("inspect", parents=[common], epilog=_EPILOG,
                       help="BN gamma statistics, coupled groups, barriers, what ratios remove",
                       description="Show the |gamma| statistics of every BatchNormalization, the "
                                   "coupled channel groups, the barriers, and what pruning at "
                                   "each ratio would remove (nothing is written except --json).")
    p.add_argument("model", help="a .keras (or legacy .h5) model file")
    p.add_argument("--ratios", type=_ratio, nargs="+", default=[0.3, 0.5, 0.7], metavar="R",
                   help="prune ratios to tabulate (default: 0.3 0.5 0.7)")
    p.add_argument("--json", metavar="PATH", help="also write everything as JSON to PATH")
    p.add_argument("--all-groups", action="store_true",
                   help="list every coupled group (default: the 20 widest)")
    _add_plan_options(p)
    p.set_defaults(func=cmd_inspect)

    # prune
    p = sub.add_parser("prune", parents=[common], epilog=_EPILOG,
                       help="remove low-|gamma| channels and save the smaller model",
                       description="Plan and apply Network Slimming pruning, print the plan and "
                                   "save the physically smaller model.")
    p.add_argument("model", help="a .keras (or legacy .h5) model file")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--ratio", type=_ratio, metavar="R",
                     help="fraction of prunable channels to remove, in [0, 1)")
    how.add_argument("--threshold", type=_non_negative, metavar="T",
                     help="instead of --ratio: remove every channel whose |gamma| score is "
                          "below T")
    p.add_argument("-o", "--output", required=True, metavar="PATH",
                   help="where to save the pruned model (.keras, or legacy .h5)")
    p.add_argument("--plan-json", metavar="PATH", help="also write the plan as JSON to PATH")
    p.add_argument("--no-fold", action="store_true",
                   help="do not fold the constant act(beta) of removed channels into the next "
                        "layer's bias (prune(..., fold_constants=False))")
    p.add_argument("--full-table", action="store_true",
                   help="list every layer in the plan table (default: only changed layers)")
    _add_plan_options(p)
    p.set_defaults(func=cmd_prune)

    # export
    p = sub.add_parser("export", parents=[common], epilog=_EPILOG,
                       help="write a verified .tflite and/or .onnx file",
                       description="Convert a model to LiteRT (.tflite) and/or ONNX. Every file "
                                   "is run and compared with Keras; float32 must match within "
                                   "1e-4 relative or nothing is written (exit code 4).")
    p.add_argument("model", help="a .keras (or legacy .h5) model file")
    p.add_argument("--tflite", metavar="PATH", help="write a .tflite file to PATH")
    p.add_argument("--quantize", choices=["float16", "dynamic", "int8"],
                   help="TFLite quantization: float16 weights, dynamic (int8 weights) or int8 "
                        "(full integer, needs --calib); default float32")
    p.add_argument("--calib", metavar="FILE_OR_DIR",
                   help="calibration inputs: a .npy array, a .npz file (one array, or one per "
                        "input name) used as they are, or a directory of images (searched "
                        "recursively, sorted by name), each converted to RGB (grayscale for "
                        "1-channel models), resized to the model's input size and scaled per "
                        "--calib-scale, then --calib-mean/--calib-std. Also used to verify "
                        "the export")
    p.add_argument("--calib-count", type=_positive_int, default=100, metavar="N",
                   help="number of calibration samples to use (default 100)")
    p.add_argument("--calib-scale", choices=sorted(CALIB_SCALES), default="unit",
                   help="image pixel scaling: " + "; ".join(
                       f"{k}: {v}" for k, v in CALIB_SCALES.items()))
    p.add_argument("--calib-mean", type=float, nargs="+", metavar="M",
                   help="subtract this per-channel mean from images (after --calib-scale)")
    p.add_argument("--calib-std", type=float, nargs="+", metavar="S",
                   help="divide images by this per-channel std (after the mean)")
    p.add_argument("--int8-io", nargs="?", const="int8", choices=["int8", "uint8"],
                   help="with --quantize int8: make inputs and outputs int8 (or uint8) too; "
                        "the scale and zero point are printed in the report")
    p.add_argument("--onnx", metavar="PATH", help="write an .onnx file to PATH")
    p.add_argument("--opset", type=_positive_int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--nchw", action="store_true",
                   help="ONNX: take channels-first (NCHW) inputs (ncnn, MNN, TensorRT)")
    p.add_argument("--no-fold-bn", action="store_true",
                   help="keep BatchNormalization as separate ops (default: folded into convs)")
    p.add_argument("--no-verify", action="store_true",
                   help="write the files without running them against Keras")
    p.add_argument("--json", metavar="PATH", help="also write the export reports as JSON")
    p.set_defaults(func=cmd_export)

    # bench
    p = sub.add_parser("bench", parents=[common], epilog=_EPILOG,
                       help="batch-1 latency of .tflite/.onnx files side by side",
                       description="Median and p90 latency of one inference at batch 1: LiteRT "
                                   "with XNNPACK for .tflite, onnxruntime CPU for .onnx. Files "
                                   "are measured in turn for each thread count, so machine load "
                                   "affects all of them.")
    p.add_argument("files", nargs="+", metavar="FILE", help=".tflite or .onnx files")
    p.add_argument("--threads", type=_positive_int, nargs="+", default=[1, 2], metavar="N",
                   help="thread counts (default: 1 2)")
    p.add_argument("--runs", type=_positive_int, default=50, help="timed runs (default 50)")
    p.add_argument("--warmup", type=_non_negative_int, default=10,
                   help="discarded warm-up runs (default 10)")
    p.add_argument("--json", metavar="PATH", help="also write the measurements as JSON")
    p.set_defaults(func=cmd_bench)
    return parser


def _add_plan_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("plan options (as keras_slim.plan)")
    g.add_argument("--round-to", type=_positive_int, default=1, metavar="N",
                   help="keep channel counts at multiples of N (8 suits ARM/x86 SIMD)")
    g.add_argument("--min-channels", type=_positive_int, default=1, metavar="N",
                   help="fewest channels any layer keeps (default 1)")
    g.add_argument("--max-layer-ratio", type=_layer_ratio, metavar="R",
                   help="most any one layer may lose, in (0, 1]")
    g.add_argument("--exclude", nargs="+", default=[], metavar="NAME",
                   help="layers whose output channels must all stay")
    g.add_argument("--no-channel-selection", action="store_true",
                   help="do not prune BNs on shared tensors through a ChannelSelection "
                        "gather (it exports as a TFLite GATHER, which XNNPACK does not run: "
                        "often faster on CPU for pre-activation ResNets; compare with "
                        "'keras-slim bench')")
    g.add_argument("--group-reduction", choices=["mean", "max", "sum"], default="mean",
                   help="how coupled BNs' |gamma| combine into one score (default mean)")
    g.add_argument("--input-shape", type=_shape, action="append", metavar="H,W,C",
                   help="input size MACs are counted at, without the batch axis, e.g. "
                        "224,224,3; repeat it once per input for multi-input models. It fills "
                        "the model's None axes (known ones must match). Default: the model's "
                        "own size, 224 for each None spatial axis")


# ---------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    """Run the `keras-slim` command line; returns the process exit code."""
    _silence_tf_logs(sys.argv[1:] if argv is None else argv)  # before anything imports TF
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except CliError as err:
        print(f"keras-slim: error: {err}", file=sys.stderr)
        return err.code
    except SystemExit as exit_:  # --help / --version
        return int(exit_.code or 0)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE

    try:
        with _logging_to_stderr(args.verbose, args.quiet), _warnings_to_log():
            for module in args.imports:
                _import_module(module)
            return args.func(args)
    except CliError as err:
        return _fail(args, err, err.code)
    except KeyboardInterrupt:
        print("keras-slim: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:  # a bug or an unforeseen library error
        return _fail(args, err, 1, unexpected=True)


def _fail(args: argparse.Namespace, err: BaseException, code: int,
          unexpected: bool = False) -> int:
    if args.debug:
        traceback.print_exception(type(err), err, err.__traceback__, file=sys.stderr)
    text = _one_line(str(err)) or type(err).__name__
    if unexpected:
        text = (f"unexpected {type(err).__name__}: {text}" +
                ("" if args.debug else " (rerun with --debug for the traceback)"))
    print(f"keras-slim {args.command}: error: {text}", file=sys.stderr)
    return code


def _one_line(text: str, limit: int = 1500) -> str:
    line = " | ".join(part.strip() for part in text.strip().splitlines() if part.strip())
    return line if len(line) <= limit else line[:limit - 3] + "..."


@contextlib.contextmanager
def _logging_to_stderr(verbose: int, quiet: bool) -> Iterator[None]:
    """Send keras_slim's log records to stderr for the duration of one command.

    The CLI's own progress shows at INFO; the library's records show from
    WARNING, INFO with -v and DEBUG with -vv. Levels, handlers and propagation
    are restored afterwards, so `main` can be called repeatedly in one process.
    """
    package = logging.getLogger("keras_slim")
    saved = (package.level, package.propagate, logger.level)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s" if verbose < 2
                                           else "%(levelname)s %(name)s: %(message)s"))
    package.addHandler(handler)
    package.propagate = False
    if quiet:
        package.setLevel(logging.WARNING)
        logger.setLevel(logging.WARNING)
    else:
        package.setLevel(logging.DEBUG if verbose >= 2 else
                         logging.INFO if verbose == 1 else logging.WARNING)
        logger.setLevel(logging.DEBUG if verbose >= 2 else logging.INFO)
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.setLevel(saved[0])
        package.propagate = saved[1]
        logger.setLevel(saved[2])


@contextlib.contextmanager
def _warnings_to_log() -> Iterator[None]:
    """Show keras_slim's warnings once each as log lines; others only with -vv."""
    seen: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None):
        text = _one_line(str(message))
        if text in seen:
            return
        seen.add(text)
        ours = f"{os.sep}keras_slim{os.sep}" in filename
        logger.log(logging.WARNING if ours else logging.DEBUG,
                   "warning: %s", text if ours else f"{category.__name__}: {text}")

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        yield


def _import_module(name: str) -> None:
    try:
        importlib.import_module(name)
    except Exception as err:
        raise CliError(f"--import {name}: could not import it ({type(err).__name__}: {err}); "
                       "check the module name and that it is on PYTHONPATH") from err


# ---------------------------------------------------------------- loading
def load_model(path: str, unsafe: bool = False) -> Any:
    """Load a `.keras` / `.h5` model file with Keras' safe mode unless `unsafe`.

    Raises:
        CliError: code 2 for a missing, unreadable or non-model file or a file
            that needs `--unsafe`; code 3 for a file Keras cannot rebuild
            (unknown custom class, broken config).
    """
    import keras

    import keras_slim  # noqa: F401  (registers BNL1 and ChannelSelection)

    _check_input_file(path, MODEL_EXTENSIONS, "model")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".keras" and not zipfile.is_zipfile(path):
        raise CliError(f"{path!r} is not a Keras model file: a .keras file is a zip archive "
                       "written by model.save('model.keras')")
    if ext in (".h5", ".hdf5"):
        with open(path, "rb") as f:
            if f.read(8) != _HDF5_SIGNATURE:
                raise CliError(f"{path!r} is not an HDF5 file: a legacy .h5 model is written by "
                               "model.save('model.h5')")
    logger.info("Loading %s ...", path)
    try:
        model = keras.models.load_model(path, safe_mode=not unsafe)
    except Exception as err:
        text = str(err)
        if "safe_mode" in text or "unsafe_deserialization" in text:
            raise CliError(
                f"{path!r} contains Python code (a Lambda layer or a Python function) that "
                "Keras' safe mode refuses to load; if you trust the file, pass --unsafe",
                EXIT_USAGE) from err
        missing = re.search(r"Could not locate (?:class|function) '([^']+)'", text)
        if missing or "Unknown layer" in text:
            where = re.search(r"Full object config: {'module': '([^']+)'", text)
            what = (f"class {missing.group(1)!r}" if missing else "a custom layer")
            if where:
                what += f" (saved from module {where.group(1)!r})"
            raise CliError(
                f"cannot load {path!r}: it uses {what}, which is not registered in this "
                "process; pass --import MODULE naming the module that defines it with "
                "@keras.saving.register_keras_serializable (on PYTHONPATH)",
                EXIT_UNSUPPORTED) from err
        raise CliError(f"cannot load {path!r} ({type(err).__name__}): {_one_line(text, 600)}",
                       EXIT_UNSUPPORTED) from err
    if not isinstance(model, keras.Model):
        raise CliError(f"{path!r} holds a {type(model).__name__}, not a keras.Model",
                       EXIT_UNSUPPORTED)
    return model


def _check_input_file(path: str, extensions: Sequence[str], what: str) -> None:
    ext = os.path.splitext(path)[1].lower()
    if ext not in extensions:
        raise CliError(f"{path!r} is not a {what} file this command takes: expected "
                       f"{' or '.join(extensions)}, got {ext or 'no extension'!r}")
    if os.path.isdir(path):
        raise CliError(f"{path!r} is a directory, expected a {ext} file")
    if not os.path.isfile(path):
        raise CliError(f"no such file: {path!r}")
    if not os.access(path, os.R_OK):
        raise CliError(f"cannot read {path!r} (permission denied)")


def _check_output_file(path: str, extensions: Sequence[str], option: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext not in extensions:
        raise CliError(f"{option} {path!r}: the file name must end in "
                       f"{' or '.join(extensions)}")
    if os.path.isdir(path):
        raise CliError(f"{option} {path!r} is a directory; give a file name")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise CliError(f"{option} {path!r}: the directory {parent!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise CliError(f"{option} {path!r}: the directory {parent!r} is not writable")
    return path


def _check_json_path(path: str | None, option: str) -> None:
    if path is not None:
        _check_output_file(path, (".json",), option)


def _write_json(path: str, data: Any) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=1, default=_json_default)
        f.write("\n")
    logger.info("Wrote %s", path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    return str(obj)


# ---------------------------------------------------------------- planning
def _plan_options(args: argparse.Namespace) -> dict:
    return dict(min_channels=args.min_channels, max_layer_ratio=args.max_layer_ratio,
                round_to=args.round_to, exclude=tuple(args.exclude),
                channel_selection=not args.no_channel_selection,
                group_reduction=args.group_reduction,
                input_shape=_input_shape_option(args))


def _input_shape_option(args: argparse.Namespace) -> Any:
    """--input-shape as keras_slim.plan's input_shape (one shape, or one per input)."""
    shapes = getattr(args, "input_shape", None)
    if not shapes:
        return None
    return shapes[0] if len(shapes) == 1 else [list(s) for s in shapes]


def _mac_input(the_plan: Any) -> str:
    """'(224, 224, 3) (reference size for dynamic axes)': where the plan counted MACs."""
    shapes = ", ".join(str(tuple(s)) for s in the_plan.input_shapes or [])
    return shapes + (" (reference size for dynamic axes; set it with --input-shape)"
                     if the_plan.dynamic_input else "")


def _check_prunable(model: Any, args: argparse.Namespace) -> list:
    """The model's BN layers with a scale; CliError if it cannot be slimmed."""
    from keras_slim import _keras

    try:
        _keras.check_graph_model(model, "keras-slim")
    except (TypeError, ValueError) as err:
        raise CliError(str(err), EXIT_UNSUPPORTED) from err
    layers = list(_keras.walk_layers(model))
    bns = [layer for layer in layers if _keras.is_batch_norm(layer)
           and getattr(layer, "gamma", None) is not None]
    if not bns:
        raise CliError(f"model {model.name!r} has no BatchNormalization layer with a scaling "
                       "factor (gamma), so Network Slimming has nothing to rank; add BN after "
                       "the convolutions and sparsity-train with keras_slim.add_bn_l1",
                       EXIT_UNSUPPORTED)
    names = {layer.name for layer in layers}
    unknown = [n for n in args.exclude if n not in names]
    if unknown:
        raise CliError(f"--exclude names layers that are not in model {model.name!r}: "
                       f"{unknown}; run 'keras-slim inspect' to see the layer names")
    if getattr(args, "input_shape", None):
        from keras_slim.graph import resolve_input_shapes

        tensors = _keras.flatten(_keras.read_model(model).inputs)
        try:
            resolve_input_shapes([tuple(t.shape) for t in tensors],
                                 [_keras.input_name(t) or "input" for t in tensors],
                                 _input_shape_option(args), model.name)
        except ValueError as err:
            raise CliError(f"--input-shape: {err}") from err
    return bns


def _make_plan(model: Any, ratio: float | None, threshold: float | None,
               options: dict) -> Any:
    import keras_slim

    try:
        return keras_slim.plan(model, ratio, threshold=threshold, **options)
    except (TypeError, ValueError) as err:  # arguments were checked: the model is the problem
        raise CliError(f"cannot plan pruning for model {model.name!r}: {err}",
                       EXIT_UNSUPPORTED) from err


def _pct_change(after: int, before: int) -> str:
    return f"{100.0 * (after - before) / before:+.1f}%" if before else "n/a"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]],
           right: Sequence[int] = ()) -> str:
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def fmt(row):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    return "\n".join([fmt(cells[0]), "  ".join("-" * w for w in widths)]
                     + [fmt(r) for r in cells[1:]])


# ---------------------------------------------------------------- inspect
def gamma_statistics(bns: Sequence[Any]) -> list[dict]:
    """Per-BN |gamma| statistics plus an "(all)" row over every scaling factor."""
    rows, everything = [], []
    for layer in bns:
        g = np.abs(np.asarray(layer.gamma.numpy(), dtype=np.float64)).ravel()
        everything.append(g)
        rows.append(_gamma_row(layer.name, g))
    if everything:
        rows.append(_gamma_row("(all)", np.concatenate(everything)))
    return rows


def _gamma_row(name: str, g: np.ndarray) -> dict:
    return dict(layer=name, count=int(g.size), min=float(g.min()), median=float(np.median(g)),
                max=float(g.max()), below_1e_2=float(np.mean(g < 1e-2)),
                below_1e_3=float(np.mean(g < 1e-3)))


def cmd_inspect(args: argparse.Namespace) -> int:
    """`keras-slim inspect`: gamma statistics, groups, barriers and a ratio table."""
    _check_json_path(args.json, "--json")
    model = load_model(args.model, args.unsafe)
    bns = _check_prunable(model, args)
    options = _plan_options(args)
    stats = gamma_statistics(bns)
    logger.info("Planning %d ratio(s) ...", len(args.ratios))
    base = _make_plan(model, 0.0, None, options)
    plans = [(r, _make_plan(model, r, None, options)) for r in args.ratios]

    out = [f"model {model.name!r} ({type(model).__name__}): {base.params_before:,} params, "
           f"{base.macs_before:,} MACs, {len(bns)} BatchNormalization layer(s), "
           f"{base.prunable_channels:,} prunable channel(s)",
           f"MACs at input {_mac_input(base)}", "",
           "BatchNormalization |gamma|:",
           _table(["layer", "channels", "min", "median", "max", "< 1e-2", "< 1e-3"],
                  [[s["layer"], s["count"], f"{s['min']:.3g}", f"{s['median']:.3g}",
                    f"{s['max']:.3g}", f"{100 * s['below_1e_2']:.1f}%",
                    f"{100 * s['below_1e_3']:.1f}%"] for s in stats],
                  right=range(1, 7))]

    groups = sorted(base.groups, key=lambda g: (-g["channels"], g["layers"]))
    shown = groups if args.all_groups else groups[:20]
    out += ["", f"Prunable channel groups ({len(groups)}; layers in a group lose the same "
                "channels):",
            _table(["#", "channels", "layers"],
                   [[i + 1, g["channels"], _short_list(g["layers"])]
                    for i, g in enumerate(shown)], right=(0, 1))]
    if len(shown) < len(groups):
        out.append(f"... {len(groups) - len(shown)} narrower group(s) not shown "
                   "(--all-groups or --json lists them)")

    out += ["", "Barriers (channels reaching them are kept): " +
            ("none" if not base.barriers else "")]
    out += [f"  {name}: {reason}" for name, reason in base.barriers]

    out += ["", "Pruning at each ratio" + (f" (round_to={args.round_to})"
                                           if args.round_to > 1 else "") + ":",
            _table(["ratio", "channels removed", "params before", "params after", "change",
                    "MACs before", "MACs after", "change"],
                   [[f"{r:g}", f"{p.removed_channels:,}/{p.prunable_channels:,}",
                     f"{p.params_before:,}", f"{p.params_after:,}",
                     _pct_change(p.params_after, p.params_before), f"{p.macs_before:,}",
                     f"{p.macs_after:,}", _pct_change(p.macs_after, p.macs_before)]
                    for r, p in plans], right=range(1, 8))]
    print("\n".join(out))

    if args.json:
        _write_json(args.json, dict(
            model=args.model, name=model.name, params=base.params_before,
            macs=base.macs_before, input_shapes=base.input_shapes,
            dynamic_input=base.dynamic_input, prunable_channels=base.prunable_channels,
            options=options, batchnorm=stats, groups=groups,
            barriers=[dict(layer=n, reason=r) for n, r in base.barriers],
            ratios=[dict(ratio=r, achieved_ratio=p.ratio, threshold=p.threshold,
                         removed_channels=p.removed_channels,
                         prunable_channels=p.prunable_channels,
                         params_before=p.params_before, params_after=p.params_after,
                         macs_before=p.macs_before, macs_after=p.macs_after,
                         channels_after={row.name: row.channels_after for row in p.layers
                                         if row.channels_before != row.channels_after})
                    for r, p in plans]))
    return EXIT_OK


def _short_list(names: Sequence[str], limit: int = 4) -> str:
    text = ", ".join(names[:limit])
    return text + (f", ... (+{len(names) - limit})" if len(names) > limit else "")


# ---------------------------------------------------------------- prune
def cmd_prune(args: argparse.Namespace) -> int:
    """`keras-slim prune`: plan, print, prune and save."""
    import keras_slim

    _check_output_file(args.output, MODEL_EXTENSIONS, "-o")
    _check_json_path(args.plan_json, "--plan-json")
    if os.path.abspath(args.output) == os.path.abspath(args.model):
        raise CliError(f"-o {args.output!r} is the input model; write the pruned model to a "
                       "new file")
    model = load_model(args.model, args.unsafe)
    _check_prunable(model, args)
    logger.info("Planning ...")
    the_plan = _make_plan(model, args.ratio, args.threshold, _plan_options(args))
    print(the_plan.table(only_changed=not args.full_table))
    print()
    print(the_plan.summary())
    if the_plan.barriers:
        print("barriers (channels kept): " + ", ".join(n for n, _ in the_plan.barriers))
    if args.plan_json:
        the_plan.to_json(args.plan_json)
        logger.info("Wrote %s", args.plan_json)

    logger.info("Pruning ...")
    try:
        small = keras_slim.prune(model, the_plan, fold_constants=not args.no_fold)
    except (TypeError, ValueError) as err:
        raise CliError(f"pruning model {model.name!r} failed: {err}", EXIT_UNSUPPORTED) from err
    logger.info("Saving %s ...", args.output)
    try:
        small.save(args.output)
    except Exception as err:
        raise CliError(f"could not save the pruned model to {args.output!r} "
                       f"({type(err).__name__}): {err}", EXIT_EXPORT) from err
    print(f"saved {args.output} ({small.count_params():,} params, "
          f"{the_plan.macs_after:,} MACs)")
    return EXIT_OK


# ---------------------------------------------------------------- export
def cmd_export(args: argparse.Namespace) -> int:
    """`keras-slim export`: verified .tflite and/or .onnx files."""
    if not args.tflite and not args.onnx:
        raise CliError("nothing to export: give --tflite PATH and/or --onnx PATH")
    if args.tflite:
        _check_output_file(args.tflite, (".tflite",), "--tflite")
    else:
        for flag, value in (("--quantize", args.quantize), ("--int8-io", args.int8_io)):
            if value:
                raise CliError(f"{flag} applies to TFLite export; add --tflite PATH")
    if args.onnx:
        _check_output_file(args.onnx, (".onnx",), "--onnx")
    elif args.nchw:
        raise CliError("--nchw applies to ONNX export; add --onnx PATH")
    _check_json_path(args.json, "--json")
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
            _check_input_file(args.calib, (".npy", ".npz"), "calibration")

    from keras_slim.export import ExportError, export_onnx, export_tflite

    model = load_model(args.model, args.unsafe)
    calib = load_calibration(args.calib, model, args.calib_count, args.calib_scale,
                             args.calib_mean, args.calib_std) if args.calib else None
    verify_inputs = None if calib is None else [a[:8] for a in calib]
    reports = []
    try:
        if args.tflite:
            logger.info("Converting to TFLite (%s) ...", args.quantize or "float32")
            reports.append(export_tflite(
                model, args.tflite, quantize=args.quantize,
                representative_data=calib, int8_io=args.int8_io or False,
                verify=not args.no_verify, sample_inputs=verify_inputs,
                fold_bn=not args.no_fold_bn, num_calibration_samples=args.calib_count))
        if args.onnx:
            logger.info("Converting to ONNX (opset %d) ...", args.opset)
            reports.append(export_onnx(
                model, args.onnx, opset=args.opset, nchw_input=args.nchw,
                verify=not args.no_verify, sample_inputs=verify_inputs,
                fold_bn=not args.no_fold_bn))
    except ExportError as err:
        raise CliError(str(err), EXIT_EXPORT) from err
    except ImportError as err:
        raise CliError(str(err), EXIT_EXPORT) from err
    except (TypeError, ValueError) as err:
        raise CliError(f"cannot export model {model.name!r}: {err}", EXIT_EXPORT) from err
    finally:
        if reports:  # print what was written even if a later export failed
            print("\n\n".join(str(r) for r in reports))
    if args.json:
        _write_json(args.json, [r.to_dict() for r in reports])
    return EXIT_OK


def load_calibration(source: str, model: Any, count: int, scale: str = "unit",
                     mean: Sequence[float] | None = None,
                     std: Sequence[float] | None = None) -> list[np.ndarray]:
    """Calibration inputs for `model` as arrays in `model.inputs` order.

    `source` is a `.npy` file (single-input models), a `.npz` file (one array,
    or one array per input name) used as stored, or a directory of images.
    Images (searched recursively, sorted by path) are converted to RGB (or
    grayscale for a 1-channel input), resized bilinearly to the input's height
    and width, scaled per `scale` ("unit": /255 -> [0, 1]; "signed": /127.5 - 1
    -> [-1, 1]; "raw": 0..255) and then normalised with `mean`/`std`.
    At most `count` samples are returned.

    Raises:
        CliError (code 2): unreadable source, or arrays/images that do not fit
        the model's inputs.
    """
    shapes = [tuple(t.shape) for t in model.inputs]
    names = [_input_name(t) for t in model.inputs]
    if os.path.isdir(source):
        if len(shapes) != 1:
            raise CliError(f"--calib {source!r}: a directory of images only works for a "
                           f"single-input model; this one has inputs {names}. Pass a .npz "
                           "with one array per input name")
        arrays = [_load_images(source, shapes[0], count, scale, mean, std)]
    else:
        if mean or std or scale != "unit":
            raise CliError("--calib-scale/--calib-mean/--calib-std apply to image directories; "
                           ".npy/.npz arrays are used as stored (preprocess them before saving)")
        arrays = _load_arrays(source, names)
    fitted = []
    for name, shape, arr in zip(names, shapes, arrays):
        if arr.ndim == len(shape) - 1:
            arr = arr[None]
        if arr.ndim != len(shape) or any(s is not None and s != a
                                         for s, a in zip(shape[1:], arr.shape[1:])):
            raise CliError(f"--calib {source!r}: array for input {name!r} has shape "
                           f"{arr.shape}, the model wants (N,) + {tuple(shape[1:])}")
        if not np.issubdtype(arr.dtype, np.number):
            raise CliError(f"--calib {source!r}: array for input {name!r} has dtype "
                           f"{arr.dtype}, expected numbers")
        fitted.append(np.asarray(arr[:count], dtype=np.float32))
    if len({len(a) for a in fitted}) != 1 or len(fitted[0]) == 0:
        raise CliError(f"--calib {source!r}: expected the same number (>= 1) of samples for "
                       f"every input, got {[len(a) for a in fitted]}")
    logger.info("Calibration: %d sample(s) from %s", len(fitted[0]), source)
    return fitted


def _input_name(tensor: Any) -> str:
    from keras_slim import _keras

    return _keras.input_name(tensor) or getattr(tensor, "name", "input")


def _load_arrays(path: str, names: Sequence[str]) -> list[np.ndarray]:
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as err:
        raise CliError(f"--calib {path!r}: cannot read it as a numpy file "
                       f"({type(err).__name__}: {err})") from err
    if isinstance(data, np.ndarray):
        if len(names) != 1:
            raise CliError(f"--calib {path!r}: one array for a model with inputs {names}; "
                           "save a .npz with one array per input name (np.savez(path, "
                           "name=array, ...))")
        return [data]
    with data:
        keys = list(data.files)
        if len(keys) == 1 and len(names) == 1:
            return [data[keys[0]]]
        missing = [n for n in names if n not in keys]
        if missing:
            raise CliError(f"--calib {path!r} holds arrays {keys}; expected one per model "
                           f"input named {names} (missing {missing})")
        return [data[n] for n in names]


def _load_images(directory: str, shape: tuple, count: int, scale: str,
                 mean: Sequence[float] | None, std: Sequence[float] | None) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError as err:
        raise CliError("--calib with a directory of images needs Pillow: "
                       "pip install 'keras-slim[data]' (or pip install pillow)") from err
    if len(shape) != 4:
        raise CliError(f"--calib {directory!r}: images need a model input of shape "
                       f"(N, H, W, C), this one is {shape}")
    height, width, channels = shape[1:]
    if height is None or width is None:
        raise CliError(f"--calib {directory!r}: the model's input size {shape} is not fixed, "
                       "so images cannot be resized for it; save the calibration inputs as a "
                       ".npy file instead")
    if channels not in (1, 3):
        raise CliError(f"--calib {directory!r}: images give 1 or 3 channels, the model wants "
                       f"{channels}; save the calibration inputs as a .npy file instead")
    files = sorted(os.path.join(root, f) for root, _, fs in os.walk(directory) for f in fs
                   if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS)
    if not files:
        raise CliError(f"--calib {directory!r}: no images found (looked for "
                       f"{', '.join(IMAGE_EXTENSIONS)} files, recursively)")
    images = []
    for path in files[:count]:
        try:
            with Image.open(path) as img:
                img = img.convert("RGB" if channels == 3 else "L")
                img = img.resize((int(width), int(height)), Image.BILINEAR)
                arr = np.asarray(img, dtype=np.float32)
        except Exception as err:
            raise CliError(f"--calib: cannot read image {path!r} ({type(err).__name__}: "
                           f"{err})") from err
        images.append(arr.reshape(int(height), int(width), channels))
    x = np.stack(images)
    x = {"unit": x / 255.0, "signed": x / 127.5 - 1.0, "raw": x}[scale]
    for values, option in ((mean, "--calib-mean"), (std, "--calib-std")):
        if values is not None and len(values) not in (1, channels):
            raise CliError(f"{option} takes 1 or {channels} value(s) for this model, got "
                           f"{len(values)}")
    if mean:
        x = x - np.asarray(mean, np.float32)
    if std:
        if any(s == 0 for s in std):
            raise CliError(f"--calib-std must not contain 0, got {list(std)}")
        x = x / np.asarray(std, np.float32)
    return x.astype(np.float32)


# ---------------------------------------------------------------- bench
def cmd_bench(args: argparse.Namespace) -> int:
    """`keras-slim bench`: latency of several files side by side."""
    from keras_slim.export import benchmark_onnx, benchmark_tflite

    for path in args.files:
        _check_input_file(path, (".tflite", ".onnx"), "model")
    _check_json_path(args.json, "--json")
    benches: dict[str, Callable[..., Any]] = {".tflite": benchmark_tflite,
                                              ".onnx": benchmark_onnx}
    results: dict[tuple[str, int], Any] = {}
    for threads in args.threads:  # every file at one thread count, then the next
        for path in args.files:
            logger.info("Timing %s with %d thread(s) ...", path, threads)
            bench = benches[os.path.splitext(path)[1].lower()]
            try:
                results[path, threads] = bench(path, threads=threads, runs=args.runs,
                                               warmup=args.warmup)
            except ImportError as err:
                raise CliError(str(err), EXIT_EXPORT) from err
            except Exception as err:
                raise CliError(f"cannot run {path!r} ({type(err).__name__}): "
                               f"{_one_line(str(err), 600)}", EXIT_EXPORT) from err

    first = args.files[0]
    header = ["file", "runtime", "size"]
    for t in args.threads:
        header += [f"{t}T median ms", f"{t}T p90 ms", f"{t}T speed-up"]
    rows = []
    for path in args.files:
        row = [path, results[path, args.threads[0]].runtime, _fmt_bytes(os.path.getsize(path))]
        for t in args.threads:
            r = results[path, t]
            row += [f"{r.median_ms:.3f}", f"{r.p90_ms:.3f}",
                    f"{results[first, t].median_ms / r.median_ms:.2f}x"]
        rows.append(row)
    print(_table(header, rows, right=range(2, len(header))))
    print(f"\nbatch 1, {args.runs} runs after {args.warmup} warm-up; speed-up = median of "
          f"{first} / median of the file; LiteRT with XNNPACK, onnxruntime CPU")
    if args.json:
        _write_json(args.json, [dict(r.to_dict(), size_bytes=os.path.getsize(p))
                                for (p, _), r in results.items()])
    return EXIT_OK


def _fmt_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    return f"{n / 1024:.1f} KiB" if n < 1024 ** 2 else f"{n / 1024 ** 2:.2f} MiB"


if __name__ == "__main__":
    sys.exit(main())
