"""Calibration images for int8 quantisation: only the manifest's *train* split, stratified per class."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edge_runtime.preprocessing import PreprocessConfig, normalize, prepare_pixels, read_image
from train.split import ManifestRow, rows_of


def calibration_rows(rows: list[ManifestRow], count: int, seed: int = 0) -> list[ManifestRow]:
    """``count`` training images (rounded up to a multiple of the class count), equally from every class."""
    train = rows_of(rows, "train")
    labels = sorted({r.label for r in train})
    per_class = math.ceil(count / max(len(labels), 1))
    rng = np.random.default_rng(seed)
    chosen = []
    for label in labels:
        members = [r for r in train if r.label == label]
        take = rng.choice(len(members), size=min(per_class, len(members)), replace=False)
        chosen += [members[i] for i in sorted(take)]
    return chosen


class CalibrationSet:
    """Decoded once, served as uint8 pixels (preprocessing in the graph) or normalised float inputs.

    In both forms, pixel (0, 0) of every image is set to 0 and pixel (0, 1) to 255, so the int8 input
    range calibrates to the whole 0..255 scale: without it, pixels brighter than any calibration image would
    be clipped on the device (a failure seen here with badly calibrated full-int8 models).
    """

    def __init__(self, rows: list[ManifestRow], data_root: Path, preprocess: PreprocessConfig) -> None:
        self.rows = rows
        self.preprocess = preprocess
        self.pixels = [prepare_pixels(read_image(Path(data_root) / r.path), preprocess) for r in rows]

    def as_pixels(self) -> Iterator[np.ndarray]:
        for image in self.pixels:
            pinned = image.copy()
            pinned[0, 0] = 0
            pinned[0, 1] = 255
            yield pinned

    def as_float(self) -> Iterator[np.ndarray]:
        for image in self.as_pixels():
            yield normalize(image, self.preprocess)
