"""The training stages of the CIFAR recipe: model, optimizer, the paper's step
schedule, and `Run.fit_stage`, which checkpoints every epoch and resumes.

A stage ``name`` keeps ``checkpoints/<name>-<epoch>.keras`` (only the newest)
while it trains and ``models/<name>.keras`` once it is done; running the same
command again loads finished stages and resumes unfinished ones.
"""
from __future__ import annotations

import glob
import json
import logging
import os
import re
from typing import Callable

import keras
import numpy as np

from keras_slim.sparsity import add_bn_l1
from keras_slim.training.callbacks import SparsityMonitor
from keras_slim.training.cifar import models
from keras_slim.training.cifar.config import Config
from keras_slim.training.cifar.pipeline import make_dataset

logger = logging.getLogger(__name__)

__all__ = ["Run", "build_model", "compile_model", "step_schedule"]


def build_model(cfg: Config) -> keras.Model:
    """The configuration's network (`cfg.arch` with `cfg.model`) for 32x32x3 inputs, 10 classes."""
    builder = {"vgg": models.vgg, "resnet": models.preact_resnet,
               "densenet": models.densenet}[cfg.arch]
    return builder(num_classes=10, input_shape=(32, 32, 3), **cfg.model)


def compile_model(model: keras.Model, cfg: Config, lr: float | None = None) -> None:
    """SGD with momentum and weight decay, cross-entropy on logits, accuracy."""
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=cfg.lr if lr is None else lr,
                                       momentum=cfg.momentum,
                                       weight_decay=cfg.weight_decay),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def step_schedule(cfg: Config, epochs: int, base: float | None = None) -> Callable[[int], float]:
    """The paper's schedule: `base` (default cfg.lr), / 10 at 50% and at 75% of the epochs."""
    drops = [int(round(f * epochs)) for f in cfg.lr_drops]
    base = cfg.lr if base is None else base

    def lr(epoch: int, _current=None) -> float:
        return base * 0.1 ** sum(epoch >= d for d in drops if d > 0)

    return lr


class _KeepNewest(keras.callbacks.Callback):
    """Delete older per-epoch checkpoints of a stage after each save."""

    def __init__(self, pattern: str):
        super().__init__()
        self.pattern = pattern

    def on_epoch_end(self, epoch, logs=None):
        for path in _checkpoints(self.pattern)[:-1]:
            os.remove(path)


def _epoch_of(path: str) -> int:
    """The epoch number in a checkpoint name ``<stage>-0007.keras``."""
    return int(re.search(r"-(\d+)\.keras$", path).group(1))


def _checkpoints(pattern: str) -> list[str]:
    return sorted(glob.glob(pattern), key=_epoch_of)


