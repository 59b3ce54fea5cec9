"""What a CIFAR-10 run of the reference recipe does: `Config`, the paper's and the
reduced configurations (`make_config`), and the command-line flags that override
them (`parse_args`, `config_from_args`).

Scales: ``paper`` is the paper's setting (VGG-19 / ResNet-164 / DenseNet-40,
160 epochs, batch 64, SGD lr 0.1 momentum 0.9 weight decay 1e-4, lr / 10 at
50% and 75% of the epochs, fine-tuning with the same schedule); ``cpu`` is a
reduced setting meant for 2 CPU cores (VGG: half-width VGG-11, 10 + 10 epochs,
lambda 10x the paper's for the shorter schedule, 5 fine-tuning epochs, 2
multi-pass passes of 3 epochs, batch 128: about 30 minutes on 2 idle cores, up
to an hour when they are shared with other work); ``smoke`` uses a few hundred
images and one epoch per stage, to check the plumbing.
"""
from __future__ import annotations

import argparse
import dataclasses

from keras_slim.errors import ArgumentError

__all__ = ["ARCHS", "REFERENCE", "SCALES", "Config", "config_from_args", "make_config",
           "parse_args"]

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
    model: dict  # keyword arguments of the keras_slim.training.cifar.models builder
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
    # what ranks channels in every prune: "bn_scale" (the paper, exact at gamma = 0) or
    # "bn_scale_readers" (also cuts residual streams / concatenations read raw elsewhere)
    criterion: str = "bn_scale"
    max_layer_ratio: float | None = None  # single-pass cap per layer (None: the paper's pure
    # global threshold, which can cut a layer whose factors are all small to 1 channel)
    train_limit: int | None = None  # use only this many training images (smoke)
    # held out of the training images (seeded): multi-pass stopping and the
    # accuracy-vs-ratio sweep are decided/measured on it, so the test set is used once
    # per reported model; 0 = none (those choices then fall back to the test set, and
    # results.md says so)
    val_images: int = 5000
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
        raise ArgumentError(f"arch must be one of {ARCHS}, got {arch!r}")
    if scale not in SCALES:
        raise ArgumentError(f"--scale must be one of {SCALES}, got {scale!r}")
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
        # when they are shared; pruned models train 2-3x faster. ResNet-20: ~160-210 s/epoch
        # on 2 shared cores, 102 min for the whole run (benchmarks/results/
        # example_resnet_cpu.md). DenseNet-22: ~250-300 s/epoch on 2 idle cores, 81 min for
        # 5 + 5 epochs and 2 x 3 fine-tuning epochs (example_densenet_cpu.md).
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
                  sweep=(0.3, 0.6), latency_runs=5, val_images=64)




def parse_args(arch: str, argv: list[str] | None = None, *,
               default_data: str = "keras") -> argparse.Namespace:
    """The flags of ``examples/cifar10_<arch>.py`` (``--help`` lists them).

    Args:
        arch: one of `ARCHS`.
        argv: the arguments (default ``sys.argv[1:]``).
        default_data: ``--data`` when it is not given: a folder or archive,
            or ``"keras"`` for the Keras download.

    Bad values exit through ``argparse`` (status 2, message on stderr).
    """
    ap = argparse.ArgumentParser(
        description=f"Network Slimming on CIFAR-10 with {arch}: baseline, sparsity training, "
                    "prune, fine-tune, multi-pass, export.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
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
    ap.add_argument("--criterion", choices=("bn_scale", "bn_scale_readers"),
                    help="what ranks channels (default bn_scale, the paper); "
                         "bn_scale_readers scores a channel by every BN that reads it, as "
                         "Torch-Pruning does, and also cuts the residual streams and "
                         "concatenations other layers read raw (not exact there)")
    ap.add_argument("--max-layer-ratio", type=float,
                    help="single-pass pruning removes at most this fraction of any layer "
                         "(default: no cap, the paper's global threshold)")
    ap.add_argument("--val-images", type=int,
                    help="training images held out for validation: multi-pass stopping and the "
                         "accuracy-vs-ratio sweep use them, the test set is evaluated once per "
                         "reported model; 0 = no split (then those choices use the test set) "
                         "(default: 5000; smoke: 64)")
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
    if args.val_images is not None and args.val_images < 0:
        ap.error(f"--val-images must be >= 0, got {args.val_images}")
    if args.ratios and not all(0 < r < 1 for r in args.ratios):
        ap.error(f"--ratios must be in (0, 1), got {args.ratios}")
    if args.max_layer_ratio is not None and not 0 < args.max_layer_ratio <= 1:
        ap.error(f"--max-layer-ratio must be in (0, 1], got {args.max_layer_ratio}")
    return args


def config_from_args(arch: str, args: argparse.Namespace) -> Config:
    """`make_config(arch, args.scale)` with the flags of `parse_args` applied."""
    cfg = make_config(arch, args.scale)
    overrides = {"epochs": args.epochs, "finetune_epochs": args.finetune_epochs,
                 "multipass_epochs": args.multipass_epochs,
                 "max_layer_ratio": args.max_layer_ratio,
                 "criterion": getattr(args, "criterion", None),
                 "batch_size": args.batch_size, "lr": args.lr, "sparsity": args.sparsity,
                 "finetune_lr": args.finetune_lr, "val_images": args.val_images,
                 "ratios": tuple(args.ratios) if args.ratios else None}
    cfg = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    return dataclasses.replace(cfg, multipass=cfg.multipass and not args.no_multipass,
                               export=cfg.export and not args.no_export,
                               sweep=() if args.no_sweep else cfg.sweep, seed=args.seed)

