"""keras_slim's core runs on every Keras 3 backend and never imports TensorFlow itself.

Each check runs the core path (bn_l1/add_bn_l1 + fit with SparsityMonitor, plan, prune,
testing.check_exact, sensitivity, slim_multipass) in a fresh process on KERAS_BACKEND=jax
(and torch where it is installed), once with TensorFlow made unimportable, as on a machine
without it, and once as installed, reading `sys.modules`.

Why TensorFlow is blocked rather than only looked for: Keras 3 itself imports TensorFlow
whenever it is installed, on any backend (`serialization_lib.serialize_keras_object` asks
`tf.available` in every `get_config`, `keras.utils.set_random_seed` seeds it), so after a
prune it is in `sys.modules` because of Keras. The blocked run proves keras_slim needs it
nowhere on the core path, and that export says so (MissingDependencyError) instead of
failing deep inside the converter.

The JAX checks are strict in CI (the test extra installs jax[cpu]); torch is not in the
test extra (a CPU wheel is not on every index CI can reach), so its checks skip without it.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Run in the child. `BLOCK` makes these imports fail as if the packages were not installed.
_CHILD = r"""
import json, sys, warnings

BLOCK = {block!r}


for name in BLOCK:  # what Python does for a package that is not installed:
    sys.modules[name] = None  # import raises ModuleNotFoundError, find_spec returns None
TF = ("tensorflow", "tf_keras", "tensorflow_model_optimization")
loaded = lambda: sorted({{m.split(".")[0] for m, mod in sys.modules.items() if mod is not None}}
                        & set(TF))
seen = {{}}

import numpy as np
import keras_slim
seen["import keras_slim"] = loaded()
import keras_slim.export, keras_slim.training, keras_slim.testing  # noqa: E401
seen["import export, training, testing"] = loaded()
if {imports_only!r}:
    print("RESULT " + json.dumps({{"seen": seen}}))
    sys.exit(0)

import keras
from keras import layers
from keras_slim import testing
from keras_slim.training import SparsityMonitor, slim_multipass

assert keras.backend.backend() == {backend!r}, keras.backend.backend()


def residual():
    inp = keras.Input((8, 8, 3))
    x = layers.Conv2D(8, 3, padding="same", use_bias=False)(inp)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    y = layers.Conv2D(8, 3, padding="same", use_bias=False)(x)
    y = layers.BatchNormalization(gamma_regularizer=keras_slim.bn_l1(1e-3))(y)
    x = layers.ReLU()(layers.Add()([x, y]))
    x = layers.Conv2D(12, 1, use_bias=False)(x)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    out = layers.Dense(3)(layers.GlobalAveragePooling2D()(x))
    return keras.Model(inp, out)


rng = np.random.default_rng(0)
x = rng.normal(size=(32, 8, 8, 3)).astype("float32")
y = rng.integers(0, 3, size=32)
model = residual()
keras_slim.add_bn_l1(model, 1e-3)
model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
monitor = SparsityMonitor()
model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[monitor])
assert len(monitor.history) == 1 and len(model.losses) == 3, (monitor.history, model.losses)
seen["add_bn_l1 + fit + SparsityMonitor"] = loaded()

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    plan = keras_slim.plan(model, 0.5)
    small = keras_slim.prune(model, plan)
    assert small.count_params() < model.count_params()
    small.fit(x, y, epochs=1, batch_size=16, verbose=0)  # the compile config came along
    seen["plan + prune + fit"] = loaded()
    for constants in (False, True):
        diff, cplan, _ = testing.check_exact(residual(), 0.4, seed=1, constants=constants)
        assert diff < 1e-4 and cplan.removed_channels > 0, (constants, diff)
    seen["testing.check_exact"] = loaded()

    evaluate = lambda m: -float(np.abs(keras.ops.convert_to_numpy(m(x[:4], training=False))).mean())
    result = keras_slim.sensitivity(model, evaluate, ratios=(0.25, 0.5), verbose=0)
    assert result.group_ratios(max_metric_drop=1e9)
    seen["sensitivity"] = loaded()
    multi = slim_multipass(model, target_ratio=0.5, per_pass_ratio=0.3,
                           fit_kwargs=dict(x=x, y=y, epochs=1, batch_size=16, verbose=0))
    assert multi.passes, multi
    seen["training.slim_multipass"] = loaded()

export_error = None
if BLOCK:
    try:
        keras_slim.export_tflite(small, "never_written.tflite")
    except keras_slim.MissingDependencyError as err:
        export_error = str(err)
