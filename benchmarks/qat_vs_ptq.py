"""int8 post-training quantization vs quantization-aware training on a slimmed CIFAR-10 VGG.

    python benchmarks/qat_vs_ptq.py [--data ../shared/data/cifar10-jpeg.tar.gz]
        [--train-samples 25000] [--epochs 6] [--finetune-epochs 2] [--qat-epochs 1]

CPU-sized recipe (2 cores, ~20 min), on real CIFAR-10:

1. half-width VGG-11 (keras_slim.training.cifar.models.vgg(11, width=0.5)), sparsity training
   with keras_slim.add_bn_l1 for `--epochs` epochs on a random `--train-samples`
   subset of the training set (paper augmentation: pad 4, crop, flip);
2. keras_slim.prune at `--ratio` (50 % of the channels) and `--finetune-epochs`
   of fine-tuning (float model "slim");
3. PTQ: keras_slim.export_tflite(slim, quantize="int8") calibrated on 200
   training images;
4. QAT: keras_slim.qat.quantize_aware(slim) (tf_keras + TFMOT), `--qat-epochs`
   at a small learning rate, keras_slim.qat.export_qat_tflite;
5. control: the float slim model trained for the same extra epochs at the same
   learning rate, then PTQ again, so QAT is not credited for extra training.

All accuracies are top-1 on the full 10,000-image test set; TFLite accuracies
are measured by running every test image through the file in LiteRT.
Writes benchmarks/results/qat_vs_ptq.{json,md}.
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import tempfile
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_slim  # noqa: E402
from keras_slim.training import cifar  # noqa: E402
from keras_slim.training.cifar import models  # noqa: E402
from keras_slim.qat import export_qat_tflite, quantize_aware  # noqa: E402
from _results import save_results  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.join(HERE, "..", "..", "shared", "data", "cifar10-jpeg.tar.gz")


def sgd(learning_rate):
    """The paper's optimizer: SGD, momentum 0.9, with weight decay."""
    return keras.optimizers.SGD(learning_rate, momentum=0.9, weight_decay=5e-4)


def cosine(lr: float, steps: int):
    return keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, steps))


