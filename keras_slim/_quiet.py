"""Keep TensorFlow's C++ start-up logs out of the `keras-slim` command's output.

Standard library only: `keras_slim/__init__.py` calls this before anything
imports TensorFlow (TF prints its oneDNN/cuda/absl lines while loading, and
reads TF_CPP_MIN_LOG_LEVEL only once).
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
from typing import Iterator, Sequence

_VERBOSE_FLAGS = ("--verbose", "--debug")


def _tf_logs_wanted(argv: Sequence[str]) -> bool:
    """Whether `argv` has -v/--verbose or --debug (also -vv, -qv, abbreviations)."""
    for arg in argv:
        if arg == "--":
            break
        if re.fullmatch(r"-[vq]*v[vq]*", arg):
            return True
        if len(arg) > 2 and any(flag.startswith(arg) for flag in _VERBOSE_FLAGS):
            return True
    return False


def _silence_tf_logs(argv: Sequence[str]) -> None:
    """Keep TF's C++ start-up logs off stderr unless `argv` asks for -v or --debug.

    Only logging changes (oneDNN and everything else stay as configured):
    TF_CPP_MIN_LOG_LEVEL defaults to 3 (a value the user set wins) and, if
    TensorFlow is not loaded yet, it is imported with file descriptor 2 pointing
    at /dev/null. Once TensorFlow is loaded this cannot hide what it printed.
    """
    if _tf_logs_wanted(argv):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules:
        return
    with _stderr_fd_to_devnull():
        try:
            import tensorflow  # noqa: F401
        except Exception:  # the real import later reports it (run with -v for TF's logs)
            pass


@contextlib.contextmanager
def _stderr_fd_to_devnull() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null (C++ logs bypass sys.stderr), then restore it."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to hide
        yield
        return
    sys.stderr.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
