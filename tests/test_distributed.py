"""Sparsity training on several devices: `tf.distribute.MirroredStrategy` and JAX's
`keras.distribution.DataParallel`, on two virtual CPU devices.

One fresh process per backend (virtual devices must exist before TensorFlow initializes,
and `XLA_FLAGS=--xla_force_host_platform_device_count=2` before JAX is imported). Each
trains the same model from the same weights on the same data, global batch 16, plain SGD,
2 epochs of 3 steps, once on one device and once on two replicas, and reports:

* the signed BN gammas after training (they must agree to float tolerance);
* the loss and everything `SparsityMonitor` logged (the same);
* the last step of each epoch, whose sample weights are all 0: the data gradient is exactly
  0 and SGD moves each gamma by lr * lambda * sign(gamma), so the measured step over
  lr * lambda * sign(gamma) is 1 when the penalty is counted once per global step (2 if
  every replica added it in full, 0.5 if it were scaled down twice; with Keras' 1/N
  scaling of `model.losses` patched out this test measures 2.000);
* a model built and pruned under the strategy: its variables are distributed, it
  fine-tunes there and `export_tflite` writes and verifies it.

Why the penalty is counted once (Keras 3.15 source, read, not guessed): on TensorFlow each
replica's `train_step` computes its loss; the compiled loss is a mean over the replica's
batch multiplied by 1/num_replicas (`losses.loss.scale_loss_for_distribution`), and every
entry of `model.losses` (the `bn_l1` penalty is one) goes through
`TensorFlowTrainer._aggregate_additional_loss`, which scales it by 1/num_replicas too; the
optimizer then sums the replicas' gradients (`_all_reduce_sum_gradients`, ReduceOp.SUM).
So the penalty's gradient is num_replicas x (lambda sign(gamma) / num_replicas). That
scaling arrived in Keras 3.8 (keras-team/keras#20609); before it no loss was scaled and
every gradient, penalty and data alike, came out num_replicas times too large. On JAX,
DataParallel runs one jitted program over the global batch (inputs sharded on the batch
axis, variables replicated), so `model.losses` is computed once per step by construction.

What differs: Keras' BatchNormalization normalizes with each replica's own batch
statistics under MirroredStrategy unless `synchronized=True` (TensorFlow only; JAX refuses
the argument and always uses the global batch under DataParallel). The TensorFlow run
measures that difference too.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_CHILD = r"""
import contextlib, json, os, tempfile, warnings

BACKEND = os.environ["KERAS_BACKEND"]
if BACKEND == "tensorflow":
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    DEVICES = [d.name for d in tf.config.list_logical_devices("CPU")]
else:
    import jax
    DEVICES = jax.devices("cpu")
assert len(DEVICES) == 2, DEVICES

import numpy as np
import keras
from keras import layers
import keras_slim
from keras_slim.training import SparsityMonitor

LR, LAM, BATCH, EPOCHS = 0.1, 0.05, 16, 2
THRESHOLDS, RATIOS = (0.1, 0.3, 0.6), (0.5,)
EXPORT = {export!r}


def build(synchronized=False):
    kw = dict(synchronized=True) if synchronized else {{}}
    inp = keras.Input((6, 6, 3))
    x = layers.Conv2D(8, 3, padding="same", use_bias=False)(inp)
    x = layers.ReLU()(layers.BatchNormalization(**kw)(x))
    x = layers.Conv2D(8, 3, padding="same", use_bias=False)(x)
    x = layers.ReLU()(layers.BatchNormalization(**kw)(x))
    return keras.Model(inp, layers.Dense(3)(layers.GlobalAveragePooling2D()(x)))


def batch_norms(model):
    return [l for l in model.layers if isinstance(l, layers.BatchNormalization)]


def gammas(model):
    return np.concatenate([keras.ops.convert_to_numpy(l.gamma) for l in batch_norms(model)])


rng = np.random.default_rng(0)
x = rng.normal(size=(2 * BATCH, 6, 6, 3)).astype("float32")
y = rng.integers(0, 3, size=2 * BATCH)
keras.utils.set_random_seed(0)
reference = build()
for bn in batch_norms(reference):  # both signs, |gamma| in [0.05, 1]: 6 steps move it < 0.05
    n = bn.gamma.shape[0]
    bn.gamma.assign(rng.choice([-1.0, 1.0], n) * rng.uniform(0.05, 1.0, n))
W0 = reference.get_weights()


class GammaSteps(keras.callbacks.Callback):  # the signed gammas after every batch
    def __init__(self):
        super().__init__()
        self.seen = []

    def on_train_batch_end(self, batch, logs=None):
        self.seen.append(gammas(self.model))


# Each epoch: two batches of data, then one with every sample weight 0 (data gradient
# exactly 0, so that step is the penalty's alone).
X = np.concatenate([x, x[:BATCH]])
Y = np.concatenate([y, y[:BATCH]])
SW = np.concatenate([np.ones(2 * BATCH), np.zeros(BATCH)]).astype("float32")


