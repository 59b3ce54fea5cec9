"""What the ncnn and MNN exporters share: the tools, the verified ONNX file, the runtime child.

Both convert the ONNX file `export_onnx(..., nchw_input=True)` writes and has
verified against Keras (ncnn and MNN compute channels-first). Neither tool is
imported here: `import pnnx` imports torch (its wheel declares it, converting
ONNX does not need it: the converter is the native executable inside the
package), and `import MNN` prints to stdout from C++. The tools are located
with `importlib.util.find_spec` and run as child processes; the runtimes run
in `_runtime_child.py`, so that a crash in them becomes an ExportError.
"""
from __future__ import annotations

import importlib.util
import os
import pickle
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import weakref
from typing import Any

import numpy as np

from keras_slim.errors import ArgumentError, MissingDependencyError
from keras_slim.export._model_io import (
    ModelInterface, as_flat_inputs, describe_model, random_inputs,
)
from keras_slim.export.report import ExportError

FLOAT32_TOLERANCE = 1e-4
_CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_runtime_child.py")


def package_dir(module: str, purpose: str, install: str) -> str:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None:
        raise MissingDependencyError(f"{purpose} needs the '{module}' package, which is not "
                                     f"installed. Install it with: {install}")
    where = spec.submodule_search_locations
    return list(where)[0] if where else os.path.dirname(spec.origin)


def pnnx_executable() -> str:
    """The pnnx converter binary shipped in the `pnnx` wheel (no torch needed to run it)."""
    folder = package_dir("pnnx", "ncnn export (ONNX -> ncnn with pnnx)",
                         "pip install --no-deps pnnx  (the wheel declares torch, which "
                         "converting ONNX does not use)")
    path = os.path.join(folder, "pnnx.exe" if os.name == "nt" else "pnnx")
    if not os.path.isfile(path):
        raise MissingDependencyError(f"The pnnx package at {folder!r} has no converter "
                                     f"executable {os.path.basename(path)!r}; reinstall it "
                                     "(pip install --force-reinstall --no-deps pnnx).")
    return path


def require_runtime(runtime: str) -> None:
    """MissingDependencyError unless the ncnn / MNN Python runtime is installed."""
    if runtime == "ncnn":
        package_dir("ncnn", "Running an ncnn model", "pip install 'keras-slim[ncnn]'")
    else:
        package_dir("MNN", "Running an MNN model", "pip install 'keras-slim[mnn]'")


def start(model: Any, fmt: str, quantize: str | None, modes: tuple, unsupported: dict[str, str],
          tolerance: float | None, num_verify_samples: int, sample_inputs: Any
          ) -> tuple[float | None, ModelInterface, list[np.ndarray]]:
    """Shared first steps: backend and argument checks, the interface, verification samples.

    Returns (the tolerance limit: the user's, else 1e-4 for float32 and none
    for quantized files; the model's interface; the samples).
    """
    from keras_slim.export import _deps

    _deps.keras_backend(f"{fmt} export (through ONNX, which tf2onnx traces from TensorFlow)",
                        ("tensorflow",))
    if quantize in unsupported:
        raise ArgumentError(f"quantize={quantize!r} is not available for {fmt}: "
                            f"{unsupported[quantize]}")
    if quantize not in modes:
        raise ArgumentError(f"quantize={quantize!r} is not supported for {fmt}; use one of "
                            f"{list(modes)}.")
    if tolerance is not None and not tolerance > 0:
        raise ArgumentError(f"tolerance must be > 0 or None, got {tolerance!r}.")
    if not isinstance(num_verify_samples, int) or num_verify_samples < 1:
        raise ArgumentError(f"num_verify_samples must be a positive int, got "
                            f"{num_verify_samples!r}.")
    limit = tolerance if tolerance is not None else (
        FLOAT32_TOLERANCE if quantize is None else None)
    iface = describe_model(model)
    samples = (as_flat_inputs(sample_inputs, iface, "sample_inputs") if sample_inputs is not None
               else random_inputs(iface, num_verify_samples))
    return limit, iface, samples


def verified_onnx(model: Any, directory: str, samples: list[np.ndarray], *, opset: int,
                  fold_bn: bool, verify: bool, fmt: str):
    """`export_onnx(..., nchw_input=True)` into `directory`; (path, report, proto)."""
    from keras_slim.export import _deps
    from keras_slim.export.onnx import export_onnx

    path = os.path.join(directory, "model.onnx")
    try:
        report = export_onnx(model, path, opset=opset, nchw_input=True, verify=verify,
                             sample_inputs=samples, fold_bn=fold_bn, batch_size=1)
    except ExportError as err:
        raise ExportError(f"{fmt} export goes through ONNX, and that step failed: {err}"
                          ) from err
    return path, report, _deps.onnx().load(path)


def onnx_shapes(values) -> list[tuple]:
    """Shapes of ONNX graph inputs/outputs (-1 where dynamic)."""
    return [tuple(d.dim_value if d.HasField("dim_value") else -1
                  for d in v.type.tensor_type.shape.dim) for v in values]


def tool_failure(tool: str, result: subprocess.CompletedProcess, hint: str) -> ExportError:
    """ExportError for a converter that failed or crashed, with the end of its log."""
    how = _exit_text(result.returncode)
    log = "\n".join((result.stdout or "").strip().splitlines()[-12:])
    return ExportError(f"{tool} {how} converting the model. {hint}\nLast lines of its output:\n"
                       f"{log}")


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"crashed ({signal.Signals(-code).name})"
        except ValueError:
            return f"crashed (signal {-code})"
    return f"failed (exit code {code})"


