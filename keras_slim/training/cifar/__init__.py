"""The reference CIFAR-10 recipe of Network Slimming (Liu et al., ICCV 2017).

* data: `load_cifar10` (Keras download, or a local JPEG folder/archive,
  decoded once and cached), `CIFAR10_CLASSES`, `CIFAR10_MEAN`, `CIFAR10_STD`;
* input pipeline: `make_dataset`, `cifar_augment`, `normalize`;
* the paper's networks: `models.vgg`, `models.preact_resnet`,
  `models.densenet`;
* the recipe: `make_config` / `Config`, `run_pipeline` (baseline, sparsity
  training, prune, fine-tune, multi-pass, TFLite export, sweep, report),
  `main` (the command line of ``examples/cifar10_*.py``), `results_markdown`.

Example:
    >>> from keras_slim.training import cifar
    >>> cfg = cifar.make_config("vgg", "smoke")
    >>> results = cifar.run_pipeline(cfg, "cifar10-jpeg.tar.gz", "runs/vgg")  # doctest: +SKIP
"""
from keras_slim.training._json import json_default
from keras_slim.training.cifar import models
from keras_slim.training.cifar.config import (
    ARCHS, REFERENCE, SCALES, Config, config_from_args, make_config, parse_args,
)
from keras_slim.training.cifar.data import (
    CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, default_cache_dir, load_cifar10,
)
from keras_slim.training.cifar.pipeline import cifar_augment, make_dataset, normalize
from keras_slim.training.cifar.recipe import (
    export_and_time, limit_data, main, run_pipeline, split_validation,
)
from keras_slim.training.cifar.report import results_markdown
from keras_slim.training.cifar.stages import Run, build_model, compile_model, step_schedule

__all__ = [
    "ARCHS", "CIFAR10_CLASSES", "CIFAR10_MEAN", "CIFAR10_STD", "REFERENCE", "SCALES", "Config",
    "Run", "build_model", "cifar_augment", "compile_model", "config_from_args",
    "default_cache_dir", "export_and_time", "json_default", "limit_data", "load_cifar10", "main",
    "make_config", "make_dataset", "models", "normalize", "parse_args", "results_markdown",
    "run_pipeline", "split_validation", "step_schedule",
]
