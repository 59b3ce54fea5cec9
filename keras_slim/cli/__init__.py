"""The ``keras-slim`` command line: inspect, prune, export and benchmark models.

::

    keras-slim inspect model.keras [--ratios 0.3 0.5 0.7] [--json out.json]
    keras-slim prune model.keras --ratio 0.5 [--round-to 8] -o small.keras [--plan-json plan.json]
    keras-slim prune model.keras --target-macs 0.5 --round-to auto -o small.keras
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

Modules: `parser` (arguments and value parsers), `loading` (model files),
`output` (exit codes, error lines, tables, JSON, logging to stderr),
`plan_options` (what inspect and prune share), and one module per command
(`inspect`, `prune`, `export`, `bench`), each with a `run(args)`. Calibration
files are read by `keras_slim.export.load_calibration`.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

# TensorFlow's C++ start-up logs can only be hidden before TF is first imported:
# TF reads TF_CPP_MIN_LOG_LEVEL once, and since TF 2.19 its libraries log some
# lines through absl while they load, whatever that variable says.
from keras_slim._quiet import _silence_tf_logs, _tf_logs_wanted  # noqa: F401
from keras_slim.cli.loading import import_module, load_model
from keras_slim.cli.output import (  # noqa: F401  (exit codes are part of the CLI's API)
    EXIT_EXPORT, EXIT_INTERRUPTED, EXIT_OK, EXIT_UNSUPPORTED, EXIT_USAGE, fail,
    logging_to_stderr, warnings_to_log,
)
from keras_slim.cli.parser import build_parser
from keras_slim.errors import CliError

__all__ = ["main", "build_parser", "load_model", "EXIT_OK", "EXIT_USAGE", "EXIT_UNSUPPORTED",
           "EXIT_EXPORT", "EXIT_INTERRUPTED"]


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
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        with logging_to_stderr(args.verbose, args.quiet), warnings_to_log():
            for module in args.imports:
                import_module(module)
            return args.func(args)
    except CliError as err:
        return fail(args, err, err.code)
    except KeyboardInterrupt:
        print("keras-slim: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:  # a bug or an unforeseen library error
        return fail(args, err, 1, unexpected=True)
