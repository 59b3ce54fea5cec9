"""CIFAR-10 loading: the Keras download or a local JPEG copy (folder or tar archive).

`load_cifar10()` returns the same arrays as `keras.datasets.cifar10.load_data()`
(uint8 images, standard class order) from either the Keras download or an
offline copy laid out as ``train/<class>/*.jpg`` and ``test/<class>/*.jpg``,
given as a folder or a ``.tar.gz``/``.tgz``/``.tar`` archive. Images are
decoded once by keras_slim's image decoder (`keras_slim._images`, Pillow) and
cached as an ``.npz`` so later loads take about a second. Image files are
recognised by the decoder's extension list (``_images.IMAGE_EXTENSIONS``);
anything else under ``<split>/<class>/`` is ignored with a warning.

The input pipeline (augmentation, normalisation, tf.data) is in
`keras_slim.training.cifar.pipeline`.
"""
from __future__ import annotations

import hashlib
import logging
import os
import pathlib
import tarfile
import tempfile
from typing import Iterable, Sequence

import numpy as np

from keras_slim._images import decode_image, is_image_name, pillow
from keras_slim.errors import ArgumentError

logger = logging.getLogger(__name__)

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
"""Class names in the standard label order (label i is ``CIFAR10_CLASSES[i]``)."""

CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
"""Per-channel (R, G, B) mean of the CIFAR-10 training images on a 0-1 scale.

The values used by the paper's reference code (Eric-mingjie/network-slimming).
"""

CIFAR10_STD: tuple[float, float, float] = (0.2023, 0.1994, 0.2010)
"""Per-channel (R, G, B) scale used by the paper's reference code, on a 0-1 scale.

These are kept for fidelity to that code; they are not the pixel standard
deviation of the training set (about 0.247, 0.243, 0.261), which gives
inputs with a slightly smaller spread. Pass ``std=`` to `make_dataset` to use
another value.
"""

IMAGE_SHAPE = (32, 32, 3)
SPLITS = ("train", "test")
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
_CACHE_VERSION = 1

__all__ = ["CIFAR10_CLASSES", "CIFAR10_MEAN", "CIFAR10_STD", "default_cache_dir", "load_cifar10"]


# ---------------------------------------------------------------- loading
def default_cache_dir() -> pathlib.Path:
    """``$KERAS_SLIM_CACHE`` if set, else ``~/.cache/keras_slim``."""
    env = os.environ.get("KERAS_SLIM_CACHE")
    return pathlib.Path(env) if env else pathlib.Path.home() / ".cache" / "keras_slim"


