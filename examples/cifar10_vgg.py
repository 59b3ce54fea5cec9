"""Network Slimming on CIFAR-10 with a VGG (Liu et al., ICCV 2017).

Paper setting (--scale paper): VGG-19, lambda 1e-4, prune 70% and 50%; 160 epochs of SGD per stage.
CPU setting (--scale cpu, the default): half-width VGG-11, a short schedule.
Smoke test (--scale smoke): a few hundred images, one epoch per stage.

    python examples/cifar10_vgg.py --scale smoke --out runs/smoke_vgg
    python examples/cifar10_vgg.py --data path/to/cifar10-jpeg.tar.gz --scale cpu

Run again with the same --out to resume an interrupted run. See train_lib.py
for the stages, flags and outputs (results.json, results.md, plots/).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from train_lib import main  # noqa: E402

if __name__ == "__main__":
    main("vgg")
