"""Reproduce the paper's CIFAR-10 VGG experiment at CPU scale and write the report.

Runs the CPU configuration of examples/cifar10_vgg.py (keras_slim.training.cifar;
half-width VGG-11,
10 + 10 epochs, prune 70% and 50%, fine-tune, two multi-pass passes, TFLite
export with 1-thread latency) and writes

    benchmarks/results/paper_cpu.md    the table, the setup, the paper's row
    benchmarks/results/paper_cpu.json  every number

Baseline vs sparsity-trained vs pruned (before and after fine-tuning) vs
multi-pass: test accuracy, parameters, MACs, TFLite size and latency. The
paper's Table 1 VGG row is quoted for reference; it is VGG-19 trained for 160
epochs on the original data, so compare the *changes* (params, FLOPs, accuracy
drop), not the absolute accuracy.

    python benchmarks/paper.py                       # ~30 min on 2 idle cores
    python benchmarks/paper.py --scale smoke         # a minute, writes paper_smoke.*
    python benchmarks/paper.py --sparsity 2e-3 --tag lambda2e-3   # writes paper_cpu_lambda2e-3.*

Runs tagged with --tag keep their own workdir and result files; copy another
run's models/baseline.keras (and history/baseline*) into the new workdir to
reuse its baseline. `benchmarks/paper_summary.py` then gathers every
paper_cpu_*.json into benchmarks/results/paper_cpu.md, against the goal.

Interrupted? Run the same command again: training resumes from the
checkpoints in --workdir.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
LOCAL_COPY = os.path.join(REPO, "..", "shared", "data", "cifar10-jpeg.tar.gz")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from keras_slim.training import cifar  # noqa: E402
from _results import save_results  # noqa: E402

PAPER_VGG = {
    "source": "Liu et al., Learning Efficient Convolutional Networks through Network Slimming, "
              "ICCV 2017, Table 1 (CIFAR-10)",
    "model": "VGGNet-19, 160 epochs, lambda 1e-4, 70% of channels pruned, fine-tuned",
    "error_baseline": 0.0634,
    "error_pruned": 0.0620,
    "params_reduction": 0.885,
    "flops_reduction": 0.510,
}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=None,
                    help="CIFAR-10 folder or .tar.gz (default: ../shared/data/cifar10-jpeg.tar.gz "
                         "if present, else the Keras download)")
    ap.add_argument("--scale", choices=("cpu", "smoke"), default="cpu")
    ap.add_argument("--epochs", type=int, help="override baseline / sparsity epochs")
    ap.add_argument("--finetune-epochs", type=int, help="override fine-tuning epochs")
    ap.add_argument("--multipass-epochs", type=int, help="override fine-tuning epochs per pass")
    ap.add_argument("--max-layer-ratio", type=float,
                    help="cap per layer for the single-pass prunes (default: none, as the paper)")
    ap.add_argument("--sparsity", type=float,
                    help="lambda of the BN L1 penalty (default: the cpu configuration's, 1e-3)")
    ap.add_argument("--finetune-lr", type=float,
                    help="first learning rate of fine-tuning (default: the training lr, as the paper)")
    ap.add_argument("--ratios", type=float, nargs="+",
                    help="single-pass prune ratios (default 0.7 0.5, as the paper)")
    ap.add_argument("--no-multipass", action="store_true", help="skip multi-pass slimming")
    ap.add_argument("--no-sweep", action="store_true",
                    help="skip the accuracy-vs-ratio sweep without fine-tuning")
    ap.add_argument("--tag", default=None,
                    help="suffix of the result files: paper_SCALE_TAG.md/.json (default: none)")
    ap.add_argument("--workdir", default=None,
                    help="checkpoints, models and plots (default runs/paper_SCALE)")
    ap.add_argument("--results-dir", default=os.path.join(HERE, "results"))
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1)
    args = ap.parse_args(argv)

    example_argv = ["--scale", args.scale, "--verbose", str(args.verbose)]
    if args.data:
        example_argv += ["--data", args.data]
    for flag in ("epochs", "finetune_epochs", "multipass_epochs", "max_layer_ratio", "sparsity",
                 "finetune_lr"):
        if getattr(args, flag) is not None:
            example_argv += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    if args.ratios:
        example_argv += ["--ratios", *map(str, args.ratios)]
    example_argv += ["--no-multipass"] * args.no_multipass + ["--no-sweep"] * args.no_sweep
    if args.cache_dir:
        example_argv += ["--cache-dir", args.cache_dir]
    name = f"paper_{args.scale}" + (f"_{args.tag}" if args.tag else "")
    workdir = args.workdir or os.path.join(REPO, "runs", name)
    example_argv += ["--out", workdir]

    t0 = time.time()
    results = cifar.main("vgg", example_argv, local_copy=LOCAL_COPY)
    results["benchmark_seconds"] = round(time.time() - t0, 1)
    results["paper"] = PAPER_VGG
    results["comparison"] = _comparison(results)

    results["command"] = "python benchmarks/paper.py" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    stem = save_results(args.results_dir, name, results, report_markdown(results),
                        default=cifar.json_default)
    print(f"wrote {stem}.md and {stem}.json")
    return results


def _comparison(results: dict) -> dict:
    """Our 70% row against the paper's, as relative changes from each baseline."""
    rows = {r["name"]: r for r in results["rows"]}
    base = results["rows"][0]
    tuned = rows.get("pruned 70% + fine-tuned")
    if tuned is None:
        return {}
    return {
        "error_baseline": 1 - base["accuracy"],
        "error_pruned": 1 - tuned["accuracy"],
        "params_reduction": 1 - tuned["params"] / base["params"],
        "flops_reduction": 1 - tuned["macs"] / base["macs"],
        "paper": {k: PAPER_VGG[k] for k in ("error_baseline", "error_pruned",
                                              "params_reduction", "flops_reduction")},
    }


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def report_markdown(results: dict) -> str:
    cfg = results["config"]
    cmp_ = results.get("comparison") or {}
    lines = [
        f"# Network Slimming on CIFAR-10, VGG, {results['scale']} configuration",
        "",
        f"Generated by `{results.get('command', 'python benchmarks/paper.py')}`.",
        "",
        "## Setup",
        "",
        f"- Model: VGG-{cfg['model'].get('depth')} at width {cfg['model'].get('width', 1.0)} "
        f"(BN after every conv), {results['data']['train_images']:,} training / "
        f"{results['data']['test_images']:,} test images from {results['data']['source']}.",
        f"- Training: {_n(cfg['epochs'], 'epoch')} baseline and "
        f"{_n(cfg['epochs'], 'epoch')} sparsity training (lambda {cfg['sparsity']:g}), "
        f"SGD lr {cfg['lr']} momentum {cfg['momentum']} weight decay {cfg['weight_decay']:g}, "
        f"batch {cfg['batch_size']}, lr / 10 at 50% and 75% of each stage; standard "
        "augmentation (pad 4 + random crop, flip).",
        f"- Pruning: one global |gamma| threshold at "
        f"{', '.join(f'{r:.0%}' for r in cfg['ratios'])} of the channels ("
        + ("no per-layer cap, as in the paper" if cfg.get("max_layer_ratio") is None else
           f"at most {cfg['max_layer_ratio']:.0%} of any layer") + "), then "
        f"{_n(cfg['finetune_epochs'], 'fine-tuning epoch')} (no penalty, lr "
        f"{cfg.get('finetune_lr') or cfg['lr']:g} with the same / 10 steps). "
        + ((f"Multi-pass: up to {cfg['multipass_passes']} passes of "
            f"{cfg['multipass_per_pass']:.0%} with at most {cfg['multipass_max_layer_ratio']:.0%} "
            f"of any layer per pass, {_n(cfg['multipass_epochs'], 'fine-tuning epoch')} with the "
            "penalty per pass"
            + (f", a pass is rejected if accuracy falls more than "
               f"{cfg['multipass_max_drop']:.0%} below the sparsity-trained model"
               if cfg.get("multipass_max_drop") else "") + ".")
           if cfg.get("multipass", True) else "Multi-pass: not run in this run."),
        f"- Machine: {results['machine']['platform']}, {results['machine']['cpus']} CPUs, "
        f"Python {results['machine']['python']}, Keras {results['machine']['keras']}. TFLite "
        "latency: batch 1, 1 thread, XNNPACK, median of "
        f"{cfg['latency_runs']} runs.",
        f"- Wall time: {results['benchmark_seconds'] / 60:.1f} min"
        + (" (the baseline stage was loaded from an earlier run of the same configuration, "
           "not retrained)" if results.get("seconds", {}).get("baseline", 1e9) < 60 else "")
        + ".",
        "",
        "## Results",
        "",
    ]
    table = cifar.results_markdown(results).split("\n")
    lines += table[4:]  # drop the example's own title block
    if cmp_:
        p = cmp_["paper"]
        lines += [
            "## Against the paper (Table 1, CIFAR-10, VGG, 70% pruned)",
            "",
            "| | test error before -> after | params | FLOPs |",
            "|---|---|---:|---:|",
            f"| paper (VGG-19, 160 epochs) | {p['error_baseline']:.2%} -> {p['error_pruned']:.2%} "
            f"| -{p['params_reduction']:.1%} | -{p['flops_reduction']:.1%} |",
            f"| this run | {cmp_['error_baseline']:.2%} -> {cmp_['error_pruned']:.2%} "
            f"| -{cmp_['params_reduction']:.1%} | -{cmp_['flops_reduction']:.1%} |",
            "",
            "The paper's row is VGG-19 (20M parameters) trained for 160 epochs per stage on the "
            "original binary data; this run is a smaller network trained briefly on a JPEG "
            "re-encoding, so compare the changes (error before -> after, params, FLOPs), not "
            "the absolute error. \"Before\" is the baseline's error, as in the paper.",
            "",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