def load_cifar10(
    source: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Load CIFAR-10 as ``(x_train, y_train), (x_test, y_test)``.

    Args:
        source: ``None`` or ``"keras"`` downloads through
            ``keras.datasets.cifar10.load_data()`` (needs internet the first
            time). Otherwise a folder or a ``.tar.gz``/``.tgz``/``.tar`` archive
            holding ``train/<class>/<image>`` and ``test/<class>/<image>``
            (optionally under one top-level folder), with the ten class folders
            named as in `CIFAR10_CLASSES`. Images are 32x32 files in a format of
            ``keras_slim._images.IMAGE_EXTENSIONS`` (JPEG, PNG, ...).
        cache_dir: where the decoded ``.npz`` is kept (default
            `default_cache_dir()`). The cache key includes the source's path,
            size and modification time, so a changed source is decoded again.

    Returns:
        ``x`` arrays are ``uint8`` of shape ``(N, 32, 32, 3)`` (RGB); ``y``
        arrays are ``uint8`` of shape ``(N,)`` with labels in the standard
        class order (for the Keras download too, whose ``(N, 1)`` labels are
        flattened). Within a split images are ordered by class, then by file
        name.

    Raises:
        FileNotFoundError: `source` does not exist.
        MissingDependencyError: Pillow (``keras-slim[data]``) is not installed.
        ArgumentError: `source` is neither a folder nor a supported archive, or
            its layout is not ``{train,test}/<class>/<image>``; the message
            lists what was found.
    """
    if source is None or (isinstance(source, str) and source == "keras"):
        return _load_keras()
    path = pathlib.Path(os.fspath(source)).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"load_cifar10: source {str(path)!r} does not exist. Pass a folder with "
            "train/<class>/*.jpg and test/<class>/*.jpg, a .tar.gz archive of one, or "
            "None / 'keras' to download with keras.datasets.cifar10.load_data()."
        )
    if path.is_file() and not _is_archive(path):
        raise ArgumentError(
            f"load_cifar10: {str(path)!r} is a file but not an archive ending in "
            f"{', '.join(_ARCHIVE_SUFFIXES)}. Pass such an archive or an extracted folder."
        )
    cache = pathlib.Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    cached = cache / f"cifar10-{_cache_key(path)}.npz"
    if cached.exists():
        try:
            with np.load(cached) as d:
                out = (d["x_train"], d["y_train"]), (d["x_test"], d["y_test"])
            logger.info("load_cifar10: loaded the decoded cache %s", cached)
            return out
        except Exception as e:  # a truncated or foreign file: decode again
            logger.warning("load_cifar10: cache %s is unreadable (%s); decoding %s again",
                           cached, e, path)
    if path.is_dir():
        arrays = _decode(_FolderSource(path))
    else:
        with _ArchiveSource(path) as src:
            arrays = _decode(src)
    _save_npz_atomic(cached, arrays)
    logger.info("load_cifar10: cached the decoded arrays in %s", cached)
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])


def _load_keras():
    import keras

    logger.info("load_cifar10: using keras.datasets.cifar10.load_data() (downloads once)")
    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.cifar10.load_data()
    except Exception as e:
        raise RuntimeError(
            "load_cifar10: keras.datasets.cifar10.load_data() failed (no internet access?): "
            f"{e}. Pass a local copy instead: load_cifar10('path/to/cifar10-jpeg.tar.gz') "
            "or a folder with train/<class>/*.jpg and test/<class>/*.jpg."
        ) from e
    return ((np.asarray(x_train, np.uint8), np.asarray(y_train, np.uint8).reshape(-1)),
            (np.asarray(x_test, np.uint8), np.asarray(y_test, np.uint8).reshape(-1)))


def _is_archive(path: pathlib.Path) -> bool:
    return path.name.lower().endswith(_ARCHIVE_SUFFIXES)


def _cache_key(path: pathlib.Path) -> str:
    """Hash of the resolved path and the size/mtime of what it holds."""
    h = hashlib.sha1(f"v{_CACHE_VERSION}:{path.resolve()}".encode())
    if path.is_file():
        st = path.stat()
        h.update(f":{st.st_size}:{st.st_mtime_ns}".encode())
    else:
        root = _split_root(path) or path
        for split in SPLITS:
            if not (root / split).is_dir():
                continue
            for entry in sorted(_walk_files(root / split)):
                st = entry.stat()
                h.update(f":{entry.relative_to(path)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _walk_files(folder: pathlib.Path) -> Iterable[pathlib.Path]:
    for root, _, files in os.walk(folder):
        for f in files:
            yield pathlib.Path(root) / f


def _split_root(folder: pathlib.Path) -> pathlib.Path | None:
    """`folder` itself or its only sub-folder, whichever holds train/ and test/."""
    if all((folder / s).is_dir() for s in SPLITS):
        return folder
    subdirs = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if len(subdirs) == 1 and all((subdirs[0] / s).is_dir() for s in SPLITS):
        return subdirs[0]
    return None


class _FolderSource:
    """(split, class, name) -> bytes for an extracted folder."""

    def __init__(self, folder: pathlib.Path):
        self.description = f"folder {str(folder)!r}"
        root = _split_root(folder)
        if root is None:
            found = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
            raise ArgumentError(
                f"load_cifar10: {self.description} does not hold train/ and test/ folders "
                f"(found: {_preview(found)}). Expected train/<class>/*.jpg and "
                "test/<class>/*.jpg, optionally under one top-level folder."
            )
        self.root = root
        self.entries = []
        for split in SPLITS:
            for f in _walk_files(root / split):
                rel = f.relative_to(root).parts
                self.entries.append((rel, f))

    def items(self):
        for parts, f in self.entries:
            yield parts, (lambda f=f: f.read_bytes())


class _ArchiveSource:
    """(split, class, name) -> bytes for a tar(.gz) archive, read member by member."""

    def __init__(self, path: pathlib.Path):
        self.path = path
        self.description = f"archive {str(path)!r}"
        try:
            self.tar = tarfile.open(path, "r:*")
        except (tarfile.TarError, OSError) as e:
            raise ArgumentError(f"load_cifar10: cannot open {self.description} as a tar "
                                f"archive: {e}") from e

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.tar.close()

    def items(self):
        everything = self.tar.getmembers()
        members = [m for m in everything if m.isfile()]
        names = [_member_name(m) for m in members]
        prefix = _archive_prefix(names)
        if prefix is None:
            tops = sorted({_member_name(m).split("/")[0] + ("/" if m.isdir() or "/" in
                                                             _member_name(m) else "")
                           for m in everything if _member_name(m)})
            raise ArgumentError(
                f"load_cifar10: {self.description} does not hold train/ and test/ folders "
                f"(top-level entries: {_preview(tops)}). Expected train/<class>/*.jpg and "
                "test/<class>/*.jpg, optionally under one top-level folder."
            )
        for member, name in zip(members, names):
            if not name.startswith(prefix):
                continue
            parts = tuple(name[len(prefix):].split("/"))
            yield parts, (lambda m=member: self.tar.extractfile(m).read())


def _member_name(member: tarfile.TarInfo) -> str:
    name = member.name
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/")


def _archive_prefix(names: Sequence[str]) -> str | None:
    """'' or 'top/' such that prefix + 'train/...' and prefix + 'test/...' exist."""
    for prefix in ("",) + tuple(sorted({n.split("/")[0] + "/" for n in names if "/" in n})):
        if all(any(n.startswith(prefix + s + "/") for n in names) for s in SPLITS):
            return prefix
    return None


def _preview(items: Sequence[str], n: int = 12) -> str:
    items = list(items)
    if not items:
        return "nothing"
    more = f", ... ({len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def _decode(source) -> dict:
    """Decode every image of `source` into uint8 arrays, validating the layout."""
    pillow("load_cifar10 (decoding the CIFAR-10 images)")  # fail early without the 'data' extra
    files: dict[str, dict[str, list]] = {s: {} for s in SPLITS}
    ignored = []
    for parts, read in source.items():
        if len(parts) < 1 or parts[0] not in SPLITS:
            continue
        name = parts[-1]
        if name.startswith("."):
            continue
        if len(parts) != 3:
            ignored.append("/".join(parts))
            continue
        split, cls, _ = parts
        if not is_image_name(name):
            ignored.append("/".join(parts))
            continue
        files[split].setdefault(cls, []).append((name, read))
    if ignored:
        logger.warning("load_cifar10: ignored %d entries of %s that are not "
                       "<split>/<class>/<image> (%s)", len(ignored), source.description,
                       _preview(ignored, 5))
    for split in SPLITS:
        found = sorted(files[split])
        if set(found) != set(CIFAR10_CLASSES):
            missing = sorted(set(CIFAR10_CLASSES) - set(found))
            extra = sorted(set(found) - set(CIFAR10_CLASSES))
            raise ArgumentError(
                f"load_cifar10: {source.description}: {split}/ must hold one folder per "
                f"CIFAR-10 class {list(CIFAR10_CLASSES)}; found class folders "
                f"{found or 'none'} (missing: {missing or 'none'}; unexpected: "
                f"{extra or 'none'})."
            )
    out = {}
    for split in SPLITS:
        total = sum(len(v) for v in files[split].values())
        logger.info("load_cifar10: decoding %d %s images from %s", total, split,
                    source.description)
        x = np.empty((total,) + IMAGE_SHAPE, np.uint8)
        y = np.empty((total,), np.uint8)
        i = 0
        for label, cls in enumerate(CIFAR10_CLASSES):
            for name, read in sorted(files[split][cls], key=lambda t: t[0]):
                where = f"{split}/{cls}/{name}"
                try:
                    arr = decode_image(read(), channels=3,
                                       where=f"{where} in {source.description}")
                except ArgumentError as e:
                    raise ArgumentError(f"load_cifar10: {e}") from e
                if arr.shape != IMAGE_SHAPE:
                    raise ArgumentError(
                        f"load_cifar10: {where} in {source.description} is "
                        f"{arr.shape[1]}x{arr.shape[0]}; CIFAR-10 images must be 32x32."
                    )
                x[i] = arr
                y[i] = label
                i += 1
        out[f"x_{split}"], out[f"y_{split}"] = x, y
    return out


def _save_npz_atomic(path: pathlib.Path, arrays: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".cifar10-", suffix=".npz", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except OSError as e:  # read-only cache: still return the data
        logger.warning("load_cifar10: could not write the cache %s (%s); the next load "
                       "will decode the images again. Pass cache_dir= to choose another "
                       "place.", path, e)
