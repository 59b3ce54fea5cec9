"""keras_slim: Network Slimming for Keras.

Sparsity-train with an L1 penalty on BatchNormalization scaling factors,
then remove the channels whose factors went to zero and get back a
physically smaller model (Liu et al., "Learning Efficient Convolutional
Networks through Network Slimming", ICCV 2017).
"""
import os as _os
import sys as _sys

if _sys.argv and _os.path.basename(_sys.argv[0]).startswith("keras-slim"):
    # The keras-slim command: hide TF's C++ start-up logs before keras loads TF
    # (unless -v/--debug). `import keras_slim` from user code changes nothing.
    from keras_slim._quiet import _silence_tf_logs

    _silence_tf_logs(_sys.argv[1:])


def _require_backend() -> None:
    """Import Keras, or say which backend package is missing and how to get one.

    TensorFlow is an extra (`keras-slim[tensorflow]`), so a fresh install may
    have no backend for the one Keras is set to (TensorFlow unless KERAS_BACKEND
    or ~/.keras/keras.json says otherwise); Keras' own error is a bare
    "No module named 'tensorflow'" from deep inside its import.
    """
    try:
        import keras  # noqa: F401
    except ModuleNotFoundError as err:
        root = (err.name or "").split(".")[0]
        if root not in ("tensorflow", "jax", "jaxlib", "torch"):
            raise
        from keras_slim.errors import MissingDependencyError

        chosen = _os.environ.get("KERAS_BACKEND", "")
        where = (f"KERAS_BACKEND={chosen}" if chosen
                 else "the default, or ~/.keras/keras.json")
        raise MissingDependencyError(
            f"keras_slim needs a Keras 3 backend: Keras is set to use {root!r} ({where}), "
            f"but the {root!r} package is not installed ({err}). Install it "
            f"(pip install 'keras-slim[tensorflow]' for TensorFlow, "
            f"'keras-slim[jax]' for JAX), or set KERAS_BACKEND to a backend you have "
            f"(tensorflow, jax or torch)") from err


_require_backend()

from keras_slim import criteria, testing  # noqa: E402
from keras_slim.errors import (  # noqa: E402
    ArgumentError, ArgumentTypeError, CliError, ExportError, MissingDependencyError,
    ModelError, PruneError, SlimError, TraceError, TranslationError,
)
from keras_slim.export import (  # noqa: E402  (step 4, deliver: the common cases)
    export_mnn, export_ncnn, export_tflite,
)
from keras_slim.handlers.base import Handler, slice_weights  # noqa: E402
from keras_slim.handlers.context import ChannelInfo  # noqa: E402
from keras_slim.handlers.registry import register_handler, unregister_handler  # noqa: E402
from keras_slim.layers import ChannelSelection, WeightedOp  # noqa: E402
from keras_slim.plan_data import LayerPlan, Plan  # noqa: E402
from keras_slim.pruning import plan, prune  # noqa: E402
from keras_slim.regularizers import BNL1, bn_l1  # noqa: E402
from keras_slim.sensitivity import SensitivityResult, sensitivity  # noqa: E402
from keras_slim.sparsity import add_bn_l1  # noqa: E402
from keras_slim.version import __version__  # noqa: E402

__all__ = [
    # the method: sparsity training, plan, prune
    "bn_l1", "BNL1", "add_bn_l1", "plan", "prune", "Plan", "LayerPlan",
    # choosing per-group ratios
    "sensitivity", "SensitivityResult",
    # extending it: handlers for your own layers
    "Handler", "ChannelInfo", "register_handler", "unregister_handler", "slice_weights",
    # layers a pruned model may contain, scoring criteria, equivalence checks
    "ChannelSelection", "WeightedOp", "criteria", "testing",
    # deliver (the rest of deployment is keras_slim.export)
    "export_tflite", "export_ncnn", "export_mnn",
    # errors
    "SlimError", "ArgumentError", "ArgumentTypeError", "ModelError", "TraceError", "PruneError",
    "MissingDependencyError", "ExportError", "TranslationError", "CliError",
    "__version__",
]

# Names that lived at the top level before the layout split them into
# keras_slim.export (deployment) and keras_slim.training (training aids).
# They still resolve, with a DeprecationWarning naming the new home.
_MOVED = {
    **{name: "keras_slim.export" for name in (
        "ExportReport", "LatencyReport", "LatencyTable", "benchmark_onnx", "benchmark_tflite",
        "compare_latency", "export_onnx", "fold_batchnorm")},
    **{name: "keras_slim.training" for name in (
        "MultiPassResult", "PassRecord", "SparsityMonitor", "plots", "slim_multipass")},
    **{name: "keras_slim.training.cifar" for name in (
        "cifar_augment", "load_cifar10", "make_dataset")},
}
_SUBPACKAGES = ("export", "training", "handlers")


def __getattr__(name: str):
    import importlib
    import warnings

    if name in _SUBPACKAGES:
        return importlib.import_module(f"keras_slim.{name}")
    home = _MOVED.get(name)
    if home is None:
        raise AttributeError(f"module 'keras_slim' has no attribute {name!r}")
    warnings.warn(f"keras_slim.{name} moved to {home}.{name}; import it from there "
                  "(the old name will be removed in a future release)",
                  DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(home), name)


def __dir__() -> list:
    return sorted(set(__all__) | set(_SUBPACKAGES))
