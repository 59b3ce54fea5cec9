"""Network Slimming end to end in about a minute, offline, on real data.

Data: the UCI handwritten digits (1,797 8x8 grey images, 10 classes) that
ship inside scikit-learn, so nothing is downloaded. The pipeline is the
paper's: sparsity training with L1 on the BN scaling factors, prune 50% of
the channels by a global |gamma| threshold, fine-tune, and report params,
MACs and accuracy at each step.

    python examples/quickstart.py [--ratio 0.5] [--epochs 30] [--out quickstart_out]
"""
from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402

import keras_slim  # noqa: E402


def load_digits():
    try:
        from sklearn.datasets import load_digits as sk_digits
    except ImportError as e:  # pragma: no cover - message for users
        raise SystemExit("quickstart needs scikit-learn for its bundled digits data: "
                         "pip install -e '.[examples]'") from e
    d = sk_digits()
    x = (d.images.astype("float32") / 16.0)[..., None]
    y = d.target.astype("int64")
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    x, y = x[order], y[order]
    split = int(0.8 * len(x))
    return (x[:split], y[:split]), (x[split:], y[split:])


def small_cnn() -> keras.Model:
    inp = keras.Input((8, 8, 1), name="digit")
    x = inp
    for i, (filters, pool) in enumerate([(32, False), (32, True), (64, False), (64, False)]):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{i + 1}")(x)
        # momentum 0.9 (PyTorch's 0.1): 0.99 lags behind on a data set this small.
        x = layers.BatchNormalization(momentum=0.9, name=f"bn{i + 1}")(x)
        x = layers.ReLU(name=f"relu{i + 1}")(x)
        if pool:
            x = layers.MaxPooling2D(name=f"pool{i + 1}")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, layers.Dense(10, name="classifier")(x), name="digits_cnn")


def compile_model(model, lr):
    # The paper's recipe: SGD with momentum and weight decay. Without decay on
    # the other weights the net can shrink gamma and grow the next layer's
    # weights instead, and "small" gammas would still matter.
    model.compile(optimizer=keras.optimizers.SGD(lr, momentum=0.9, weight_decay=5e-4),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])


def accuracy(model, x, y) -> float:
    return float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == y))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ratio", type=float, default=0.5, help="fraction of channels to remove")
    ap.add_argument("--sparsity", type=float, default=2e-2, help="lambda of the BN-gamma L1 penalty")
    ap.add_argument("--epochs", type=int, default=40, help="sparsity-training epochs")
    ap.add_argument("--lr", type=float, default=0.05, help="SGD learning rate")
    ap.add_argument("--finetune-epochs", type=int, default=10)
    ap.add_argument("--out", default="quickstart_out", help="where the report and models go")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    keras.utils.set_random_seed(0)
    t0 = time.time()
    (x_train, y_train), (x_test, y_test) = load_digits()
    print(f"UCI digits from scikit-learn: {len(x_train)} train / {len(x_test)} test images, 8x8x1")

    model = small_cnn()
    keras_slim.add_bn_l1(model, args.sparsity)
    compile_model(model, args.lr)
    print(f"\n1) sparsity training, lambda={args.sparsity:g}, {args.epochs} epochs")
    # Cosine decay lets the weights settle at the end of sparsity training.
    steps = args.epochs * int(np.ceil(len(x_train) / 64))
    model.optimizer.learning_rate = keras.optimizers.schedules.CosineDecay(args.lr, steps)
    model.fit(x_train, y_train, batch_size=64, epochs=args.epochs, verbose=2,
              validation_data=(x_test, y_test))
    acc_trained = accuracy(model, x_test, y_test)

    print(f"\n2) prune {args.ratio:.0%} of the channels by global |gamma| threshold")
    plan = keras_slim.plan(model, args.ratio)
    print(plan)
    small = keras_slim.prune(model, plan)
    acc_pruned = accuracy(small, x_test, y_test)

    print(f"\n3) fine-tune the pruned model, {args.finetune_epochs} epochs")
    compile_model(small, args.lr / 10)
    small.fit(x_train, y_train, batch_size=64, epochs=args.finetune_epochs, verbose=2)
    acc_tuned = accuracy(small, x_test, y_test)
    small.save(os.path.join(args.out, "digits_slim.keras"))

    report = {
        "data": "UCI digits (scikit-learn), 1437 train / 360 test",
        "ratio": plan.ratio,
        "params": [plan.params_before, plan.params_after],
        "macs": [plan.macs_before, plan.macs_after],
        "accuracy": {"sparsity_trained": acc_trained, "pruned": acc_pruned,
                     "fine_tuned": acc_tuned},
        "seconds": round(time.time() - t0, 1),
    }
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    print("\n| model | params | MACs | test accuracy |\n|---|---:|---:|---:|")
    print(f"| sparsity-trained | {plan.params_before:,} | {plan.macs_before:,} | {acc_trained:.4f} |")
    print(f"| pruned {plan.ratio:.0%} | {plan.params_after:,} | {plan.macs_after:,} | {acc_pruned:.4f} |")
    print(f"| pruned + fine-tuned | {plan.params_after:,} | {plan.macs_after:,} | {acc_tuned:.4f} |")
    print(f"\nparams -{1 - plan.params_after / plan.params_before:.1%}, "
          f"MACs -{1 - plan.macs_after / plan.macs_before:.1%}; done in {report['seconds']} s; "
          f"model and report.json in {args.out}/")
    return report


if __name__ == "__main__":
    main()
