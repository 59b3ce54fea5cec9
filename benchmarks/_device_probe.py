"""Seconds per epoch on this machine, to size a criteria run to a time budget.

    KERAS_BACKEND=jax python benchmarks/_device_probe.py --data cifar10-jpeg.tar.gz [--device cuda]

Trains criteria.py's pre-activation ResNet-20 (the ``cpu`` recipe: 45,000
images, batch 128) for two epochs in Keras and, where torch and
torch_pruning import, one epoch of torch_pruning_compare.py's fine-tuning of
the same network ported to PyTorch; prints one JSON line: ``keras_compile_s``
(first epoch minus second), ``keras_epoch_s``, ``torch_epoch_s``. Used by
benchmarks/device_criteria.sh; nothing is saved.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import keras
import numpy as np

from keras_slim.training import cifar


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    ap.add_argument("--images", type=int, default=45000)
    args = ap.parse_args(argv)
    (x, y), _ = cifar.load_cifar10(args.data)
    x, y = x[: args.images], y[: args.images]
    cfg = cifar.make_config("resnet", "cpu")
    model = cifar.build_model(cfg)
    cifar.compile_model(model, cfg)
    data = cifar.make_dataset(x, y, cfg.batch_size, training=True, seed=0)
    times = []
    for _ in range(2):
        t = time.time()
        model.fit(data, epochs=1, verbose=0)
        times.append(time.time() - t)
    out = dict(backend=keras.backend.backend(), keras_epoch_s=round(times[1], 2),
               keras_compile_s=round(max(0.0, times[0] - times[1]), 2), images=len(x))
    try:
        import torch

        sys.path.insert(0, os.path.dirname(__file__))
        import torch_pruning_compare as tpc
    except ImportError as e:
        out["torch"] = f"unavailable: {e}"
    else:
        tpc.DEVICE = torch.device(args.device)
        net = tpc._Graph(model)
        t = time.time()
        tpc.finetune(net, x, y.reshape(-1), 1)
        out["torch_epoch_s"] = round(time.time() - t, 2)
        out["torch_device"] = args.device
    print("PROBE " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
