"""Batches of cached augmented copies: each image once per epoch, with one copy or a pair of different ones."""

from __future__ import annotations

import math

import keras
import numpy as np


class CopySampler(keras.utils.PyDataset):
    """Batches of cached features where every epoch draws one augmented copy of each image, shuffled."""

    def __init__(self, features: np.ndarray, labels: np.ndarray, batch_size: int, seed: int) -> None:
        super().__init__()
        self.features = features  # (N, copies, ...)
        self.labels = labels
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        self._draw()

    def _draw(self) -> np.random.Generator:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.order = rng.permutation(len(self.labels))
        self.copy = rng.integers(0, self.features.shape[1], len(self.labels))
        return rng

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def _indices(self, index: int) -> np.ndarray:
        """The images of batch ``index``, in ascending order."""
        return np.sort(self.order[index * self.batch_size : (index + 1) * self.batch_size])

    def __getitem__(self, index: int):
        idx = self._indices(index)
        return self.features[idx, self.copy[idx]].astype(np.float32), self.labels[idx]

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self._draw()


class PairedCopySampler(CopySampler):
    """Batches of two different cached augmented copies of each image (``((first, second), labels)``), for the
    camera-consistency term (train/consistency.py); a new draw every epoch."""

    def __init__(self, features: np.ndarray, labels: np.ndarray, batch_size: int, seed: int) -> None:
        if features.shape[1] < 2:
            raise ValueError("camera consistency needs at least 2 augmented copies per image (--aug-copies)")
        super().__init__(features, labels, batch_size, seed)

    def _draw(self) -> np.random.Generator:
        rng = super()._draw()
        # a different copy: shifted by 1..copies-1, so the two never coincide
        self.second = (self.copy + rng.integers(1, self.features.shape[1], len(self.labels))) % self.features.shape[1]
        return rng

    def __getitem__(self, index: int):
        first, labels = super().__getitem__(index)
        idx = self._indices(index)
        return (first, self.features[idx, self.second[idx]].astype(np.float32)), labels
