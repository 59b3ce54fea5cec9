"""Network Slimming on CIFAR-10 with a DenseNet (Liu et al., ICCV 2017).

Paper setting (--scale paper): DenseNet-40 (k=12), lambda 1e-5, prune 40% and 60%;
160 epochs of SGD per stage.
CPU setting (--scale cpu, the default): DenseNet-22 (k=12), a short schedule.
Smoke test (--scale smoke): a few hundred images, one epoch per stage.

    python examples/cifar10_densenet.py --scale smoke --out runs/smoke_densenet
    python examples/cifar10_densenet.py --data path/to/cifar10-jpeg.tar.gz --scale cpu

Run again with the same --out to resume an interrupted run. The stages, flags and
outputs (results.json, results.md, plots/) are those of
`keras_slim.training.cifar` (`python examples/cifar10_densenet.py --help`).
"""
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow loads: hide C++ logs

from keras_slim.training import cifar  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent

if __name__ == "__main__":
    # --data defaults to a local copy next to the checkout when there is one, else the Keras download
    cifar.main("densenet", local_copy=REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz",
               out_root=REPO / "runs")
