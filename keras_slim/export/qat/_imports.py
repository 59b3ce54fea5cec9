"""Lazy imports of tf_keras and TFMOT, without TFMOT's side effects on the caller.

Process-global side effects, and what this module does about them
-------------------------------------------------------------------
Measured with TF 2.21 / Keras 3.15 / tf-keras 2.21 / TFMOT 0.8.1:

* `import tf_keras` alone changes nothing global: Keras 3 (`import keras`)
  and tf_keras models live side by side in one process, and `tf.keras` keeps
  pointing at whatever the environment selected. `to_tf_keras` only needs
  this import.
* `import tensorflow_model_optimization` sets `os.environ
  ["TF_USE_LEGACY_KERAS"] = "1"` for the rest of the process (and for every
  subprocess started later) and then reads `tf.keras`. If `tf.keras` had not
  been resolved yet, that read makes it resolve to tf_keras *permanently*, so
  user code written as `tf.keras.layers.Dense` silently switches from Keras 3
  to Keras 2. Code using `import keras` is not affected: Keras 3 models keep
  building, training, saving, loading and exporting normally afterwards.
* keras_slim therefore imports TFMOT only inside `quantize_aware` /
  `export_qat_tflite`, and around that import it (1) resolves `tf.keras`
  first under the user's current environment, so it stays what it would have
  been without TFMOT, and (2) restores `TF_USE_LEGACY_KERAS` to its previous
  value (unset if it was unset). TFMOT reads the variable only at import
  time, so it keeps working on tf_keras. A user's Keras 3 session (including
  `tf.keras` and subprocesses) is thus left as it was; the one remaining
  effect is that `tf_keras` and TFMOT are loaded in the process.
* If the user imported TFMOT before calling keras_slim, the variable is
  already set (by TFMOT) and is left alone.
"""
from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
from types import ModuleType
from typing import Iterator

from keras_slim.errors import MissingDependencyError

logger = logging.getLogger(__name__)

_QAT_HINT = "Install the QAT extras with: pip install 'keras-slim[qat]'"
_LEGACY_ENV = "TF_USE_LEGACY_KERAS"


def tf_keras() -> ModuleType:
    """`tf_keras`, imported on first use (no process-global side effects)."""
    try:
        return importlib.import_module("tf_keras")
    except ImportError as err:
        raise MissingDependencyError(f"Converting to tf_keras needs the 'tf-keras' package "
                                     f"({err}). {_QAT_HINT}") from err


@contextlib.contextmanager
def _preserve_legacy_keras_env() -> Iterator[None]:
    """Keep `tf.keras` and TF_USE_LEGACY_KERAS as they are across a TFMOT import."""
    import tensorflow as tf

    # Resolve tf.keras's lazy loader now, under the user's current environment;
    # once resolved it never changes, whatever TFMOT sets afterwards.
    getattr(tf.keras, "version", None)
    before = os.environ.get(_LEGACY_ENV)
    try:
        yield
    finally:
        after = os.environ.get(_LEGACY_ENV)
        if after != before:
            if before is None:
                os.environ.pop(_LEGACY_ENV, None)
            else:
                os.environ[_LEGACY_ENV] = before
            logger.debug("Restored %s=%r after importing TFMOT (it had set %r).",
                         _LEGACY_ENV, before, after)


def tfmot() -> ModuleType:
    """`tensorflow_model_optimization`, imported without flipping the user's Keras."""
    if "tensorflow_model_optimization" not in sys.modules:
        tf_keras()
        with _preserve_legacy_keras_env():
            try:
                importlib.import_module("tensorflow_model_optimization")
            except ImportError as err:
                raise MissingDependencyError(
                    "Quantization-aware training needs the 'tensorflow-model-optimization' "
                    f"package ({err}). {_QAT_HINT}") from err
    return sys.modules["tensorflow_model_optimization"]


def tfmot_keras_module() -> ModuleType:
    """The Keras module TFMOT builds its layers with (must be tf_keras)."""
    tfmot()
    from tensorflow_model_optimization.python.core.keras import compat

    return compat.keras