def compile3(model, optimizer):
    model.compile(optimizer=optimizer,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--train-samples", type=int, default=25000)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--l1", type=float, default=2e-3)
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--finetune-epochs", type=int, default=2)
    ap.add_argument("--qat-epochs", type=int, default=1)
    ap.add_argument("--qat-lr", type=float, default=1e-3)
    ap.add_argument("--test-samples", type=int, default=None,
                    help="evaluate on the first N test images (default: all; for smoke runs)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    keras.utils.set_random_seed(args.seed)
    t0 = time.time()
    timings = {}

    def lap(name):
        timings[name] = round(time.time() - t0 - sum(timings.values()), 1)
        print(f"[{time.time() - t0:7.1f} s] {name}", flush=True)

    (x_train, y_train), (x_test, y_test) = cifar.load_cifar10(args.data)
    rng = np.random.default_rng(args.seed)
    idx = rng.permutation(len(x_train))[:args.train_samples]
    x_tr, y_tr = x_train[idx], y_train[idx]
    train = cifar.make_dataset(x_tr, y_tr, args.batch, training=True, seed=args.seed)
    n_test_total = len(x_test)
    if args.test_samples:  # the test split is ordered by class: take a random subset
        pick = rng.permutation(len(x_test))[:args.test_samples]
        x_test, y_test = x_test[pick], y_test[pick]
    x_test_n = np.asarray(cifar.normalize(x_test))
    y_test = np.asarray(y_test).reshape(-1).astype("int64")
    x_calib = np.asarray(cifar.normalize(x_tr[:200]))
    steps = int(np.ceil(len(x_tr) / args.batch))
    lap("load data")

    # 1. sparsity training
    model = models.vgg(11, width=0.5)
    keras_slim.add_bn_l1(model, args.l1)
    compile3(model, sgd(cosine(0.05, steps * args.epochs)))
    model.fit(train, epochs=args.epochs, verbose=2)
    acc_sparse = model.evaluate(x_test_n, y_test, batch_size=256, verbose=0)[1]
    lap("sparsity training")

    # 2. prune + fine-tune
    plan = keras_slim.plan(model, args.ratio)
    slim = keras_slim.prune(model, plan)
    keras_slim.add_bn_l1(slim, 0)
    compile3(slim, sgd(0.01))
    acc_pruned = slim.evaluate(x_test_n, y_test, batch_size=256, verbose=0)[1]
    compile3(slim, sgd(cosine(0.01, steps * args.finetune_epochs)))
    slim.fit(train, epochs=args.finetune_epochs, verbose=2)
    acc_slim = slim.evaluate(x_test_n, y_test, batch_size=256, verbose=0)[1]
    slim_weights = slim.get_weights()
    lap("prune + fine-tune")

    work = tempfile.mkdtemp(prefix="qat_vs_ptq_")
    rows = []

    def row(name, report=None, keras_acc=None, path=None, note=""):
        rows.append(dict(
            model=name, keras_accuracy=None if keras_acc is None else round(float(keras_acc), 4),
            tflite_accuracy=None if report is None or report.exported_accuracy is None
            else round(report.exported_accuracy, 4),
            top1_agreement=None if report is None or report.top1_agreement is None
            else round(report.top1_agreement, 4),
            tflite_bytes=None if path is None else os.path.getsize(path), note=note))
        print(rows[-1], flush=True)

    # float32 reference file
    p = os.path.join(work, "slim_fp32.tflite")
    keras_slim.export_tflite(slim, p)
    row("slim float32", keras_acc=acc_slim, path=p, note="Keras accuracy; file verified < 1e-4")

    # 3. PTQ
    p = os.path.join(work, "slim_ptq_int8.tflite")
    r_ptq = keras_slim.export_tflite(slim, p, quantize="int8", representative_data=x_calib,
                                     labelled_data=(x_test_n, y_test), num_calibration_samples=200)
    row("PTQ int8", r_ptq, acc_slim, p, "calibrated on 200 training images")
    lap("PTQ")

    # 4. QAT
    import tf_keras

    q = quantize_aware(slim)
    q.compile(optimizer=tf_keras.optimizers.SGD(args.qat_lr, momentum=0.9),
              loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"])
    acc_q0 = q.evaluate(x_test_n, y_test, batch_size=256, verbose=0)[1]
    q.fit(train, epochs=args.qat_epochs, verbose=2)
    acc_q = q.evaluate(x_test_n, y_test, batch_size=256, verbose=0)[1]
    p = os.path.join(work, "slim_qat_int8.tflite")
    r_qat = export_qat_tflite(q, p, labelled_data=(x_test_n, y_test))  # QAT ranges only
    row("QAT int8", r_qat, acc_q, p,
        f"{args.qat_epochs} QAT epoch(s) at lr {args.qat_lr}; QAT model before training "
        f"{acc_q0:.4f}; no calibration data (ranges learned in QAT)")
    lap("QAT")

    # 5. control: same extra float training, then PTQ
    slim.set_weights(slim_weights)
    compile3(slim, keras.optimizers.SGD(args.qat_lr, momentum=0.9))
    slim.fit(train, epochs=args.qat_epochs, verbose=2)
    acc_ctrl = slim.evaluate(x_test_n, y_test, batch_size=256, verbose=0)[1]
    p = os.path.join(work, "slim_ctrl_ptq_int8.tflite")
    r_ctrl = keras_slim.export_tflite(slim, p, quantize="int8", representative_data=x_calib,
                                      labelled_data=(x_test_n, y_test),
                                      num_calibration_samples=200)
    row("float +extra epoch(s), PTQ int8", r_ctrl, acc_ctrl, p,
        "control: same extra training as QAT, in float")
    lap("control")

    import tensorflow as tf
    import tensorflow_model_optimization as tfmot

    meta = dict(
        command=("python benchmarks/qat_vs_ptq.py " + " ".join(
            argv if argv is not None else sys.argv[1:])).strip(),
        data=f"CIFAR-10 (JPEG archive), {len(x_tr)} of {len(x_train)} training images "
             f"(random subset, seed {args.seed}), {len(x_test)} of {n_test_total} test images",
        model="keras_slim.training.cifar.models.vgg(11, width=0.5)",
        recipe=dict(sparsity_epochs=args.epochs, l1=args.l1, ratio=args.ratio,
                    finetune_epochs=args.finetune_epochs, qat_epochs=args.qat_epochs,
                    qat_lr=args.qat_lr, batch=args.batch),
        accuracy=dict(sparsity_trained=round(float(acc_sparse), 4),
                      pruned_before_finetune=round(float(acc_pruned), 4),
                      slim_finetuned=round(float(acc_slim), 4)),
        params=dict(before=plan.params_before, after=plan.params_after),
        macs=dict(before=plan.macs_before, after=plan.macs_after),
        machine=f"{platform.machine()}, {os.cpu_count()} cores (shared)",
        versions=dict(tensorflow=tf.__version__, keras=keras.__version__,
                      tfmot=tfmot.__version__),
        timings_s=timings, wall_s=round(time.time() - t0, 1))
    save_results(args.out, "qat_vs_ptq", dict(meta=meta, rows=rows), render(meta, rows))


def render(meta, rows) -> str:
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    rec, acc = meta["recipe"], meta["accuracy"]
    lines = [
        "# int8: post-training quantization vs quantization-aware training (slim VGG-11, CIFAR-10)",
        "",
        f"Command: `{meta['command']}`  ",
        f"Data: {meta['data']}.  ",
        f"Model: {meta['model']}; sparsity training {rec['sparsity_epochs']} epochs "
        f"(BN L1 {rec['l1']}), prune {rec['ratio']:.0%} of channels, fine-tune "
        f"{rec['finetune_epochs']} epochs; QAT {rec['qat_epochs']} epoch(s) at lr {rec['qat_lr']}.  ",
        f"Params {meta['params']['before']:,} -> {meta['params']['after']:,}, MACs "
        f"{meta['macs']['before']:,} -> {meta['macs']['after']:,}. Test accuracy: sparsity-trained "
        f"{acc['sparsity_trained']:.4f}, pruned before fine-tuning {acc['pruned_before_finetune']:.4f}, "
        f"fine-tuned {acc['slim_finetuned']:.4f}.  ",
        f"{meta['machine']}; TF {meta['versions']['tensorflow']}, Keras {meta['versions']['keras']}, "
        f"TFMOT {meta['versions']['tfmot']}; wall {meta['wall_s']} s.",
        "",
        "| model | Keras / QAT-model accuracy | .tflite accuracy | top-1 agreement with Keras | "
        ".tflite KiB | note |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        size = "-" if r["tflite_bytes"] is None else f"{r['tflite_bytes'] / 1024:,.1f}"
        lines.append(f"| {r['model']} | {fmt(r['keras_accuracy'])} | {fmt(r['tflite_accuracy'])} | "
                     f"{fmt(r['top1_agreement'])} | {size} | {r['note']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