class RuntimeProcess:
    """The ncnn or MNN runtime in a child process (see `_runtime_child.py`).

    `info` is the child's answer to opening the file. A child that dies
    (a segfault in the runtime) or answers an error raises ExportError
    naming `what`, with the end of what the child printed.
    """

    # a runtime that hangs (rather than crashing) must not block the export forever
    timeout_s = 600.0

    def __init__(self, spec: dict, what: str):
        self._what = what
        self._log = tempfile.TemporaryFile()
        with open(_CHILD, encoding="utf-8") as f:
            source = f.read()
        self._proc = subprocess.Popen([sys.executable, "-c", source], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=self._log)
        self._finalizer = weakref.finalize(self, _stop, self._proc, self._log)
        try:
            self.info = self.request("open", spec)
        except BaseException:
            self._finalizer()
            raise

    def request(self, kind: str, payload: Any) -> Any:
        data = pickle.dumps((kind, payload), protocol=pickle.HIGHEST_PROTOCOL)
        reply = None
        hung = threading.Event()

        def stop_hung_child():
            hung.set()
            self._proc.kill()

        watchdog = threading.Timer(self.timeout_s, stop_hung_child)
        watchdog.daemon = True
        watchdog.start()
        try:
            self._proc.stdin.write(struct.pack("<Q", len(data)) + data)
            self._proc.stdin.flush()
            head = self._proc.stdout.read(8)
            if len(head) == 8:
                reply = pickle.loads(self._proc.stdout.read(struct.unpack("<Q", head)[0]))
        except OSError:  # the child is gone: a broken pipe
            pass
        finally:
            watchdog.cancel()
        if hung.is_set():
            self._proc.wait()
            raise ExportError(f"{self._what} did not answer within {self.timeout_s:g} s "
                              f"while asked to {kind} the file (it hangs); it was stopped."
                              f"{self._tail()}")
        if reply is None:
            try:
                code = self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                code = self._proc.wait()
            raise ExportError(f"{self._what} {_exit_text(code)} while asked to {kind} "
                              f"the file.{self._tail()}")
        status, value = reply
        if status != "ok":
            raise ExportError(f"{self._what} failed to {kind} the file: {value}{self._tail()}")
        return value

    def _tail(self) -> str:
        self._log.seek(0)
        text = self._log.read().decode("utf-8", "replace").strip()
        lines = [line for line in text.splitlines() if "The device supports" not in line]
        return ("\nIts output:\n" + "\n".join(lines[-12:])) if lines else ""

    def close(self) -> None:
        self._finalizer()


def _stop(proc: subprocess.Popen, log) -> None:
    try:
        if proc.poll() is None:
            data = pickle.dumps(("close", None))
            proc.stdin.write(struct.pack("<Q", len(data)) + data)
            proc.stdin.close()
            proc.wait(timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        proc.kill()
        proc.wait()
    finally:
        for stream in (proc.stdin, proc.stdout):
            try:
                stream.close()
            except OSError:  # unflushed bytes for a child that is gone
                pass
        log.close()


class ChildRunner:
    """A file open in `RuntimeProcess`, fed Keras-layout samples at batch 1 (a pipeline Runner).

    Inputs of rank >= 3 are transposed to channels-first (the ONNX file's
    layout); ncnn takes no batch axis (`batch_axis=False`), so it is dropped
    going in and restored coming out. Outputs are reshaped to the ONNX
    file's output shapes (Keras' layout) where those are static.
    """

    def __init__(self, process: RuntimeProcess, out_shapes: list[tuple], batch_axis: bool):
        self.process = process
        self._out_shapes = out_shapes
        self._batch_axis = batch_axis

    def __call__(self, flat: list[np.ndarray]) -> list[np.ndarray]:
        arrays = []
        for x in flat:
            if x.ndim >= 3:
                x = np.transpose(x, (0, x.ndim - 1) + tuple(range(1, x.ndim - 1)))
            arrays.append(np.ascontiguousarray(x if self._batch_axis else x[0], np.float32))
        outs = self.process.request("run", arrays)
        result = []
        for out, shape in zip(outs, self._out_shapes):
            full = out if self._batch_axis else out[None]
            if all(d > 0 for d in shape) and int(np.prod(shape)) == full.size:
                full = full.reshape(shape)
            result.append(full)
        return result

    def io_infos(self) -> None:
        """None: the exporter reads the I/O specs off the ONNX graph."""
        return None


def graph_inputs(proto) -> list:
    """The ONNX graph's real inputs (initializers listed as inputs left out)."""
    initializers = {i.name for i in proto.graph.initializer}
    return [v for v in proto.graph.input if v.name not in initializers]


def output_directory(out_dir: Any) -> tuple[str, bool]:
    """(absolute folder, whether it was created here); parents must exist."""
    if not isinstance(out_dir, (str, os.PathLike)):
        raise ArgumentError(f"out_dir must be a folder path (str or os.PathLike), got "
                            f"{type(out_dir).__name__}: {out_dir!r}")
    folder = os.path.abspath(os.fspath(out_dir))
    if os.path.isdir(folder):
        return folder, False
    if os.path.exists(folder):
        raise ExportError(f"out_dir {os.fspath(out_dir)!r} is a file; pass a folder (it is "
                          "created if missing).")
    if not os.path.isdir(os.path.dirname(folder)):
        raise ExportError(f"The parent of out_dir {os.fspath(out_dir)!r} does not exist; "
                          "create it first.")
    os.mkdir(folder)
    return folder, True
