"""The Network Slimming pipeline on CIFAR-10, shared by the cifar10_*.py examples.

Stages (Liu et al., ICCV 2017, Sec. 4; official code: Eric-mingjie/network-slimming):

1. baseline: train without the penalty;
2. sparsity training: the same schedule with L1 on every BN scaling factor
   (lambda 1e-4 for VGG, 1e-5 for ResNet/DenseNet), watched by SparsityMonitor;
3. prune at each ratio by one global |gamma| threshold (70% and 50% for VGG,
   40% and 60% for ResNet/DenseNet), measure, fine-tune, measure;
4. optional multi-pass slimming (keras_slim.multipass);
5. optional TFLite export + 1-thread latency when keras_slim has it;
6. the accuracy-vs-ratio sweep without fine-tuning, plots, and the results
   table (results.json + results.md).

Every training stage checkpoints each epoch (keras ModelCheckpoint, the full
model with its optimizer) and resumes from the newest checkpoint when the
command is run again with the same --out; finished stages are loaded, not
retrained.

Scales (--scale): ``paper`` is the paper's setting (VGG-19 / ResNet-164 /
DenseNet-40, 160 epochs, batch 64, SGD lr 0.1 momentum 0.9 weight decay 1e-4,
lr / 10 at 50% and 75% of the epochs, fine-tuning with the same schedule);
``cpu`` is a reduced setting meant for 2 CPU cores (VGG: half-width VGG-11,
10 + 10 epochs, lambda 10x the paper's for the shorter schedule, 5 fine-tuning
epochs, 2 multi-pass passes of 3 epochs, batch 128: about 30 minutes on 2 idle
cores, up to an hour when they are shared with other work); ``smoke`` uses a
few hundred images and one epoch per stage, to check the plumbing.
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import logging
import os
import platform
import re
import sys
import time
from typing import Any, Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_slim  # noqa: E402
from keras_slim import models  # noqa: E402
from keras_slim.callbacks import SparsityMonitor  # noqa: E402
from keras_slim.datasets import load_cifar10, make_dataset  # noqa: E402
from keras_slim.multipass import slim_multipass  # noqa: E402
from keras_slim.sparsity import add_bn_l1  # noqa: E402

logger = logging.getLogger("keras_slim.examples")

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DEFAULT_ARCHIVE = os.path.normpath(
    os.path.join(REPO, "..", "shared", "data", "cifar10-jpeg.tar.gz"))

ARCHS = ("vgg", "resnet", "densenet")
SCALES = ("smoke", "cpu", "paper")

# Published numbers, quoted for reference (CIFAR-10 test error %, params, FLOPs).
REFERENCE = {
    "vgg": ("Paper, Table 1: VGGNet-19, 70% pruned: test error 6.34% -> 6.20%, "
            "parameters -88.5% (20.04M -> 2.30M), FLOPs -51.0%."),
    "resnet": ("Official PyTorch code (Eric-mingjie/network-slimming README): ResNet-164, "
               "accuracy 94.75% baseline, 95.05% at 40% pruned (1.71M -> 1.45M params), "
               "93.81% at 60% (1.12M params), after 160 fine-tuning epochs."),
    "densenet": ("Official PyTorch code (Eric-mingjie/network-slimming README): DenseNet-40, "
                 "accuracy 94.11% baseline, 94.32% at 40% pruned (1.07M -> 0.69M params), "
                 "94.22% at 60% (0.49M params), after 160 fine-tuning epochs."),
}


@dataclasses.dataclass
class Config:
    """Everything a run depends on (saved into results.json)."""

    arch: str
    scale: str
    model: dict  # keyword arguments of the keras_slim.models builder
    sparsity: float  # lambda of the BN L1 penalty
    ratios: tuple  # single-pass prune ratios
    epochs: int  # baseline and sparsity training
    finetune_epochs: int
    batch_size: int
    lr: float
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_drops: tuple = (0.5, 0.75)  # lr / 10 at these fractions of each stage's epochs
    finetune_lr: float | None = None  # first lr of fine-tuning stages; None: `lr`, as the paper
    max_layer_ratio: float | None = None  # single-pass cap per layer (None: the paper's pure
    # global threshold, which can cut a layer whose factors are all small to 1 channel)
    train_limit: int | None = None  # use only this many training images (smoke)
    test_limit: int | None = None
    multipass: bool = True
    multipass_passes: int = 2
    multipass_per_pass: float = 0.5
    multipass_max_layer_ratio: float = 0.5
    multipass_epochs: int = 3
    multipass_max_drop: float | None = 0.01
    sweep: tuple = (0.1, 0.3, 0.5, 0.7, 0.9)  # accuracy vs ratio, no fine-tuning
    export: bool = True
    latency_runs: int = 50
    seed: int = 0


def make_config(arch: str, scale: str) -> Config:
    """The default configuration of `arch` at `scale` (see the module docstring)."""
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    if scale not in SCALES:
        raise ValueError(f"--scale must be one of {SCALES}, got {scale!r}")
    sparsity = 1e-4 if arch == "vgg" else 1e-5
    ratios = (0.7, 0.5) if arch == "vgg" else (0.4, 0.6)
    if scale == "paper":
        model = {"vgg": dict(depth=19), "resnet": dict(depth=164),
                 "densenet": dict(depth=40, growth_rate=12)}[arch]
        return Config(arch, scale, model, sparsity, ratios, epochs=160, finetune_epochs=160,
                      batch_size=64, lr=0.1, multipass_passes=3, multipass_epochs=40,
                      latency_runs=100)
    if scale == "cpu":
        # VGG timing: half-width VGG-11, batch 128: ~50 s/epoch on 2 idle cores, 105-150 s
        # when they are shared; pruned models train 2-3x faster. ResNet/DenseNet sizes are
        # chosen by analogy, not timed.
        model = {"vgg": dict(depth=11, width=0.5), "resnet": dict(depth=20),
                 "densenet": dict(depth=22, growth_rate=12)}[arch]
        # lambda x 10: 10 epochs at batch 128 give the L1 term ~1/30 of the paper's
        # lr-weighted steps, and the paper's 1e-4 leaves VGG's factors dense. Measured on
        # VGG (benchmarks/results/paper_cpu.md): 1e-4 dense, 1e-3 best, 2e-3 / 3e-3 cost
        # the sparsity-trained model 4-7 points. ResNet/DenseNet follow by analogy.
        return Config(arch, scale, model, sparsity * 10, ratios, epochs=10, finetune_epochs=5,
                      batch_size=128, lr=0.1, multipass_passes=2, multipass_epochs=3)
    model = {"vgg": dict(depth=11, width=0.125), "resnet": dict(depth=11, width=0.25),
             "densenet": dict(depth=10, growth_rate=4)}[arch]
    # lambda is raised in the smoke run so that one epoch moves the factors visibly
    return Config(arch, scale, model, sparsity * 10, ratios, epochs=1, finetune_epochs=1,
                  batch_size=32, lr=0.05, train_limit=320, test_limit=100,
                  multipass_passes=2, multipass_epochs=1, multipass_max_drop=None,
                  sweep=(0.3, 0.6), latency_runs=5)


# ---------------------------------------------------------------- building and training
def build_model(cfg: Config) -> keras.Model:
    builder = {"vgg": models.vgg, "resnet": models.preact_resnet,
               "densenet": models.densenet}[cfg.arch]
    return builder(num_classes=10, input_shape=(32, 32, 3), **cfg.model)


def compile_model(model: keras.Model, cfg: Config, lr: float | None = None) -> None:
    """SGD with momentum and weight decay, cross-entropy on logits, accuracy."""
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=cfg.lr if lr is None else lr,
                                       momentum=cfg.momentum,
                                       weight_decay=cfg.weight_decay),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def step_schedule(cfg: Config, epochs: int, base: float | None = None) -> Callable[[int], float]:
    """The paper's schedule: `base` (default cfg.lr), / 10 at 50% and at 75% of the epochs."""
    drops = [int(round(f * epochs)) for f in cfg.lr_drops]
    base = cfg.lr if base is None else base

    def lr(epoch: int, _current=None) -> float:
        return base * 0.1 ** sum(epoch >= d for d in drops if d > 0)

    return lr