print("RESULT " + json.dumps({{"seen": seen, "export_error": export_error}}))
"""


def _run_core_path(backend: str, block: tuple, imports_only: bool = False) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    script = textwrap.dedent(_CHILD).format(block=tuple(block), backend=backend,
                                            imports_only=imports_only)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=600, cwd=ROOT, env=env)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        raise AssertionError(f"core path on {backend} (blocked: {block}) failed:\n"
                             f"{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def _need(backend: str) -> None:
    if backend == "jax":
        pytest.importorskip("jax", reason="jax is not installed: pip install 'jax[cpu]' "
                            "(the test extra installs it; CI fails without it)")
    elif importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed (not in the test extra): "
                    f"pip install {backend} to run the {backend} checks")


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_core_path_runs_without_tensorflow(backend):
    """TensorFlow unimportable: the whole core path works, and export names what is missing."""
    _need(backend)
    result = _run_core_path(backend, block=("tensorflow", "tf_keras",
                                            "tensorflow_model_optimization"))
    assert all(mods == [] for mods in result["seen"].values()), result["seen"]
    err = result["export_error"]
    assert err is not None, "export_tflite without TensorFlow did not raise MissingDependencyError"
    assert "tensorflow" in err and "keras-slim[export]" in err, err


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_import_does_not_load_tensorflow(backend):
    """TensorFlow installed: importing keras_slim (export and training too) leaves it alone.

    After a prune it may be loaded, by Keras' own serialization (see the module docstring);
    the run with TensorFlow blocked is what proves keras_slim does not need it there.
    """
    _need(backend)
    seen = _run_core_path(backend, block=(), imports_only=True)["seen"]
    assert seen["import keras_slim"] == [], seen
    assert seen["import export, training, testing"] == [], seen


def test_no_backend_installed_says_what_to_install():
    """TensorFlow is an extra: with Keras set to it and TF absent, the import error says how
    to fix it instead of Keras' bare "No module named 'tensorflow'"."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(KERAS_BACKEND="tensorflow", PYTHONPATH=ROOT)
    script = ("import sys\nsys.modules['tensorflow'] = None\n"
              "try:\n    import keras_slim\n"
              "except ImportError as err:\n    print(type(err).__name__, err)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300, cwd=ROOT, env=env)
    assert out.stdout.startswith("MissingDependencyError"), out.stdout + out.stderr
    for part in ("KERAS_BACKEND=tensorflow", "keras-slim[tensorflow]", "keras-slim[jax]"):
        assert part in out.stdout, out.stdout


_EXPORT_CHILD = r"""
import json, os, sys, tempfile, warnings
import keras, keras_slim
from keras import layers
from keras_slim.export import export_onnx

inp = keras.Input((8, 8, 3))
x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(8, 3, padding="same")(inp)))
model = keras.Model(inp, layers.Dense(3)(layers.GlobalAveragePooling2D()(x)))
keras_slim.testing.randomize_batchnorm(model, 0)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    small = keras_slim.prune(model, 0.5)
out, folder = {}, tempfile.mkdtemp()
for name, fn in (("tflite", keras_slim.export_tflite), ("onnx", export_onnx)):
    try:
        report = fn(small, os.path.join(folder, "m." + name))
        out[name] = "ok: max error %g" % report.max_abs_error
    except keras_slim.MissingDependencyError as err:
        out[name] = "MissingDependencyError: " + str(err)
print("RESULT " + json.dumps(out))
"""


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_export_on_other_backends_works_or_says_which_backend(backend):
    """TFLite export works on JAX (Keras' ExportArchive goes through jax2tf); where a
    converter has no route (ONNX on JAX, anything on torch) the error says what to run."""
    _need(backend)
    pytest.importorskip("ai_edge_litert")
    pytest.importorskip("tf2onnx")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-c", _EXPORT_CHILD], capture_output=True, text=True,
                         timeout=600, cwd=ROOT, env=env)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    assert out.returncode == 0 and lines, out.stdout[-2000:] + out.stderr[-4000:]
    result = json.loads(lines[-1][len("RESULT "):])
    if backend == "jax":
        assert result["tflite"].startswith("ok"), result
    unsupported = ["onnx"] if backend == "jax" else ["tflite", "onnx"]
    for fmt in unsupported:
        msg = result[fmt]
        assert msg.startswith("MissingDependencyError"), result
        assert f"'{backend}' backend" in msg and "KERAS_BACKEND=tensorflow" in msg, msg
