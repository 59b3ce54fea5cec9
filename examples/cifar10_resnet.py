"""Network Slimming on CIFAR-10 with a pre-activation ResNet (Liu et al., ICCV 2017).

Paper setting (--scale paper): ResNet-164, lambda 1e-5, prune 40% and 60%;
160 epochs of SGD per stage.
CPU setting (--scale cpu, the default): ResNet-20 (bottleneck, n=2), a short schedule.
Smoke test (--scale smoke): a few hundred images, one epoch per stage.

    python examples/cifar10_resnet.py --scale smoke --out runs/smoke_resnet
    python examples/cifar10_resnet.py --data path/to/cifar10-jpeg.tar.gz --scale cpu

Run again with the same --out to resume an interrupted run. See train_lib.py
for the stages, flags and outputs (results.json, results.md, plots/).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from train_lib import main  # noqa: E402

if __name__ == "__main__":
    main("resnet")
