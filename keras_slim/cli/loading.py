"""Model files and paths for the command line: checks before any work, and
`load_model`, which turns Keras' load failures into one-line, fixable errors."""
from __future__ import annotations

import importlib
import os
import zipfile
from typing import Any, Sequence

from keras_slim.cli.output import EXIT_UNSUPPORTED, EXIT_USAGE, logger, one_line
from keras_slim.errors import CliError

MODEL_EXTENSIONS = (".keras", ".h5", ".hdf5")
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def load_model(path: str, unsafe: bool = False) -> Any:
    """Load a `.keras` / `.h5` model file with Keras' safe mode unless `unsafe`.

    Raises:
        CliError: code 2 for a missing, unreadable or non-model file or a file
            that needs `--unsafe`; code 3 for a file Keras cannot rebuild
            (unknown custom class, broken config).
    """
    import keras

    import keras_slim  # noqa: F401  (registers BNL1 and ChannelSelection)
    from keras_slim import _keras

    check_input_file(path, MODEL_EXTENSIONS, "model")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".keras" and not zipfile.is_zipfile(path):
        raise CliError(f"{path!r} is not a Keras model file: a .keras file is a zip archive "
                       "written by model.save('model.keras')")
    if ext in (".h5", ".hdf5"):
        with open(path, "rb") as f:
            if f.read(8) != _HDF5_SIGNATURE:
                raise CliError(f"{path!r} is not an HDF5 file: a legacy .h5 model is written by "
                               "model.save('model.h5')")
    logger.info("Loading %s ...", path)
    try:
        model = keras.models.load_model(path, safe_mode=not unsafe)
    except Exception as err:
        # Keras reports these cases only in its message text; _keras owns reading it.
        reason = _keras.load_error_reason(err)
        if reason is not None and reason[0] == "unsafe":
            raise CliError(
                f"{path!r} contains Python code (a Lambda layer or a Python function) that "
                "Keras' safe mode refuses to load; if you trust the file, pass --unsafe",
                EXIT_USAGE) from err
        if reason is not None:
            _, class_name, module = reason
            what = f"class {class_name!r}" if class_name else "a custom layer"
            if module:
                what += f" (saved from module {module!r})"
            raise CliError(
                f"cannot load {path!r}: it uses {what}, which is not registered in this "
                "process; pass --import MODULE naming the module that defines it with "
                "@keras.saving.register_keras_serializable (on PYTHONPATH)",
                EXIT_UNSUPPORTED) from err
        raise CliError(f"cannot load {path!r} ({type(err).__name__}): {one_line(str(err), 600)}",
                       EXIT_UNSUPPORTED) from err
    if not isinstance(model, keras.Model):
        raise CliError(f"{path!r} holds a {type(model).__name__}, not a keras.Model",
                       EXIT_UNSUPPORTED)
    return model


def import_module(name: str) -> None:
    """`--import NAME`: import a module that registers custom layers."""
    try:
        importlib.import_module(name)
    except Exception as err:
        raise CliError(f"--import {name}: could not import it ({type(err).__name__}: {err}); "
                       "check the module name and that it is on PYTHONPATH") from err


def check_input_file(path: str, extensions: Sequence[str], what: str) -> None:
    """CliError unless `path` is a readable file with one of `extensions`."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in extensions:
        raise CliError(f"{path!r} is not a {what} file this command takes: expected "
                       f"{' or '.join(extensions)}, got {ext or 'no extension'!r}")
    if os.path.isdir(path):
        raise CliError(f"{path!r} is a directory, expected a {ext} file")
    if not os.path.isfile(path):
        raise CliError(f"no such file: {path!r}")
    if not os.access(path, os.R_OK):
        raise CliError(f"cannot read {path!r} (permission denied)")


def check_output_file(path: str, extensions: Sequence[str], option: str) -> str:
    """CliError unless `path` (given as `option`) can be written with one of `extensions`."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in extensions:
        raise CliError(f"{option} {path!r}: the file name must end in "
                       f"{' or '.join(extensions)}")
    if os.path.isdir(path):
        raise CliError(f"{option} {path!r} is a directory; give a file name")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise CliError(f"{option} {path!r}: the directory {parent!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise CliError(f"{option} {path!r}: the directory {parent!r} is not writable")
    return path


def check_json_path(path: str | None, option: str) -> None:
    """`check_output_file` for an optional .json output."""
    if path is not None:
        check_output_file(path, (".json",), option)
