"""keras_slim's exception family.

Every error keras_slim raises on purpose is a `SlimError`, so one
`except keras_slim.SlimError` catches them all. Each subclass also derives
from the built-in exception that code written before the family existed
caught (`ValueError` for bad arguments, `TypeError` for a wrong kind of
object, `ImportError` for a missing extra, ...), so such code keeps working.

Messages follow one rule: name what was passed, what is allowed, and how to
fix it.
"""
from __future__ import annotations

__all__ = [
    "SlimError", "ArgumentError", "ArgumentTypeError", "ModelError", "TraceError", "PruneError",
    "MissingDependencyError", "ExportError", "TranslationError", "CliError",
]


class SlimError(Exception):
    """Base class of every error keras_slim raises on purpose."""


class ArgumentError(SlimError, ValueError):
    """An argument has a value that is not allowed (a ratio outside (0, 1), ...)."""


class ArgumentTypeError(SlimError, TypeError):
    """An argument is the wrong kind of object (a path where a model is needed, ...)."""


class ModelError(SlimError, ValueError):
    """The model cannot be handled as asked: no BatchNormalization to score,
    an untraceable subclassed model, an input size that cannot be resolved."""


class TraceError(ModelError):
    """A custom layer or subclassed model could not be read as a graph."""


class PruneError(SlimError, RuntimeError):
    """Pruning could not build an exact model (for instance a handler claimed
    to fold a constant channel and returned no fold). Raised instead of
    returning a model that computes a different function."""


class MissingDependencyError(SlimError, ImportError):
    """An optional dependency (an extra such as `keras-slim[export]`) is missing."""


class ExportError(SlimError, RuntimeError):
    """Conversion, or verification of the converted file, failed; no file is left."""


class TranslationError(SlimError, ValueError):
    """A Keras 3 model could not be translated to tf_keras for quantization-aware training."""


class CliError(SlimError):
    """An error the `keras-slim` command reports as one line on stderr, exiting
    with `code` (2: usage)."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code