def train(scope, synchronized=False):
    with scope():
        model = build(synchronized)
        model.set_weights(W0)
        keras_slim.add_bn_l1(model, LAM)
        model.compile(keras.optimizers.SGD(LR),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        monitor, steps = SparsityMonitor(thresholds=THRESHOLDS, ratios=RATIOS), GammaSteps()
        hist = model.fit(X, Y, sample_weight=SW, batch_size=BATCH, epochs=EPOCHS,
                         shuffle=False, verbose=0, callbacks=[monitor, steps])
    assert len(steps.seen) == 3 * EPOCHS, len(steps.seen)
    penalty = [(steps.seen[3 * e + 1] - steps.seen[3 * e + 2])
               / (LR * LAM * np.sign(steps.seen[3 * e + 1])) for e in range(EPOCHS)]
    records = [dict(channels=r["channels"], mean=r["mean"], min=r["min"], median=r["median"],
                    max=r["max"], counts=[int(c) for c in r["counts"]],
                    below=[r["below"][t] for t in THRESHOLDS],
                    threshold_at=[r["threshold_at"][q] for q in RATIOS],
                    mass_below=[r["mass_below"][q] for q in RATIOS]) for r in monitor.history]
    run = dict(gammas=gammas(model).tolist(), loss=hist.history["loss"], monitor=records,
               logs={{k: hist.history[k] for k in monitor.log_keys()}},
               penalty_step=[float(np.min(penalty)), float(np.max(penalty))])
    return model, run


def is_distributed(variable):
    if BACKEND == "tensorflow":
        return STRATEGY.extended.variable_created_in_scope(variable.value)
    return len(variable.value.sharding.device_set) == 2


def prune_under(scope, model):
    out = {{}}
    with scope(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = keras_slim.prune(model, 0.5)
        out["params"] = [model.count_params(), small.count_params()]
        out["all_distributed"] = all(is_distributed(v) for v in small.variables)
        if BACKEND == "tensorflow":  # fit runs on the model's strategy
            out["on_the_strategy"] = small.distribute_strategy is STRATEGY
        out["synchronized"] = [bool(l.synchronized) for l in batch_norms(small)]
        out["penalties"] = len(small.losses)
        before = [w.copy() for w in small.get_weights()]
        out["finetune_loss"] = small.fit(x, y, batch_size=BATCH, epochs=1, verbose=0,
                                         shuffle=False).history["loss"]
        out["weights_changed"] = any(not np.array_equal(a, b)
                                     for a, b in zip(before, small.get_weights()))
    if EXPORT:
        folder = tempfile.mkdtemp()
        report = keras_slim.export_tflite(small, os.path.join(folder, "small.tflite"))
        out["export_max_abs_error"] = report.max_abs_error
        out["export_size"] = os.path.getsize(os.path.join(folder, "small.tflite"))
    return out


result = {{"devices": [str(d) for d in DEVICES], "initial": gammas(reference).tolist()}}
if BACKEND == "tensorflow":
    STRATEGY = tf.distribute.MirroredStrategy(DEVICES)
    result["replicas"] = STRATEGY.num_replicas_in_sync
    result["one"] = train(contextlib.nullcontext)[1]
    model, result["two"] = train(STRATEGY.scope, synchronized=True)
    result["two_unsynchronized"] = train(STRATEGY.scope)[1]
    result["pruned"] = prune_under(STRATEGY.scope, model)
    # prune called outside the scope still builds the copy on the model's strategy
    result["pruned_outside"] = prune_under(contextlib.nullcontext, model)
else:
    result["one"] = train(contextlib.nullcontext)[1]
    distribution = keras.distribution.DataParallel(devices=DEVICES)
    keras.distribution.set_distribution(distribution)
    result["replicas"] = int(np.size(distribution.device_mesh.devices))
    result["data_layout"] = [str(a) for a in distribution.get_data_layout((BATCH, 6, 6, 3)).axes]
    model, result["two"] = train(contextlib.nullcontext)
    result["pruned"] = prune_under(contextlib.nullcontext, model)
print("RESULT " + json.dumps(result))
"""


def _start(backend: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT,
               CUDA_VISIBLE_DEVICES="", JAX_PLATFORMS="cpu")
    if backend == "jax":  # two host devices; -O0 as in CI's JAX pass (compiling dominates)
        env["XLA_FLAGS"] = " ".join(filter(None, [
            env.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=2",
            "--xla_backend_optimization_level=0"]))
    export = importlib.util.find_spec("ai_edge_litert") is not None
    script = textwrap.dedent(_CHILD).format(export=export)
    # files, not pipes: a child waiting for its turn to be read must not block on a full pipe
    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=out, stderr=err, text=True,
                            cwd=ROOT, env=env)
    proc.output_files = (out, err)
    return proc


def _result(backend: str, proc: subprocess.Popen) -> dict:
    try:
        proc.wait(timeout=600)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    stdout, stderr = (f.seek(0) or f.read() for f in proc.output_files)
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise AssertionError(f"distributed run on {backend} failed (exit {proc.returncode}):\n"
                             f"{stdout[-2000:]}\n{stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def _installed(backend: str) -> bool:
    return importlib.util.find_spec(backend) is not None


@pytest.fixture(scope="module")
def _children(request):
    """Both backends' processes, started together (they are independent; on 2 cores this
    halves the wall time), only for the backends whose tests were selected."""
    wanted = set()
    for item in request.session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if getattr(item, "module", None) is request.module and "run" in params:
            wanted.add(params["run"])
    procs = {b: _start(b) for b in ("tensorflow", "jax") if b in wanted and _installed(b)}
    yield procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for f in proc.output_files:
            f.close()


@pytest.fixture(scope="module", params=["tensorflow", "jax"])
def run(request, _children):
    if request.param == "jax":
        pytest.importorskip("jax", reason="jax is not installed: pip install 'jax[cpu]' "
                            "(the test extra installs it; CI fails without it)")
    else:
        pytest.importorskip("tensorflow")
    return request.param, _result(request.param, _children[request.param])


def _max_diff(a, b) -> float:
    """Largest |a - b| over two equally shaped JSON structures (lists, dicts, numbers)."""
    if isinstance(a, dict):
        assert sorted(a) == sorted(b), (sorted(a), sorted(b))
        return max((_max_diff(a[k], b[k]) for k in a), default=0.0)
    if isinstance(a, list):
        assert len(a) == len(b), (a, b)
        return max((_max_diff(u, v) for u, v in zip(a, b)), default=0.0)
    return abs(float(a) - float(b))


def test_two_replicas_really_run(run):
    backend, result = run
    assert result["replicas"] == 2 and len(result["devices"]) == 2, result
    if backend == "jax":  # the global batch is split along its first axis
        assert result["data_layout"][0] == "batch" and set(result["data_layout"][1:]) == {"None"}


def test_penalty_counted_once_per_global_step(run):
    """With the data gradient 0, gamma moves by exactly lr * lambda * sign(gamma)."""
    backend, result = run
    runs = ["one", "two"] + (["two_unsynchronized"] if backend == "tensorflow" else [])
    for name in runs:
        low, high = result[name]["penalty_step"]
        assert abs(low - 1) < 1e-3 and abs(high - 1) < 1e-3, (name, low, high)


def test_gammas_and_loss_match_one_device(run):
    _, result = run
    one, two = result["one"], result["two"]
    assert _max_diff(one["gammas"], result["initial"]) > 1e-3, "training moved the gammas"
    assert _max_diff(one["gammas"], two["gammas"]) < 1e-5, (one["gammas"], two["gammas"])
    assert _max_diff(one["loss"], two["loss"]) < 1e-5, (one["loss"], two["loss"])


def test_sparsity_monitor_reports_the_same(run):
    _, result = run
    one, two = result["one"], result["two"]
    assert len(one["monitor"]) == 2, one["monitor"]
    assert 0 < one["monitor"][-1]["below"][1] < 1, "thresholds chosen to split the channels"
    assert _max_diff(one["monitor"], two["monitor"]) < 1e-5
    assert _max_diff(one["logs"], two["logs"]) < 1e-5


# TensorFlow only (not a skip on JAX: DataParallel always normalizes over the global batch)
@pytest.mark.parametrize("run", ["tensorflow"], indirect=True)
def test_unsynchronized_batchnorm_uses_per_replica_statistics(run):
    """MirroredStrategy + plain BatchNormalization: each replica normalizes with its own half
    batch, so training differs from one device (what README's synchronized=True is for)."""
    backend, result = run
    diff = _max_diff(result["one"]["gammas"], result["two_unsynchronized"]["gammas"])
    assert diff > 1e-5, diff


def test_pruned_under_the_strategy_trains_and_exports(run):
    backend, result = run
    pruned = result["pruned"]
    assert pruned["params"][1] < pruned["params"][0], pruned
    assert pruned["all_distributed"], pruned
    assert pruned["penalties"] == 2, pruned  # bn_l1 came along with the rebuilt BNs
    if backend == "tensorflow":
        assert pruned["on_the_strategy"] and pruned["synchronized"] == [True, True], pruned
    assert np.isfinite(pruned["finetune_loss"]).all() and pruned["weights_changed"], pruned
    pytest.importorskip("ai_edge_litert")
    assert pruned["export_max_abs_error"] < 1e-4 and pruned["export_size"] > 0, pruned


# TensorFlow only (JAX's DataParallel is global: there is no scope to leave)
@pytest.mark.parametrize("run", ["tensorflow"], indirect=True)
def test_pruned_outside_the_scope_stays_on_the_strategy(run):
    backend, result = run
    outside = result["pruned_outside"]
    assert outside["all_distributed"] and outside["on_the_strategy"], outside
    assert outside["synchronized"] == [True, True] and outside["weights_changed"], outside
