"""Network Slimming on CIFAR-10 with a VGG (Liu et al., ICCV 2017).

Paper setting (--scale paper): VGG-19, lambda 1e-4, prune 70% and 50%; 160 epochs of SGD per stage.
CPU setting (--scale cpu, the default): half-width VGG-11, a short schedule.
Smoke test (--scale smoke): a few hundred images, one epoch per stage.

    python examples/cifar10_vgg.py --scale smoke --out runs/smoke_vgg
    python examples/cifar10_vgg.py --data path/to/cifar10-jpeg.tar.gz --scale cpu

Run again with the same --out to resume an interrupted run. The stages, flags and
outputs (results.json, results.md, plots/) are those of
`keras_slim.training.cifar` (`python examples/cifar10_vgg.py --help`).
"""
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow loads: hide C++ logs

from keras_slim.training import cifar  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent

if __name__ == "__main__":
    # --data defaults to a local copy next to the checkout when there is one, else the Keras download
    cifar.main("vgg", local_copy=REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz",
               out_root=REPO / "runs")
