"""The `keras-slim` argument parser: four subcommands and the value parsers
that turn a bad option into a one-line usage error (exit code 2)."""
from __future__ import annotations

import argparse

import numpy as np

from keras_slim.cli import bench, export, inspect, prune
from keras_slim.cli.output import EXIT_USAGE
from keras_slim.errors import CliError
from keras_slim.export.calibration import CALIB_SCALES

EPILOG = ("exit codes: 0 ok, 2 usage error (bad argument, missing/wrong file, --unsafe needed), "
          "3 unsupported model, 4 export/verification/benchmark failure, 1 internal error.")


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors become one-line `CliError`s instead of usage dumps."""

    def error(self, message: str):  # type: ignore[override]
        raise CliError(f"{message} (see '{self.prog} --help')", EXIT_USAGE)


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


def _budget(text: str) -> float:
    value = _float(text, "a budget")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a fraction in (0, 1] or a count > 1, "
                                         f"got {text!r}")
    return value


def _latency(text: str) -> float | str:
    """--target-latency-ms: milliseconds (1.5) or a share of the estimate ("60%")."""
    if text.strip().endswith("%"):
        share = _float(text.strip()[:-1], "a percentage")
        if not 0 < share <= 100:
            raise argparse.ArgumentTypeError(f"a share must be in (0%, 100%], got {text!r}")
        return text.strip()
    value = _float(text, "milliseconds")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be milliseconds > 0 (e.g. 1.5) or a share of "
                                         f"the unpruned estimate (e.g. 60%), got {text!r}")
    return value


def _non_negative(text: str) -> float:
    value = _float(text, "value")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def _non_negative_int(text: str) -> int:
    return _int_at_least(text, 0)


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number >= {low}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {low}, got {text}")
    return value


def _round_to(text: str) -> int | str:
    """--round-to: a whole number >= 1, or "auto" (the latency model's preferred multiple)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return _int_at_least(text, 1)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number >= 1 or 'auto', got {text!r}") from None


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

    parser = _Parser(prog="keras-slim", epilog=EPILOG,
                     description="Network Slimming for Keras: inspect BatchNormalization "
                                 "scaling factors, prune channels, export to TFLite/ONNX and "
                                 "benchmark.")
    parser.add_argument("--version", action="version", version=f"keras-slim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    # inspect
    p = sub.add_parser("inspect", parents=[common], epilog=EPILOG,
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
    add_plan_options(p)
    p.set_defaults(func=inspect.run)

    # prune
    p = sub.add_parser("prune", parents=[common], epilog=EPILOG,
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
    how.add_argument("--target-macs", type=_budget, metavar="M",
                     help="instead of --ratio: keep at most M MACs (a fraction in (0, 1] of "
                          "the model's, e.g. 0.5, or an absolute count)")
    how.add_argument("--target-params", type=_budget, metavar="P",
                     help="instead of --ratio: keep at most P parameters (fraction or count)")
    how.add_argument("--target-latency-ms", type=_latency, metavar="MS|N%",
                     help="instead of --ratio: an estimated LiteRT latency of at most MS "
                          "milliseconds, or N%% of the unpruned model's (per-layer latency "
                          "model measured once on this machine, cached)")
    p.add_argument("--allocation", choices=("score", "latency"), default="score",
                   help="with --target-latency-ms: cut channels by score alone (default) or by "
                        "score per estimated ms saved (latency: HALP's greedy knapsack)")
    p.add_argument("--latency-threads", type=_positive_int, default=1, metavar="N",
                   help="LiteRT threads the latency model (--target-latency-ms, --round-to "
                        "auto) is measured with (default 1)")
    p.add_argument("--latency-refresh", action="store_true",
                   help="time the latency model's probes again instead of reading them from "
                        "the cache (after a measurement on a busy machine: the log says so)")
    p.add_argument("-o", "--output", required=True, metavar="PATH",
                   help="where to save the pruned model (.keras, or legacy .h5)")
    p.add_argument("--plan-json", metavar="PATH", help="also write the plan as JSON to PATH")
    p.add_argument("--no-fold", action="store_true",
                   help="do not fold the constant act(beta) of removed channels into the next "
                        "layer's bias (prune(..., fold_constants=False))")
    p.add_argument("--full-table", action="store_true",
                   help="list every layer in the plan table (default: only changed layers)")
    add_plan_options(p)
    p.set_defaults(func=prune.run)

    # export
    p = sub.add_parser("export", parents=[common], epilog=EPILOG,
                       help="write verified .tflite, .onnx, ncnn and/or .mnn files",
                       description="Convert a model to LiteRT (.tflite), ONNX, ncnn "
                                   "(.ncnn.param + .ncnn.bin) and/or MNN (.mnn). Every file "
                                   "is run in its runtime and compared with Keras; float32 must "
                                   "match within 1e-4 relative or nothing is written (exit "
                                   "code 4).")
    p.add_argument("model", help="a .keras (or legacy .h5) model file")
    p.add_argument("--tflite", metavar="PATH", help="write a .tflite file to PATH")
    p.add_argument("--quantize", choices=["float16", "dynamic", "int8"],
                   help="quantization of the --tflite, --ncnn and --mnn files: float16 weights "
                        "(all three), dynamic (int8 weights; TFLite and MNN) or int8 (full "
                        "integer, TFLite only, needs --calib); default float32")
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
    p.add_argument("--ncnn", metavar="DIR",
                   help="write DIR/NAME.ncnn.param and NAME.ncnn.bin (NAME: the model file's "
                        "stem; DIR is created if missing); needs keras-slim[ncnn] and "
                        "`pip install --no-deps pnnx`")
    p.add_argument("--mnn", metavar="PATH", help="write an .mnn file to PATH (needs "
                                                 "keras-slim[mnn])")
    p.add_argument("--no-fold-bn", action="store_true",
                   help="keep BatchNormalization as separate ops (default: folded into convs)")
    p.add_argument("--for-threads", type=_positive_int, default=1, metavar="N",
                   help="TFLite/ONNX: the thread count the file will run at, which decides "
                        "where channel selections are sliced or absorbed into the layers "
                        "after them (default 1; only models with ChannelSelection differ)")
    p.add_argument("--no-verify", action="store_true",
                   help="write the files without running them against Keras")
    p.add_argument("--json", metavar="PATH", help="also write the export reports as JSON")
    p.set_defaults(func=export.run)

    # bench
    p = sub.add_parser("bench", parents=[common], epilog=EPILOG,
                       help="batch-1 latency of .tflite/.onnx/ncnn/.mnn files side by side",
                       description="Median and p90 latency of one inference at batch 1: LiteRT "
                                   "with XNNPACK for .tflite, onnxruntime CPU for .onnx, ncnn "
                                   "for .param (its .bin beside it), MNN for .mnn. Files are "
                                   "measured in turn for each thread count, so machine load "
                                   "affects all of them.")
    p.add_argument("files", nargs="+", metavar="FILE",
                   help=".tflite, .onnx, .param (ncnn) or .mnn files")
    p.add_argument("--threads", type=_positive_int, nargs="+", default=[1, 2], metavar="N",
                   help="thread counts (default: 1 2)")
    p.add_argument("--runs", type=_positive_int, default=50, help="timed runs (default 50)")
    p.add_argument("--warmup", type=_non_negative_int, default=10,
                   help="discarded warm-up runs (default 10)")
    p.add_argument("--json", metavar="PATH", help="also write the measurements as JSON")
    p.set_defaults(func=bench.run)
    return parser


def add_plan_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("plan options (as keras_slim.plan)")
    g.add_argument("--round-to", type=_round_to, default=1, metavar="N|auto",
                   help="keep channel counts at multiples of N (8 suits ARM SIMD, 32 x86 "
                        "AVX512); prune --round-to auto measures this machine's LiteRT width "
                        "curves (cached) and uses the step they prefer")
    g.add_argument("--min-channels", type=_positive_int, default=1, metavar="N",
                   help="fewest channels any layer keeps (default 1)")
    g.add_argument("--max-layer-ratio", type=_layer_ratio, metavar="R",
                   help="most any one layer may lose, in (0, 1]")
    g.add_argument("--exclude", nargs="+", default=[], metavar="NAME",
                   help="layers whose output channels must all stay")
    g.add_argument("--no-channel-selection", action="store_true",
                   help="do not prune BNs on shared tensors through a ChannelSelection "
                        "(it exports as slices of channel runs, reordered or absorbed into "
                        "the next layers where cheaper; measured about as fast as pruning "
                        "without it: compare with 'keras-slim bench')")
    g.add_argument("--group-reduction", choices=["mean", "max", "sum"], default="mean",
                   help="how coupled layers' scores combine into one (default mean)")
    g.add_argument("--criterion", choices=["bn_scale", "bn_scale_readers", "l1", "l2", "fpgm"],
                   default="bn_scale",
                   help="what ranks channels: BN |gamma| (default, the paper); "
                        "bn_scale_readers (|gamma| of every BN reading a channel, as "
                        "Torch-Pruning: also cuts residual streams read raw by shortcuts, not "
                        "exact there); or the l1/l2 norm of the filter creating each channel, "
                        "or fpgm (redundancy); filter criteria also prune models without BN")
    g.add_argument("--filter-removal", choices=["zero", "mean"], default="zero",
                   help="with a filter criterion, what a removed channel carries: zero (its "
                        "filter taken as zero; exact where it is) or mean (its BN's moving "
                        "mean, act(beta); closer before fine-tuning)")
    g.add_argument("--normalize", choices=["auto", "mean", "max", "none"], default="auto",
                   help="per-layer score normalisation before the global ranking (auto: none "
                        "for the bn_scale criteria, mean for filter criteria; with them, mean/max divide "
                        "each BN's |gamma| by that BN's mean/max)")
    g.add_argument("--input-shape", type=_shape, action="append", metavar="H,W,C",
                   help="input size MACs are counted at, without the batch axis, e.g. "
                        "224,224,3; repeat it once per input for multi-input models. It fills "
                        "the model's None axes (known ones must match). Default: the model's "
                        "own size, 224 for each None spatial axis")
