"""The ncnn / MNN runtime, run in a child Python process (stdlib, NumPy and the runtime only).

Why a child: a file that a converter got wrong can crash the runtime itself
(ncnn segfaults on the Crop that pnnx writes for a channel Gather), and a
crash must become an ExportError with nothing written, not kill the user's
Python. MNN also prints to the process's stdout from C++ at import. So
`keras_slim.export._mobile` starts this file as `python -c <its source>`
(never `-m`: that would import keras_slim, hence Keras and TensorFlow, into
the child) and talks to it over stdin/stdout: each message is an 8-byte
little-endian length and a pickle (both ends are this package; nothing
untrusted is unpickled). Replies are ("ok", value) or ("error", text).

Requests: ("open", spec), then any number of ("run", [arrays]) and
("bench", {"runs", "warmup", "shapes"}), then ("close", None).
"""
import os
import sys

if __name__ == "__main__" and sys.path and sys.path[0] in ("", os.getcwd()):
    sys.path.pop(0)  # `python -c` puts the working directory first: never import from there

import pickle  # noqa: E402
import struct  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

import numpy as np  # noqa: E402


def _read(stream):
    head = stream.read(8)
    if len(head) < 8:
        return None
    (size,) = struct.unpack("<Q", head)
    return pickle.loads(stream.read(size))


def _write(stream, message):
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


class Ncnn:
    """An ncnn.Net with explicit options; arrays in and out carry no batch axis."""

    def __init__(self, spec):
        import ncnn

        self._ncnn = ncnn
        self.net = ncnn.Net()
        opt = self.net.opt
        if not spec["fp16"]:  # ncnn's defaults store (and on ARMv8.2 compute) in fp16
            opt.use_fp16_storage = opt.use_fp16_packed = opt.use_fp16_arithmetic = False
            opt.use_bf16_storage = False
        opt.num_threads = spec["threads"]
        self.unknown = sorted({line.split()[0] for line in _param_layers(spec["param"])
                               if ncnn.layer_to_index(line.split()[0]) < 0})
        if self.unknown:
            return
        if self.net.load_param(spec["param"]) != 0:
            raise RuntimeError(f"ncnn could not load {spec['param']!r}")
        if self.net.load_model(spec["bin"]) != 0:
            raise RuntimeError(f"ncnn could not load {spec['bin']!r}")
        self.inputs = spec.get("inputs") or list(self.net.input_names())
        self.outputs = spec.get("outputs") or list(self.net.output_names())
        missing = sorted(set(self.inputs) - set(self.net.input_names())
                         | set(self.outputs) - set(self.net.output_names()))
        if missing:
            raise RuntimeError(f"the .param file has no blob {missing} (inputs "
                               f"{list(self.net.input_names())}, outputs "
                               f"{list(self.net.output_names())})")
        self.options = {k: bool(getattr(opt, k)) for k in (
            "use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic", "use_bf16_storage",
            "use_packing_layout")}

    def info(self):
        if self.unknown:
            return {"unknown_layers": self.unknown}
        return {"unknown_layers": [], "inputs": self.inputs, "outputs": self.outputs,
                "options": self.options}

    def run(self, arrays):
        keep = [np.ascontiguousarray(a, dtype=np.float32) for a in arrays]  # Mat borrows them
        ex = self.net.create_extractor()
        for name, a in zip(self.inputs, keep):
            ex.input(name, self._ncnn.Mat(a))
        outs = []
        for name in self.outputs:
            ret, mat = ex.extract(name)
            if ret != 0:
                raise RuntimeError(f"ncnn could not compute blob {name!r} (code {ret})")
            outs.append(np.array(mat, dtype=np.float32, copy=True))
        return outs


class Mnn:
    """An MNN Module loaded with the given input/output names, CPU backend."""

    def __init__(self, spec):
        import MNN.expr as F
        import MNN.nn as nn

        self._F = F
        config = {"backend": "CPU", "numThread": spec["threads"], "precision": spec["precision"]}
        manager = nn.create_runtime_manager((config,))
        names = nn.load_module_from_file(spec["path"], [], [], runtime_manager=manager).get_info()
        self.inputs = spec.get("inputs") or list(names["inputNames"])
        self.outputs = spec.get("outputs") or list(names["outputNames"])
        self.net = nn.load_module_from_file(spec["path"], self.inputs, self.outputs,
                                            runtime_manager=manager)
        self.shapes = [list(v.shape) for v in self.net.get_info()["inputs"]]

    def info(self):
        return {"unknown_layers": [], "inputs": self.inputs, "outputs": self.outputs,
                "shapes": self.shapes}

    def run(self, arrays):
        F = self._F
        feed = [F.const(np.ascontiguousarray(a, dtype=np.float32), list(a.shape), F.NCHW)
                for a in arrays]
        outs = self.net.forward(feed)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        return [np.array(F.convert(o, F.NCHW).read(), dtype=np.float32, copy=True)
                for o in outs]


def _param_layers(path):
    with open(path) as f:
        lines = [line for line in f.read().splitlines() if line.strip()]
    return lines[2:]  # magic number, "layers blobs", then one layer per line


def _bench(runtime, request):
    rng = np.random.default_rng(0)
    arrays = [rng.uniform(-1, 1, size=s).astype(np.float32) for s in request["shapes"]]
    for _ in range(request["warmup"]):
        runtime.run(arrays)
    times = []
    for _ in range(request["runs"]):
        start = time.perf_counter()
        runtime.run(arrays)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def main():
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever the runtimes print goes to stderr, never into the replies
    stream = sys.stdin.buffer
    runtime = None
    while True:
        message = _read(stream)
        if message is None or message[0] == "close":
            return
        kind, payload = message
        try:
            if kind == "open":
                runtime = (Ncnn if payload["runtime"] == "ncnn" else Mnn)(payload)
                reply = runtime.info()
            elif kind == "run":
                reply = runtime.run(payload)
            elif kind == "bench":
                reply = _bench(runtime, payload)
            else:
                raise ValueError(f"unknown request {kind!r}")
            _write(out, ("ok", reply))
        except Exception as err:  # reported to the parent, which raises ExportError
            _write(out, ("error", f"{type(err).__name__}: {err}\n"
                                  + "".join(traceback.format_exc(limit=3))[-1500:]))


if __name__ == "__main__":
    main()
