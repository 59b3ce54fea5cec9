"""`NumpyBatches`: the CIFAR input pipeline as a `keras.utils.PyDataset`, without TensorFlow.

The same batches as `make_dataset`'s tf.data engine (pad-4 zero padding,
random crop, random horizontal flip, per-channel normalisation), computed
with NumPy so that the recipe trains on the JAX or PyTorch backend where
TensorFlow is not installed. Each batch's randomness comes from a generator
seeded by (seed, epoch, batch index), so a batch is the same whichever
worker computes it and in whatever order.
"""
from __future__ import annotations

from typing import Sequence

import keras
import numpy as np

__all__ = ["NumpyBatches", "augment_numpy"]


def augment_numpy(images: np.ndarray, rng: np.random.Generator, pad: int = 4,
                  flip: bool = True) -> np.ndarray:
    """`cifar_augment` in NumPy: zero-pad, a random crop and flip per image, ``(B, H, W, C)``."""
    b, h, w = images.shape[:3]
    out = images
    if pad:
        padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        oy = rng.integers(0, 2 * pad + 1, b)
        ox = rng.integers(0, 2 * pad + 1, b)
        rows = oy[:, None] + np.arange(h)[None]
        cols = ox[:, None] + np.arange(w)[None]
        out = padded[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]
    if flip:
        mirror = rng.random(b) < 0.5
        out = out.copy() if out is images else out
        out[mirror] = out[mirror, :, ::-1]
    return out


class NumpyBatches(keras.utils.PyDataset):
    """Batches of (normalised float32 image, int32 label); see `make_dataset`."""

    def __init__(self, x: np.ndarray, y: np.ndarray | None, batch_size: int, *,
                 augment: bool, shuffle: bool, mean: Sequence[float] | None,
                 std: Sequence[float] | None, seed: int | None = None,
                 drop_remainder: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.x, self.y = x, None if y is None else y.astype(np.int32)
        self.batch_size, self.augment, self.shuffle = int(batch_size), augment, shuffle
        self.drop_remainder = drop_remainder
        self.mean = None if mean is None else np.asarray(mean, np.float32)
        self.std = None if std is None else np.asarray(std, np.float32)
        # an unseeded pipeline still differs per run, as tf.data's does
        self.seed = int(np.random.SeedSequence().entropy % 2**31) if seed is None else int(seed)
        self.epoch = 0
        self._order = self._permutation()

    def _permutation(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.x))
        return np.random.default_rng((self.seed, self.epoch, 1 << 30)).permutation(len(self.x))

    def __len__(self) -> int:
        n, b = len(self.x), self.batch_size
        return n // b if self.drop_remainder else -(-n // b)

    def __getitem__(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(f"NumpyBatches: batch {index} of {len(self)}")
        idx = self._order[index * self.batch_size:(index + 1) * self.batch_size]
        batch = self.x[idx]
        if self.augment:
            batch = augment_numpy(batch, np.random.default_rng((self.seed, self.epoch, index)))
        batch = batch.astype(np.float32) / 255.0
        if self.mean is not None:
            batch = (batch - self.mean) / self.std
        return batch if self.y is None else (batch, self.y[idx])

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self._order = self._permutation()
