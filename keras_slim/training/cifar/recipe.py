"""The reference Network Slimming recipe on CIFAR-10: sparsity-train, prune,
fine-tune, report (the pipeline behind ``examples/cifar10_*.py``).

Stages (Liu et al., ICCV 2017, Sec. 4; official code: Eric-mingjie/network-slimming):

1. baseline: train without the penalty;
2. sparsity training: the same schedule with L1 on every BN scaling factor
   (lambda 1e-4 for VGG, 1e-5 for ResNet/DenseNet), watched by SparsityMonitor;
3. prune at each ratio by one global |gamma| threshold (70% and 50% for VGG,
   40% and 60% for ResNet/DenseNet), measure, fine-tune, measure;
4. optional multi-pass slimming (`keras_slim.training.slim_multipass`);
5. optional TFLite export + 1-thread latency (`keras_slim.export`);
6. the accuracy-vs-ratio sweep without fine-tuning, plots, and the results
   table (results.json + results.md).

Every training stage checkpoints each epoch (keras ModelCheckpoint, the full
model with its optimizer) and resumes from the newest checkpoint when the
command is run again with the same output folder; finished stages are loaded,
not retrained. The configurations are in `keras_slim.training.cifar.config`, the
training stages in `keras_slim.training.cifar.stages`.
Progress goes to the ``keras_slim.training.cifar.recipe`` logger.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import time
from typing import Any, Callable

import keras
import numpy as np

from keras_slim.errors import ArgumentError
from keras_slim.pruning import plan as make_plan, prune
from keras_slim.sparsity import add_bn_l1
from keras_slim.training import plots
from keras_slim.training._json import json_default
from keras_slim.training.cifar.config import REFERENCE, Config, config_from_args, parse_args
from keras_slim.training.cifar.data import load_cifar10
from keras_slim.training.cifar.report import results_markdown
from keras_slim.training.cifar.stages import Run, build_model, compile_model
from keras_slim.training.multipass import slim_multipass

logger = logging.getLogger(__name__)

__all__ = ["export_and_time", "limit_data", "main", "run_pipeline", "split_validation"]


def _count(model: keras.Model) -> tuple[int, int]:
    p = make_plan(model, 0.0)
    return p.params_before, p.macs_before


def export_and_time(model: keras.Model, path: str, runs: int) -> dict:
    """TFLite size and 1-thread latency; an error entry instead of raising (an optional step)."""
    try:
        from keras_slim.export import benchmark_tflite, export_tflite
    except ImportError as e:
        return {"error": f"keras_slim.export is unavailable: {e}"}
    try:
        report = export_tflite(model, path)
        lat = benchmark_tflite(path, threads=1, runs=runs, warmup=max(2, runs // 5))
        return {"tflite_bytes": int(report.size_bytes), "path": path,
                "latency_ms": float(lat.median_ms)}
    except Exception as e:  # an optional step must not lose hours of training
        logger.warning("TFLite export/benchmark of %s failed: %s", path, e, exc_info=True)
        return {"error": f"{type(e).__name__}: {e}"}


# ---------------------------------------------------------------- the pipeline
def run_pipeline(cfg: Config, data_source: str | os.PathLike | None, out: str | os.PathLike,
                 verbose: int = 1, cache_dir: str | os.PathLike | None = None) -> dict:
    """Run every stage of `cfg`, write results.json / results.md under `out`, return the results.

    Args:
        cfg: what to run (`make_config`, `config_from_args`).
        data_source: `load_cifar10`'s source: a folder or archive, or None
            for the Keras download.
        out: the run's folder (checkpoints, models, plots, results); a run
            that stopped resumes from what it left there.
        verbose: Keras ``fit`` verbosity.
        cache_dir: where the decoded data set is cached.

    Returns:
        ``{"rows": [one per model: name, accuracy, params, macs, ...],
        "multipass", "sweep", "config", "data", "seconds", ...}``.
    """
    out = os.fspath(out)
    t_start = time.time()
    keras.utils.set_random_seed(cfg.seed)
    os.makedirs(out, exist_ok=True)
    data = load_cifar10(data_source, cache_dir=cache_dir)
    data = limit_data(data, cfg)
    train, val = split_validation(data[0], cfg.val_images, cfg.seed)
    run = Run(cfg, out, (train, data[1]), verbose, val=val)
    chooser = "validation" if run.val_ds is not None else "test"
    if run.val_ds is None:
        logger.warning("no validation split (val_images=0): multi-pass stopping and the sweep "
                       "use the test set, so the reported test accuracy is not held out")
    rows: list[dict] = []
    timings: dict[str, float] = {}

    def row(name: str, model: keras.Model, acc: float, stage: str | None = None, **extra):
        params, macs = _count(model)
        r = dict(name=name, accuracy=acc, params=params, macs=macs, **extra)
        if stage:
            r["model"] = stage
        rows.append(r)
        logger.info("   %s: accuracy %.4f, params %s, MACs %s", name, acc, f"{params:,}",
                    f"{macs:,}")
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
        plan = make_plan(sparse, ratio, max_layer_ratio=cfg.max_layer_ratio,
                         criterion=cfg.criterion)
        plan.to_json(run.path("plans", f"plan_{tag}.json"))
        _plot(lambda: plots.plot_channels_per_layer(
            plan, run.path("plots", f"channels_{tag}.png")))
        pruned = prune(sparse, plan)
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
            fine_tune=fine_tune, evaluate=run.validate, compile_fn=compile_fn,
            max_accuracy_drop=cfg.multipass_max_drop, sparsity=cfg.sparsity,
            plan_options={"criterion": cfg.criterion})
        timings["multipass"] = time.time() - t
        result.to_json(run.path("multipass.json"))
        best = result.best_model
        best.save(run.path("models", "multipass_best.keras"))
        multipass = result.to_dict(include_plans=False)
        if result.best_pass is not None:
            row(f"multi-pass ({len([p for p in result.passes if p.accepted])} passes, "
                f"{result.cumulative_ratio:.0%} pruned)", best, run.evaluate(best),
                stage="multipass_best", ratio=result.cumulative_ratio,
                **{f"{chooser}_accuracy": result.accuracy})
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
    sweep = {"ratios": list(cfg.sweep), "on": chooser,
             "sparse": [_pruned_accuracy(run, sparse, r, cfg.criterion) for r in cfg.sweep],
             "baseline": [_pruned_accuracy(run, baseline, r, cfg.criterion) for r in cfg.sweep]}
    timings["sweep"] = time.time() - t
    ft_rows = [r for r in rows if r.get("model", "").startswith("finetune_")]
    if cfg.sweep:
        _plot(lambda: plots.plot_accuracy_vs_ratio(
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
                 "train_images": int(len(run.x_train)), "test_images": int(len(run.x_test)),
                 "val_images": 0 if run.x_val is None else int(len(run.x_val)),
                 "choices_on": chooser},
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
        json.dump(results, f, indent=1, default=json_default)
    with open(run.path("results.md"), "w") as f:
        f.write(results_markdown(results))
    return results




def _pruned_accuracy(run: Run, model: keras.Model, ratio: float,
                     criterion: str = "bn_scale") -> float | None:
    try:
        return run.validate(prune(model, ratio, criterion=criterion))
    except Exception as e:  # a ratio the model cannot take: record, keep going
        logger.warning("sweep: pruning %s at %.0f%% failed: %s", model.name, 100 * ratio, e)
        return None


def _plot(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except ImportError as e:  # matplotlib is an optional extra
        logger.warning("%s; skipping the plot", e)


def split_validation(train: tuple, n: int, seed: int = 0) -> tuple:
    """Hold `n` random images (seeded) out of `train` = (x, y).

    Returns ``((x_train, y_train), (x_val, y_val))``, or ``(train, None)`` when
    `n` is 0. Raises ArgumentError when `n` leaves no training image.
    """
    if not n:
        return train, None
    x, y = train
    if n >= len(x):
        raise ArgumentError(f"val_images={n} would leave no training image (there are "
                            f"{len(x)}); pass a smaller --val-images, or 0 for no split.")
    idx = np.random.default_rng(seed + 1).permutation(len(x))
    tr, va = idx[n:], idx[:n]
    return (x[tr], y[tr]), (x[va], y[va])


def limit_data(data: tuple, cfg: Config) -> tuple:
    """`cfg.train_limit` / `cfg.test_limit` random images of ``load_cifar10``'s `data`."""
    (x, y), (xt, yt) = data
    rng = np.random.default_rng(cfg.seed)
    if cfg.train_limit and len(x) > cfg.train_limit:
        idx = rng.permutation(len(x))[:cfg.train_limit]
        x, y = x[idx], y[idx]
    if cfg.test_limit and len(xt) > cfg.test_limit:
        idx = rng.permutation(len(xt))[:cfg.test_limit]
        xt, yt = xt[idx], yt[idx]
    return (x, y), (xt, yt)


