"""The paper's CIFAR input pipeline: augmentation, normalisation, batching.

`make_dataset()` builds the input pipeline of Liu et al. (2017) and their
reference code: 4-pixel zero padding + random 32x32 crop + random horizontal
flip for training, then per-channel normalisation with `CIFAR10_MEAN` /
`CIFAR10_STD`. Two engines compute the same batches: tf.data (TensorFlow
is imported when a function runs) and a NumPy `keras.utils.PyDataset`, for
the JAX and PyTorch backends on a machine without TensorFlow (a GPU box
with JAX, say); ``engine="auto"`` takes tf.data when TensorFlow imports.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from keras_slim.errors import ArgumentError
from keras_slim.training.cifar.data import CIFAR10_MEAN, CIFAR10_STD

__all__ = ["cifar_augment", "make_dataset", "normalize"]

ENGINES = ("auto", "tf.data", "numpy")


def cifar_augment(images, pad: int = 4, flip: bool = True, seed: int | None = None):
    """The paper's CIFAR augmentation on a batch: zero-pad, random crop, random h-flip.

    Each image gets its own crop offset and flip (vectorised with gathers, so
    it is cheap on CPU).

    Args:
        images: a ``(B, H, W, C)`` or ``(H, W, C)`` tensor (any dtype; padding
            is with zeros, i.e. black for uint8 before normalisation).
        pad: pixels of padding on each side before cropping back to H x W.
        flip: also flip each image left-right with probability 0.5.
        seed: op-level seed for reproducible augmentation.

    Returns:
        A tensor of the same shape and dtype.
    """
    import tensorflow as tf

    if not isinstance(pad, int) or pad < 0:
        raise ArgumentError(f"cifar_augment: pad must be an integer >= 0, got {pad!r}")
    images = tf.convert_to_tensor(images)
    single = images.shape.rank == 3
    if single:
        images = images[None]
    if images.shape.rank != 4:
        raise ArgumentError(f"cifar_augment: expected images of shape (B, H, W, C) or (H, W, C), "
                            f"got {images.shape}")
    shape = tf.shape(images)
    b, h, w = shape[0], shape[1], shape[2]
    out = images
    if pad:
        padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
        oy = tf.random.uniform([b], 0, 2 * pad + 1, dtype=tf.int32, seed=seed)
        ox = tf.random.uniform([b], 0, 2 * pad + 1,
                               dtype=tf.int32, seed=None if seed is None else seed + 1)
        rows = oy[:, None] + tf.range(h)[None, :]
        cols = ox[:, None] + tf.range(w)[None, :]
        out = tf.gather(padded, rows, axis=1, batch_dims=1)
        out = tf.gather(out, cols, axis=2, batch_dims=1)
    if flip:
        coin = tf.random.uniform([b], 0, 1, seed=None if seed is None else seed + 2) < 0.5
        out = tf.where(coin[:, None, None, None], tf.reverse(out, axis=[2]), out)
    return out[0] if single else out


def normalize(images, mean: Sequence[float] = CIFAR10_MEAN, std: Sequence[float] = CIFAR10_STD):
    """``(images / 255 - mean) / std`` per channel, as float32."""
    import tensorflow as tf

    mean_t = tf.constant(mean, tf.float32)
    std_t = tf.constant(std, tf.float32)
    return (tf.cast(images, tf.float32) / 255.0 - mean_t) / std_t


def make_dataset(
    x: np.ndarray,
    y: np.ndarray | None,
    batch_size: int,
    training: bool,
    *,
    augment: bool | None = None,
    shuffle: bool | None = None,
    mean: Sequence[float] | None = CIFAR10_MEAN,
    std: Sequence[float] | None = CIFAR10_STD,
    seed: int | None = None,
    drop_remainder: bool = False,
    engine: str = "auto",
):
    """A batched, prefetched dataset of (normalised image, label).

    Args:
        x: uint8 images ``(N, H, W, C)`` (e.g. from `load_cifar10`).
        y: labels ``(N,)`` or ``(N, 1)``; None yields images only.
        batch_size: images per batch.
        training: defaults `augment` and `shuffle` to True (training) or False.
        augment: apply `cifar_augment` (pad 4, random crop, random flip).
        shuffle: reshuffle every epoch.
        mean, std: per-channel constants on a 0-1 scale (default: the
            paper's, `CIFAR10_MEAN` / `CIFAR10_STD`); ``mean=None`` only
            rescales to [0, 1].
        seed: seed for shuffling and augmentation.
        drop_remainder: drop the last, smaller batch.
        engine: ``"tf.data"``, ``"numpy"`` (a ``keras.utils.PyDataset``: no
            TensorFlow needed; the same augmentation, drawn from a NumPy
            generator, so the random crops differ from tf.data's for the
            same seed) or ``"auto"`` (tf.data when TensorFlow imports, else
            numpy).

    Returns:
        A ``tf.data.Dataset`` or ``keras.utils.PyDataset`` yielding float32
        ``(B, H, W, C)`` images (and int32 labels), ready for ``model.fit`` /
        ``model.evaluate``.
    """
    if engine not in ENGINES:
        raise ArgumentError(f"make_dataset: engine must be one of {ENGINES}, got {engine!r}")
    x = np.asarray(x)
    if x.ndim != 4:
        raise ArgumentError(f"make_dataset: x must be images of shape (N, H, W, C), got {x.shape}")
    if y is not None:
        y = np.asarray(y).reshape(-1)
        if len(y) != len(x):
            raise ArgumentError(f"make_dataset: x has {len(x)} images but y has {len(y)} labels")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ArgumentError("make_dataset: batch_size must be a positive integer, got "
                            f"{batch_size!r}")
    if (mean is None) != (std is None):
        raise ArgumentError("make_dataset: give both mean and std, or neither (None only "
                            "rescales to [0, 1])")
    augment = training if augment is None else augment
    shuffle = training if shuffle is None else shuffle
    if engine == "auto":
        engine = "tf.data" if _tensorflow_imports() else "numpy"
    if engine == "numpy":
        from keras_slim.training.cifar.numpy_batches import NumpyBatches

        return NumpyBatches(x, y, batch_size, augment=augment, shuffle=shuffle, mean=mean,
                            std=std, seed=seed, drop_remainder=drop_remainder)
    import tensorflow as tf

    images = tf.constant(x)
    labels = tf.constant(y.astype(np.int32)) if y is not None else None
    n = len(x)
    ds = tf.data.Dataset.range(n)
    if shuffle:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)

    def load(idx):
        batch = tf.gather(images, idx)
        if augment:
            batch = cifar_augment(batch, seed=seed)
        if mean is None:
            batch = tf.cast(batch, tf.float32) / 255.0
        else:
            batch = normalize(batch, mean, std)
        return batch if labels is None else (batch, tf.gather(labels, idx))

    return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def _tensorflow_imports() -> bool:
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        return False
    return True