class _KeepNewest(keras.callbacks.Callback):
    """Delete older per-epoch checkpoints of a stage after each save."""

    def __init__(self, pattern: str):
        super().__init__()
        self.pattern = pattern

    def on_epoch_end(self, epoch, logs=None):
        for path in _checkpoints(self.pattern)[:-1]:
            os.remove(path)


def _checkpoints(pattern: str) -> list[str]:
    def epoch_of(p):
        return int(re.search(r"-(\d+)\.keras$", p).group(1))
    return sorted(glob.glob(pattern), key=epoch_of)


class Run:
    """Paths, data and helpers of one pipeline run."""

    def __init__(self, cfg: Config, out: str, data, verbose: int):
        self.cfg = cfg
        self.out = out
        (self.x_train, self.y_train), (self.x_test, self.y_test) = data
        self.verbose = verbose
        self.steps = int(np.ceil(len(self.x_train) / cfg.batch_size))
        for sub in ("checkpoints", "models", "history", "plots", "plans", "tflite"):
            os.makedirs(os.path.join(out, sub), exist_ok=True)
        self.train_ds = make_dataset(self.x_train, self.y_train, cfg.batch_size, True,
                                     seed=cfg.seed)
        self.test_ds = make_dataset(self.x_test, self.y_test, 256, False)

    def path(self, *parts) -> str:
        return os.path.join(self.out, *parts)

    def evaluate(self, model: keras.Model) -> float:
        """Top-1 test accuracy."""
        if not model.compiled:
            compile_model(model, self.cfg)
        return float(model.evaluate(self.test_ds, verbose=0, return_dict=True)["accuracy"])

    def fit_stage(self, name: str, make: Callable[[], keras.Model], epochs: int,
                  sparsity: float, monitor: bool = True, callbacks=(),
                  lr: float | None = None) -> keras.Model:
        """Train stage `name` with checkpoints; resume or reuse what a previous run left.

        `make()` returns the model to train when the stage starts fresh; it is
        compiled here with the SGD configuration and `sparsity` is applied.
        `callbacks` are added after the built-in ones (checkpoint, lr schedule,
        CSV log, SparsityMonitor when `monitor`). `lr` is the schedule's first
        learning rate (default cfg.lr).
        """
        final = self.path("models", f"{name}.keras")
        if os.path.exists(final):
            logger.info("stage %s: already done, loading %s", name, final)
            return keras.models.load_model(final)
        pattern = self.path("checkpoints", f"{name}-*.keras")
        found = _checkpoints(pattern)
        csv = self.path("history", f"{name}.csv")
        gamma_json = self.path("history", f"{name}_gamma.json")
        if found:
            model = keras.models.load_model(found[-1])
            initial = int(re.search(r"-(\d+)\.keras$", found[-1]).group(1))
            logger.info("stage %s: resuming from %s (epoch %d of %d)", name, found[-1],
                        initial, epochs)
        else:
            model = make()
            add_bn_l1(model, sparsity)
            compile_model(model, self.cfg, lr)
            initial = 0
            for stale in (csv, gamma_json):
                if os.path.exists(stale):
                    os.remove(stale)
        extra = list(callbacks)
        callbacks = [
            keras.callbacks.ModelCheckpoint(
                self.path("checkpoints", f"{name}-{{epoch:04d}}.keras")),
            _KeepNewest(pattern),
            keras.callbacks.LearningRateScheduler(step_schedule(self.cfg, epochs, lr)),
            keras.callbacks.CSVLogger(csv, append=True),
        ]
        mon = None
        if monitor:
            mon = SparsityMonitor(plot_path=self.path("plots", f"gamma_{name}.png"),
                                  add_to_logs=False)
            if os.path.exists(gamma_json):
                with open(gamma_json) as f:
                    mon.history = [_keys_to_float(r) for r in json.load(f)]

            def save_gamma(epoch, logs):
                with open(gamma_json, "w") as f:
                    json.dump(mon.history, f)

            callbacks += [mon, keras.callbacks.LambdaCallback(on_epoch_end=save_gamma)]
        callbacks += extra
        if initial < epochs:
            print(f"\n== {name}: epochs {initial + 1}-{epochs}, lambda={sparsity:g}, "
                  f"{len(self.x_train)} images, batch {self.cfg.batch_size}")
            model.fit(self.train_ds, epochs=epochs, initial_epoch=initial, callbacks=callbacks,
                      verbose=self.verbose, shuffle=False)
        model.save(final)
        for path in _checkpoints(pattern):
            os.remove(path)
        return model


