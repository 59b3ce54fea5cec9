"""The one image decoder: calibration images (`keras_slim.export.calibration`)
and the CIFAR-10 JPEG archive (`keras_slim.training.cifar`) both read through it.

Pillow is an optional dependency (`keras-slim[data]`); it is imported when an
image is first decoded, and a missing Pillow raises MissingDependencyError.
"""
from __future__ import annotations

import io
import os
from types import ModuleType
from typing import Union

import numpy as np

from keras_slim.errors import ArgumentError, MissingDependencyError

# Formats Pillow reads without plugins; compared case-insensitively.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")

Source = Union[bytes, str, "os.PathLike[str]"]


def is_image_name(name: str) -> bool:
    """True when `name` ends with one of IMAGE_EXTENSIONS."""
    return os.path.splitext(str(name))[1].lower() in IMAGE_EXTENSIONS


def pillow(purpose: str = "Reading images") -> ModuleType:
    """PIL.Image, or MissingDependencyError saying how to install it."""
    try:
        from PIL import Image
    except ImportError as err:
        raise MissingDependencyError(
            f"{purpose} needs Pillow, which could not be imported ({err}); install it "
            "with: pip install 'keras-slim[data]' (or pip install pillow)") from err
    return Image


def decode_image(source: Source, channels: int = 3, size: tuple[int, int] | None = None,
                 where: str | None = None) -> np.ndarray:
    """Decode one image into a uint8 array of shape (height, width, channels).

    Args:
        source: the encoded bytes, or a path to an image file.
        channels: 3 (RGB) or 1 (grayscale); other modes are converted.
        size: (height, width) to resize to with bilinear filtering, or None to
            keep the image's own size.
        where: how to name the image in an error (default: the path).

    Raises:
        ArgumentError: the image cannot be decoded (message names it and why).
    """
    if channels not in (1, 3):
        raise ArgumentError(f"decode_image: channels must be 1 or 3, got {channels!r}")
    image_mod = pillow()
    name = where or (repr(os.fspath(source)) if not isinstance(source, bytes) else "image bytes")
    try:
        fp = io.BytesIO(source) if isinstance(source, bytes) else os.fspath(source)
        with image_mod.open(fp) as img:
            img = img.convert("RGB" if channels == 3 else "L")
            if size is not None:
                height, width = (int(s) for s in size)
                img = img.resize((width, height), image_mod.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
    except Exception as err:
        raise ArgumentError(f"cannot decode {name} ({type(err).__name__}: {err})") from err
    return arr.reshape(arr.shape[0], arr.shape[1], channels)
