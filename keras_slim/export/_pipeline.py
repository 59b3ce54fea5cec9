"""The tail every exporter shares: write atomically, verify, labelled check, report.

TFLite, ONNX and QAT export differ in how they convert; from the converted
bytes on they do the same thing, here: the file is written to a temp path
beside the target, opened in its runtime (which proves the runtime loads it),
compared with the reference model, optionally scored on labelled data, and
renamed onto the target only if all of that passed. A failure anywhere leaves
nothing at the target.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Protocol

import numpy as np

from keras_slim.export._atomic import atomic_file
from keras_slim.export._model_io import ModelInterface, labelled_check, verify_sizes
from keras_slim.export.report import ExportError, ExportReport, TensorInfo

logger = logging.getLogger(__name__)


class Runner(Protocol):
    """An exported file loaded in its runtime: flat inputs in, flat outputs out."""

    def __call__(self, flat: list[np.ndarray]) -> list[np.ndarray]: ...

    def io_infos(self) -> tuple[list[TensorInfo], list[TensorInfo]] | None:
        """(inputs, outputs) as the runtime sees them, or None if the exporter knows them."""


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """When verification fails, and how the failure is worded.

    The file fails if its error is not finite, or when `limit` is set and the
    relative error reaches it. The message reads "Verification failed:
    {differs} by E relative (max |diff| A), allowed < {limit}{allowed}.
    Nothing was written to PATH{tail}".
    """

    limit: float | None
    differs: str  # e.g. "the .onnx output differs from Keras"
    allowed: str = ""  # after the limit, e.g. " (float32)"
    tail: str = "."  # after the path: how to get past the check

    def check(self, report: ExportReport) -> None:
        rel = report.max_rel_error
        if np.isfinite(rel) and (self.limit is None or rel < self.limit):
            return
        sizes = ""
        if getattr(report, "input_size", None) == "dynamic" and np.isfinite(rel):
            sizes = (" The input size is dynamic, so it was checked at a default size "
                     "(224 per spatial axis unless given): float32 rounding grows with the "
                     "input; pass sample_inputs= at the size your app feeds.")
        raise ExportError(
            f"Verification failed: {self.differs} by {rel:.3g} relative (max |diff| "
            f"{report.max_abs_error:.3g}), allowed < {self.limit}{self.allowed}.{sizes} "
            f"Nothing was written to {report.path!r}{self.tail}")


def write_verified(
    buf: bytes,
    target: str,
    report: ExportReport,
    open_runner: Callable[[str], Runner],
    iface: ModelInterface,
    *,
    batch_size: int | None,
    samples: list[np.ndarray] | None,
    tolerance: Tolerance | None,
    labelled_data: Any = None,
    label_output: str | None = None,
) -> ExportReport:
    """Write `buf` to `target` only if the file passes its checks; fill `report`.

    Args:
        buf: the converted file.
        target: absolute path (checked with `check_output_path`).
        report: filled in place: I/O specs (when the runner reports them),
            verification errors and sizes, top-1 agreement and accuracies.
        open_runner: loads a path in the runtime (LiteRT, onnxruntime).
        iface: the reference model's interface; its outputs are the reference.
        batch_size: the file's static batch size (None: dynamic).
        samples: verification inputs; `tolerance` None skips verification.
        labelled_data: (x, y) for the labelled check, or None.

    Raises:
        ExportError: verification or the labelled check failed (no file left).
    """
    with atomic_file(target) as tmp:
        with open(tmp, "wb") as f:
            f.write(buf)
        runner = open_runner(tmp)
        infos = runner.io_infos()
        if infos is not None:
            report.inputs, report.outputs = infos
        if tolerance is not None:
            report.record_verification(verify_sizes(iface, runner, batch_size, samples))
            tolerance.check(report)
            logger.info("Verified on %d samples: max rel error %.3g.", len(samples[0]),
                        report.max_rel_error)
        if labelled_data is not None:
            (report.top1_agreement, report.keras_accuracy,
             report.exported_accuracy) = labelled_check(iface, runner, batch_size,
                                                        labelled_data, label_output)
        del runner  # release the file before the rename (matters on Windows)
    return report