def _keys_to_float(record: dict) -> dict:
    out = dict(record)
    for key in ("below", "threshold_at", "mass_below"):
        if key in out:
            out[key] = {float(k): v for k, v in out[key].items()}
    return out


def _count(model: keras.Model):
    p = keras_slim.plan(model, 0.0)
    return p.params_before, p.macs_before


def export_and_time(model: keras.Model, path: str, runs: int) -> dict:
    """TFLite size and 1-thread latency, when keras_slim provides export."""
    export = getattr(keras_slim, "export_tflite", None)
    bench = getattr(keras_slim, "benchmark_tflite", None)
    if export is None:
        try:
            from keras_slim import export as export_pkg
        except ImportError:
            export_pkg = None
        export = getattr(export_pkg, "export_tflite", None)
        bench = getattr(export_pkg, "benchmark_tflite", None)
    if export is None:
        return {"error": "keras_slim has no export_tflite"}
    try:
        report = export(model, path)
        out = {"tflite_bytes": int(report.size_bytes), "path": path}
        if bench is not None:
            lat = bench(path, threads=1, runs=runs, warmup=max(2, runs // 5))
            out["latency_ms"] = float(lat.median_ms)
        return out
    except Exception as e:  # an optional step must not lose hours of training
        logger.warning("TFLite export/benchmark of %s failed: %s", path, e, exc_info=True)
        return {"error": f"{type(e).__name__}: {e}"}


# ---------------------------------------------------------------- the pipeline
def run_pipeline(cfg: Config, data_source, out: str, verbose: int = 1,
                 cache_dir: str | None = None) -> dict:
    """Run every stage of `cfg`, write results.json / results.md under `out`, return the results."""
    t_start = time.time()
    keras.utils.set_random_seed(cfg.seed)
    os.makedirs(out, exist_ok=True)
    data = load_cifar10(data_source, cache_dir=cache_dir)
    data = _limit(data, cfg)
    run = Run(cfg, out, data, verbose)
    rows: list[dict] = []
    timings: dict[str, float] = {}

    def row(name: str, model: keras.Model, acc: float, stage: str | None = None, **extra):
        params, macs = _count(model)
        r = dict(name=name, accuracy=acc, params=params, macs=macs, **extra)
        if stage:
            r["model"] = stage
        rows.append(r)
        print(f"   {name}: accuracy {acc:.4f}, params {params:,}, MACs {macs:,}")
        return r

    # 1-2. baseline and sparsity training (same schedule)
    t = time.time()
    baseline = run.fit_stage("baseline", lambda: build_model(cfg), cfg.epochs, 0.0,
                             monitor=True)
    timings["baseline"] = time.time() - t
    row("baseline", baseline, run.evaluate(baseline), stage="baseline")
    t = time.time()
    sparse = run.fit_stage("sparse", lambda: build_model(cfg), cfg.epochs, cfg.sparsity)
    timings["sparse"] = time.time() - t
    row(f"sparsity-trained (lambda {cfg.sparsity:g})", sparse, run.evaluate(sparse),
        stage="sparse")

    # 3. single-pass pruning + fine-tuning
    finals: dict[str, keras.Model] = {"baseline": baseline}
    for ratio in cfg.ratios:
        tag = f"{round(100 * ratio)}"
        plan = keras_slim.plan(sparse, ratio, max_layer_ratio=cfg.max_layer_ratio)
        plan.to_json(run.path("plans", f"plan_{tag}.json"))
        _plot(lambda: _plots().plot_channels_per_layer(
            plan, run.path("plots", f"channels_{tag}.png")))
        pruned = keras_slim.prune(sparse, plan)
        add_bn_l1(pruned, 0.0)  # fine-tuning is without the penalty (as in the paper's code)
        acc = run.evaluate(pruned)
        row(f"pruned {tag}% (no fine-tuning)", pruned, acc, ratio=plan.ratio,
            threshold=plan.threshold)
        t = time.time()
        tuned = run.fit_stage(f"finetune_{tag}", lambda: pruned, cfg.finetune_epochs, 0.0,
                              monitor=False, lr=cfg.finetune_lr)
        timings[f"finetune_{tag}"] = time.time() - t
        row(f"pruned {tag}% + fine-tuned", tuned, run.evaluate(tuned), stage=f"finetune_{tag}",
            ratio=plan.ratio)
        finals[f"finetune_{tag}"] = tuned

    # 4. multi-pass
    multipass = None
    if cfg.multipass:
        t = time.time()
        counter = {"k": 0}

        def fine_tune(model):
            counter["k"] += 1
            trained = run.fit_stage(f"multipass_{counter['k']}", lambda: model,
                                    cfg.multipass_epochs, cfg.sparsity, monitor=False,
                                    lr=cfg.finetune_lr)
            if trained is not model:
                model.set_weights(trained.get_weights())

        def compile_fn(model):
            compile_model(model, cfg, cfg.finetune_lr)

        result = slim_multipass(
            sparse, per_pass_ratio=cfg.multipass_per_pass,
            max_layer_ratio=cfg.multipass_max_layer_ratio, max_passes=cfg.multipass_passes,
            fine_tune=fine_tune, evaluate=run.evaluate, compile_fn=compile_fn,
            max_accuracy_drop=cfg.multipass_max_drop, sparsity=cfg.sparsity)
        timings["multipass"] = time.time() - t
        result.to_json(run.path("multipass.json"))
        best = result.best_model
        best.save(run.path("models", "multipass_best.keras"))
        multipass = result.to_dict(include_plans=False)
        if result.best_pass is not None:
            row(f"multi-pass ({len([p for p in result.passes if p.accepted])} passes, "
                f"{result.cumulative_ratio:.0%} pruned)", best, result.accuracy,
                stage="multipass_best", ratio=result.cumulative_ratio)
            finals["multipass_best"] = best

    # 5. TFLite
    if cfg.export:
        t = time.time()
        exported = {name: export_and_time(m, run.path("tflite", f"{name}.tflite"),
                                          cfg.latency_runs)
                    for name, m in finals.items()}
        timings["export"] = time.time() - t
        for r in rows:
            if r.get("model") in exported:
                r.update({k: v for k, v in exported[r["model"]].items() if k != "path"})

    # 6. accuracy vs ratio without fine-tuning, plots
    t = time.time()
    sweep = {"ratios": list(cfg.sweep),
             "sparse": [_pruned_accuracy(run, sparse, r) for r in cfg.sweep],
             "baseline": [_pruned_accuracy(run, baseline, r) for r in cfg.sweep]}
    timings["sweep"] = time.time() - t
    ft_rows = [r for r in rows if r.get("model", "").startswith("finetune_")]
    if cfg.sweep:
        _plot(lambda: _plots().plot_accuracy_vs_ratio(
            sweep["ratios"], sweep["sparse"], run.path("plots", "accuracy_vs_ratio.png"),
            fine_tuned=[r["accuracy"] for r in ft_rows],
            fine_tuned_ratios=[r["ratio"] for r in ft_rows],
            baseline=rows[1]["accuracy"],
            curves={"baseline (no sparsity) pruned, no fine-tuning":
                    (sweep["ratios"], sweep["baseline"])},
            title=f"CIFAR-10 {cfg.arch} ({cfg.scale})",
            pruned_label="sparsity-trained, pruned, no fine-tuning"))

    results = {
        "arch": cfg.arch,
        "scale": cfg.scale,
        "config": dataclasses.asdict(cfg),
        "data": {"source": str(data_source) if data_source else "keras",
                 "train_images": int(len(run.x_train)), "test_images": int(len(run.x_test))},
        "rows": rows,
        "multipass": multipass,
        "sweep": sweep,
        "reference": REFERENCE[cfg.arch],
        "seconds": {k: round(v, 1) for k, v in timings.items()},
        "total_seconds": round(time.time() - t_start, 1),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "keras": keras.__version__, "cpus": os.cpu_count()},
    }
    with open(run.path("results.json"), "w") as f:
        json.dump(results, f, indent=1, default=_json_default)
    with open(run.path("results.md"), "w") as f:
        f.write(results_markdown(results))
    return results


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (tuple, set)):
        return list(obj)
    raise TypeError(type(obj).__name__)


