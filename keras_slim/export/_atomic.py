"""All-or-nothing file output: write a temp file next to the target, then rename."""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from typing import Iterator

from keras_slim.errors import ArgumentTypeError
from keras_slim.export.report import ExportError

logger = logging.getLogger(__name__)


def check_output_path(path: str | os.PathLike, ext: str) -> str:
    """Absolute target path; fail before any work if it cannot be written."""
    if not isinstance(path, (str, os.PathLike)):
        raise ArgumentTypeError(f"path must be a str or os.PathLike, got {type(path).__name__}: "
                                f"{path!r}")
    target = os.path.abspath(os.fspath(path))
    if os.path.isdir(target):
        raise ExportError(f"path {os.fspath(path)!r} is a directory; pass a file name such as "
                          f"'model{ext}'.")
    parent = os.path.dirname(target)
    if not os.path.isdir(parent):
        raise ExportError(f"The directory {parent!r} for path {os.fspath(path)!r} does not "
                          "exist; create it first (os.makedirs(..., exist_ok=True)).")
    if not os.access(parent, os.W_OK):
        raise ExportError(f"The directory {parent!r} for path {os.fspath(path)!r} is not "
                          "writable.")
    if not target.endswith(ext):
        logger.warning("Writing %s to %r, which does not end in %s.", ext, target, ext)
    return target


@contextlib.contextmanager
def atomic_file(target: str) -> Iterator[str]:
    """Yield a temp path in the target's directory; rename it onto `target` on success.

    Same directory so `os.replace` is an atomic rename on one filesystem. On any
    exception the temp file is removed and `target` (new or pre-existing) is untouched.
    The file ends with the permissions a plain `open()` would give it.
    """
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target),
                               prefix=f".{os.path.basename(target)}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        # mkstemp makes the file 0600; give it the mode open() would (0666 less the umask)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it: set, then restore at once
    os.umask(mask)
    return mask