class Run:
    """Paths, data and helpers of one pipeline run.

    Args:
        cfg: the run's configuration.
        out: its folder; ``checkpoints/``, ``models/``, ``history/``,
            ``plots/``, ``plans/`` and ``tflite/`` are created in it.
        data: ``(x_train, y_train), (x_test, y_test)`` as `load_cifar10`
            returns them.
        verbose: Keras ``fit`` verbosity.
        val: ``(x_val, y_val)`` held out of the training images
            (`split_validation`), or None: `validate` then falls back to the
            test set.
    """

    def __init__(self, cfg: Config, out: str, data: tuple, verbose: int,
                 val: tuple | None = None):
        self.cfg = cfg
        self.out = out
        (self.x_train, self.y_train), (self.x_test, self.y_test) = data
        self.x_val, self.y_val = val if val is not None else (None, None)
        self.verbose = verbose
        self.steps = int(np.ceil(len(self.x_train) / cfg.batch_size))
        for sub in ("checkpoints", "models", "history", "plots", "plans", "tflite"):
            os.makedirs(os.path.join(out, sub), exist_ok=True)
        self.train_ds = make_dataset(self.x_train, self.y_train, cfg.batch_size, True,
                                     seed=cfg.seed)
        self.test_ds = make_dataset(self.x_test, self.y_test, 256, False)
        self.val_ds = (make_dataset(self.x_val, self.y_val, 256, False)
                       if self.x_val is not None and len(self.x_val) else None)

    def path(self, *parts: str) -> str:
        """A path under the run's folder."""
        return os.path.join(self.out, *parts)

    def evaluate(self, model: keras.Model) -> float:
        """Top-1 test accuracy (the reported number: once per reported model)."""
        return self._accuracy(model, self.test_ds)

    def validate(self, model: keras.Model) -> float:
        """Top-1 accuracy on the held-out validation images, for choices (test set if none)."""
        return self._accuracy(model, self.val_ds if self.val_ds is not None else self.test_ds)

    def _accuracy(self, model: keras.Model, data) -> float:
        if not model.compiled:
            compile_model(model, self.cfg)
        return float(model.evaluate(data, verbose=0, return_dict=True)["accuracy"])

    def fit_stage(self, name: str, make: Callable[[], keras.Model], epochs: int,
                  sparsity: float, monitor: bool = True, callbacks=(),
                  lr: float | None = None) -> keras.Model:
        """Train stage `name` with checkpoints; resume or reuse what a previous run left.

        `make()` returns the model to train when the stage starts fresh; it is
        compiled here with the SGD configuration and `sparsity` is applied.
        `callbacks` are added after the built-in ones (checkpoint, lr schedule,
        CSV log, SparsityMonitor when `monitor`). `lr` is the schedule's first
        learning rate (default cfg.lr).
        """
        final = self.path("models", f"{name}.keras")
        if os.path.exists(final):
            logger.info("stage %s: already done, loading %s", name, final)
            return keras.models.load_model(final)
        pattern = self.path("checkpoints", f"{name}-*.keras")
        found = _checkpoints(pattern)
        csv = self.path("history", f"{name}.csv")
        gamma_json = self.path("history", f"{name}_gamma.json")
        if found:
            model = keras.models.load_model(found[-1])
            initial = _epoch_of(found[-1])
            logger.info("stage %s: resuming from %s (epoch %d of %d)", name, found[-1],
                        initial, epochs)
        else:
            model = make()
            add_bn_l1(model, sparsity)
            compile_model(model, self.cfg, lr)
            initial = 0
            for stale in (csv, gamma_json):
                if os.path.exists(stale):
                    os.remove(stale)
        extra = list(callbacks)
        callbacks = [
            keras.callbacks.ModelCheckpoint(
                self.path("checkpoints", f"{name}-{{epoch:04d}}.keras")),
            _KeepNewest(pattern),
            keras.callbacks.LearningRateScheduler(step_schedule(self.cfg, epochs, lr)),
            keras.callbacks.CSVLogger(csv, append=True),
        ]
        mon = None
        if monitor:
            mon = SparsityMonitor(plot_path=self.path("plots", f"gamma_{name}.png"),
                                  add_to_logs=False)
            if os.path.exists(gamma_json):
                with open(gamma_json) as f:
                    mon.history = [_keys_to_float(r) for r in json.load(f)]

            def save_gamma(epoch, logs):
                with open(gamma_json, "w") as f:
                    json.dump(mon.history, f)

            callbacks += [mon, keras.callbacks.LambdaCallback(on_epoch_end=save_gamma)]
        callbacks += extra
        if initial < epochs:
            logger.info("== %s: epochs %d-%d, lambda=%g, %d images, batch %d", name,
                        initial + 1, epochs, sparsity, len(self.x_train), self.cfg.batch_size)
            model.fit(self.train_ds, epochs=epochs, initial_epoch=initial, callbacks=callbacks,
                      verbose=self.verbose, shuffle=False)
        model.save(final)
        for path in _checkpoints(pattern):
            os.remove(path)
        return model


def _keys_to_float(record: dict) -> dict:
    out = dict(record)
    for key in ("below", "threshold_at", "mass_below"):
        if key in out:
            out[key] = {float(k): v for k, v in out[key].items()}
    return out