def _pruned_accuracy(run: Run, model: keras.Model, ratio: float) -> float | None:
    try:
        return run.evaluate(keras_slim.prune(model, ratio))
    except Exception as e:  # a ratio the model cannot take: record, keep going
        logger.warning("sweep: pruning %s at %.0f%% failed: %s", model.name, 100 * ratio, e)
        return None


def _plots():
    from keras_slim import plots

    return plots


def _plot(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except ImportError as e:  # matplotlib is an optional extra
        logger.warning("%s; skipping the plot", e)


def _limit(data, cfg: Config):
    (x, y), (xt, yt) = data
    rng = np.random.default_rng(cfg.seed)
    if cfg.train_limit and len(x) > cfg.train_limit:
        idx = rng.permutation(len(x))[:cfg.train_limit]
        x, y = x[idx], y[idx]
    if cfg.test_limit and len(xt) > cfg.test_limit:
        idx = rng.permutation(len(xt))[:cfg.test_limit]
        xt, yt = xt[idx], yt[idx]
    return (x, y), (xt, yt)


def results_markdown(results: dict) -> str:
    """The results table (markdown) with the reference numbers quoted below it."""
    rows = results["rows"]
    base = rows[0]
    lines = [
        f"# CIFAR-10 {results['arch']} ({results['scale']} scale)",
        "",
        f"Data: {results['data']['train_images']:,} training / {results['data']['test_images']:,} "
        f"test images from {results['data']['source']}. Total time "
        f"{results['total_seconds'] / 60:.1f} min.",
        "",
        "| model | test acc. | error | params | MACs | params vs baseline | FLOPs vs baseline "
        "| TFLite | latency (1 thread) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        size = f"{r['tflite_bytes'] / 1024:,.0f} KiB" if "tflite_bytes" in r else "-"
        lat = f"{r['latency_ms']:.2f} ms" if "latency_ms" in r else "-"
        lines.append(
            f"| {r['name']} | {r['accuracy']:.2%} | {1 - r['accuracy']:.2%} | {r['params']:,} "
            f"| {r['macs']:,} | {_delta(r['params'], base['params'])} "
            f"| {_delta(r['macs'], base['macs'])} | {size} | {lat} |")
    mp = results.get("multipass")
    if mp:
        lines += ["", f"Multi-pass: stopped because {mp['stop_reason']}; per pass:", "",
                  "| pass | pruned (pass) | pruned (total) | params | MACs | acc. pruned "
                  "| acc. fine-tuned | kept |", "|---:|---:|---:|---:|---:|---:|---:|:---:|"]
        for p in mp["passes"]:
            lines.append(f"| {p['index']} | {p['ratio']:.1%} | {p['cumulative_ratio']:.1%} "
                         f"| {p['params_after']:,} | {p['macs_after']:,} "
                         f"| {_pct(p['accuracy_pruned'])} | {_pct(p['accuracy_fine_tuned'])} "
                         f"| {'yes' if p['accepted'] else 'no'} |")
    sw = results.get("sweep")
    if sw and sw["ratios"]:
        lines += ["", "Accuracy right after pruning (no fine-tuning):", "",
                  "| ratio | " + " | ".join(f"{r:.0%}" for r in sw["ratios"]) + " |",
                  "|---|" + "---:|" * len(sw["ratios"]),
                  "| sparsity-trained | " + " | ".join(_pct(a) for a in sw["sparse"]) + " |",
                  "| baseline (no sparsity) | "
                  + " | ".join(_pct(a) for a in sw["baseline"]) + " |"]
    secs = results.get("seconds", {})
    if secs:
        lines += ["", "Stage times: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in secs.items())]
    lines += ["", f"Reference: {results['reference']}",
              "MACs count conv/dense multiply-accumulates; FLOPs = 2 x MACs, so the FLOPs "
              "reduction equals the MACs reduction.", ""]
    return "\n".join(lines)


def _delta(after: int, before: int) -> str:
    return "-" if not before or after == before else f"{after / before - 1:+.1%}"


def _pct(v) -> str:
    return "-" if v is None else f"{v:.2%}"


# ---------------------------------------------------------------- command line
def parse_args(arch: str, argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=f"Network Slimming on CIFAR-10 with {arch}: baseline, sparsity training, "
                    "prune, fine-tune, multi-pass, export.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    default_data = DEFAULT_ARCHIVE if os.path.exists(DEFAULT_ARCHIVE) else "keras"
    ap.add_argument("--data", default=default_data,
                    help="CIFAR-10 folder or .tar.gz (train/<class>/*.jpg, test/<class>/*.jpg), "
                         "or 'keras' to download with keras.datasets")
    ap.add_argument("--scale", choices=SCALES, default="cpu",
                    help="paper: the paper's models and 160-epoch schedule; cpu: reduced, about "
                         "an hour or less on 2 cores (VGG); smoke: a few hundred images, 1 epoch")
    ap.add_argument("--epochs", type=int, help="baseline and sparsity-training epochs")
    ap.add_argument("--finetune-epochs", type=int, help="fine-tuning epochs after pruning")
    ap.add_argument("--multipass-epochs", type=int, help="fine-tuning epochs per multi-pass pass")
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--lr", type=float, help="initial learning rate")
    ap.add_argument("--finetune-lr", type=float,
                    help="initial learning rate of fine-tuning (default: --lr, as the paper)")
    ap.add_argument("--sparsity", type=float, help="lambda of the BN-scale L1 penalty")
    ap.add_argument("--ratios", type=float, nargs="+", help="single-pass prune ratios")
    ap.add_argument("--max-layer-ratio", type=float,
                    help="single-pass pruning removes at most this fraction of any layer "
                         "(default: no cap, the paper's global threshold)")
    ap.add_argument("--no-multipass", action="store_true", help="skip multi-pass slimming")
    ap.add_argument("--no-export", action="store_true", help="skip TFLite export and latency")
    ap.add_argument("--no-sweep", action="store_true",
                    help="skip the accuracy-vs-ratio sweep without fine-tuning")
    ap.add_argument("--out", default=None, help="output folder (default runs/cifar10_ARCH_SCALE)")
    ap.add_argument("--cache-dir", default=None, help="where the decoded data set is cached")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                    help="Keras fit verbosity (1 = progress bars)")
    args = ap.parse_args(argv)
    for name in ("epochs", "finetune_epochs", "multipass_epochs", "batch_size"):
        v = getattr(args, name)
        if v is not None and v < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    if args.ratios and not all(0 < r < 1 for r in args.ratios):
        ap.error(f"--ratios must be in (0, 1), got {args.ratios}")
    if args.max_layer_ratio is not None and not 0 < args.max_layer_ratio <= 1:
        ap.error(f"--max-layer-ratio must be in (0, 1], got {args.max_layer_ratio}")
    return args


def config_from_args(arch: str, args: argparse.Namespace) -> Config:
    cfg = make_config(arch, args.scale)
    overrides = {"epochs": args.epochs, "finetune_epochs": args.finetune_epochs,
                 "multipass_epochs": args.multipass_epochs,
                 "max_layer_ratio": args.max_layer_ratio,
                 "batch_size": args.batch_size, "lr": args.lr, "sparsity": args.sparsity,
                 "finetune_lr": args.finetune_lr,
                 "ratios": tuple(args.ratios) if args.ratios else None}
    cfg = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    return dataclasses.replace(cfg, multipass=cfg.multipass and not args.no_multipass,
                               export=cfg.export and not args.no_export,
                               sweep=() if args.no_sweep else cfg.sweep, seed=args.seed)


def main(arch: str, argv=None) -> dict:
    """Entry point of examples/cifar10_<arch>.py; prints and returns the results."""
    args = parse_args(arch, argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = config_from_args(arch, args)
    out = args.out or os.path.join(REPO, "runs", f"cifar10_{arch}_{cfg.scale}")
    data = None if args.data == "keras" else args.data
    print(f"Network Slimming, CIFAR-10, {arch} ({cfg.scale} scale): model {cfg.model}, "
          f"lambda {cfg.sparsity:g}, ratios {list(cfg.ratios)}, output in {out}")
    results = run_pipeline(cfg, data, out, verbose=args.verbose, cache_dir=args.cache_dir)
    print("\n" + results_markdown(results))
    print(f"results: {os.path.join(out, 'results.json')} and results.md; plots in "
          f"{os.path.join(out, 'plots')}")
    return results


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run one of examples/cifar10_vgg.py, cifar10_resnet.py, cifar10_densenet.py")