def main(arch: str, argv: list[str] | None = None, *,
         local_copy: str | os.PathLike | None = None,
         out_root: str | os.PathLike = "runs") -> dict:
    """The command line of ``examples/cifar10_<arch>.py``: parse `argv`, run, print the table.

    Args:
        arch: "vgg", "resnet" or "densenet".
        argv: the flags of `parse_args` (default ``sys.argv[1:]``).
        local_copy: a CIFAR-10 folder or archive used when ``--data`` is not
            given and it exists; otherwise the default is the Keras download.
        out_root: ``--out`` defaults to ``<out_root>/cifar10_<arch>_<scale>``.

    Returns:
        The results (as written to results.json).
    """
    have_copy = local_copy is not None and os.path.exists(local_copy)
    args = parse_args(arch, argv, default_data=os.fspath(local_copy) if have_copy else "keras")
    if not logging.getLogger().handlers:  # a command line: show the progress log
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = config_from_args(arch, args)
    out = args.out or os.path.join(out_root, f"cifar10_{arch}_{cfg.scale}")
    data = None if args.data == "keras" else args.data
    logger.info("Network Slimming, CIFAR-10, %s (%s scale): model %s, lambda %g, ratios %s, "
                "output in %s", arch, cfg.scale, cfg.model, cfg.sparsity, list(cfg.ratios), out)
    results = run_pipeline(cfg, data, out, verbose=args.verbose, cache_dir=args.cache_dir)
    print("\n" + results_markdown(results))  # the command's result, on stdout
    print(f"results: {os.path.join(out, 'results.json')} and results.md; plots in "
          f"{os.path.join(out, 'plots')}")
    return results
