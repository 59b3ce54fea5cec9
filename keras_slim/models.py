"""Deprecated: the CIFAR networks moved to `keras_slim.training.cifar.models`.

Kept as an alias because tests and user code import ``keras_slim.models``;
import ``from keras_slim.training.cifar import models`` instead.
"""
import warnings

from keras_slim.training.cifar.models import VGG_CONFIGS, densenet, preact_resnet, vgg

warnings.warn("keras_slim.models moved to keras_slim.training.cifar.models; import it from "
              "there (this alias will be removed)", DeprecationWarning, stacklevel=2)

__all__ = ["VGG_CONFIGS", "densenet", "preact_resnet", "vgg"]
