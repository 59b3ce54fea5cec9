"""Calibration inputs from files: `.npy`/`.npz` arrays or a directory of images.

`export_tflite(..., quantize="int8", representative_data=...)` takes arrays;
`load_calibration` makes them from what people keep on disk, shaped and
scaled for one model. The `keras-slim export --calib` option is this function.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Mapping, Sequence

import numpy as np

from keras_slim import _images, _keras
from keras_slim.errors import ArgumentError

logger = logging.getLogger(__name__)

__all__ = ["load_calibration", "CALIB_SCALES"]

# How image pixels (0..255) become model inputs.
CALIB_SCALES = {
    "unit": "pixel / 255, in [0, 1] (default)",
    "signed": "pixel / 127.5 - 1, in [-1, 1] (keras.applications MobileNet preprocessing)",
    "raw": "pixel values as float32 in [0, 255] (models that rescale inside)",
}
_ARGUMENTS = ("source", "scale", "mean", "std")


def load_calibration(
    source: str | os.PathLike,
    model: Any,
    count: int,
    scale: str = "unit",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    *,
    argument_names: Mapping[str, str] | None = None,
) -> list[np.ndarray]:
    """Calibration inputs for `model` as float32 arrays in `model.inputs` order.

    Args:
        source: a `.npy` file (single-input models), a `.npz` file (one array,
            or one array per input name), used as stored, or a directory of
            images (searched recursively, sorted by path; Pillow needed). Each
            image is converted to RGB (grayscale for a 1-channel input) and
            resized bilinearly to the input's height and width.
        model: a Keras model with fixed-size inputs (for images).
        count: at most this many samples are returned.
        scale: image pixels: "unit" (/255 -> [0, 1]), "signed" (/127.5 - 1 ->
            [-1, 1]) or "raw" (0..255); see CALIB_SCALES.
        mean, std: per-channel (or one) values subtracted from / divided into
            the scaled images. Images only: arrays are used as stored.
        argument_names: how error messages name the arguments, e.g.
            {"source": "--calib", "scale": "--calib-scale"} (the command line
            passes its options); default: the parameter names.

    Raises:
        ArgumentError: an unreadable source, arrays or images that do not fit
            the model's inputs, or options that do not apply.
        MissingDependencyError: a directory of images without Pillow.
    """
    names = {k: (argument_names or {}).get(k, k) for k in _ARGUMENTS}
    where = f"{names['source']} {os.fspath(source)!r}"
    if scale not in CALIB_SCALES:
        raise ArgumentError(f"{names['scale']}={scale!r} is not supported; use one of "
                            f"{sorted(CALIB_SCALES)}")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ArgumentError(f"count must be a whole number >= 1, got {count!r}")
    source = os.fspath(source)
    shapes = [tuple(t.shape) for t in model.inputs]
    inputs = [_keras.input_name(t) or getattr(t, "name", "input") for t in model.inputs]
    if os.path.isdir(source):
        if len(shapes) != 1:
            raise ArgumentError(f"{where}: a directory of images only works for a single-input "
                                f"model; this one has inputs {inputs}. Pass a .npz with one "
                                "array per input name")
        arrays = [_load_images(source, shapes[0], count, scale, mean, std, names)]
    elif not os.path.exists(source):
        raise ArgumentError(f"{where}: no such file or directory")
    else:
        if mean or std or scale != "unit":
            raise ArgumentError(f"{names['scale']}/{names['mean']}/{names['std']} apply to image "
                                "directories; .npy/.npz arrays are used as stored (preprocess "
                                "them before saving)")
        arrays = _load_arrays(source, inputs, where)
    fitted = []
    for name, shape, arr in zip(inputs, shapes, arrays):
        if arr.ndim == len(shape) - 1:
            arr = arr[None]
        if arr.ndim != len(shape) or any(s is not None and s != a
                                         for s, a in zip(shape[1:], arr.shape[1:])):
            raise ArgumentError(f"{where}: array for input {name!r} has shape {arr.shape}, the "
                                f"model wants (N,) + {tuple(shape[1:])}")
        if not np.issubdtype(arr.dtype, np.number):
            raise ArgumentError(f"{where}: array for input {name!r} has dtype {arr.dtype}, "
                                "expected numbers")
        fitted.append(np.asarray(arr[:count], dtype=np.float32))
    if len({len(a) for a in fitted}) != 1 or len(fitted[0]) == 0:
        raise ArgumentError(f"{where}: expected the same number (>= 1) of samples for every "
                            f"input, got {[len(a) for a in fitted]}")
    logger.debug("Calibration: %d sample(s) from %s", len(fitted[0]), source)
    return fitted


def _load_arrays(path: str, inputs: Sequence[str], where: str) -> list[np.ndarray]:
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as err:
        raise ArgumentError(f"{where}: cannot read it as a numpy file "
                            f"({type(err).__name__}: {err})") from err
    if isinstance(data, np.ndarray):
        if len(inputs) != 1:
            raise ArgumentError(f"{where}: one array for a model with inputs {inputs}; save a "
                                ".npz with one array per input name (np.savez(path, "
                                "name=array, ...))")
        return [data]
    with data:
        keys = list(data.files)
        if len(keys) == 1 and len(inputs) == 1:
            return [data[keys[0]]]
        missing = [n for n in inputs if n not in keys]
        if missing:
            raise ArgumentError(f"{where} holds arrays {keys}; expected one per model input "
                                f"named {inputs} (missing {missing})")
        return [data[n] for n in inputs]


def _load_images(directory: str, shape: tuple, count: int, scale: str,
                 mean: Sequence[float] | None, std: Sequence[float] | None,
                 names: Mapping[str, str]) -> np.ndarray:
    where = f"{names['source']} {directory!r}"
    _images.pillow(f"{names['source']} with a directory of images")  # fail before any work
    if len(shape) != 4:
        raise ArgumentError(f"{where}: images need a model input of shape (N, H, W, C), this "
                            f"one is {shape}")
    height, width, channels = shape[1:]
    if height is None or width is None:
        raise ArgumentError(f"{where}: the model's input size {shape} is not fixed, so images "
                            "cannot be resized for it; save the calibration inputs as a .npy "
                            "file instead")
    if channels not in (1, 3):
        raise ArgumentError(f"{where}: images give 1 or 3 channels, the model wants "
                            f"{channels}; save the calibration inputs as a .npy file instead")
    files = sorted(os.path.join(root, f) for root, _, fs in os.walk(directory) for f in fs
                   if _images.is_image_name(f))
    if not files:
        raise ArgumentError(f"{where}: no images found (looked for "
                            f"{', '.join(_images.IMAGE_EXTENSIONS)} files, recursively)")
    images = []
    for path in files[:count]:
        try:
            images.append(_images.decode_image(path, channels, (height, width),
                                               where=f"image {path!r}"))
        except ArgumentError as err:
            raise ArgumentError(f"{names['source']}: {err}") from err
    x = np.stack(images).astype(np.float32)
    x = {"unit": x / 255.0, "signed": x / 127.5 - 1.0, "raw": x}[scale]
    for values, option in ((mean, names["mean"]), (std, names["std"])):
        if values is not None and len(values) not in (1, channels):
            raise ArgumentError(f"{option} takes 1 or {channels} value(s) for this model, got "
                                f"{len(values)}")
    if mean:
        x = x - np.asarray(mean, np.float32)
    if std:
        if any(s == 0 for s in std):
            raise ArgumentError(f"{names['std']} must not contain 0, got {list(std)}")
        x = x / np.asarray(std, np.float32)
    return x.astype(np.float32)
