"""The reference augmentation (rotation ±10°, shifts of 10 %, horizontal flip), on uint8 pixels with OpenCV.

Like Keras' ``ImageDataGenerator`` defaults, pixels moved in from outside are filled with the nearest edge
pixel. Parameters are drawn from a seeded generator so an augmented copy can be recomputed exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentSpec:
    rotation_deg: float = 10.0
    shift_fraction: float = 0.10
    horizontal_flip: bool = True


def augment(image: np.ndarray, rng: np.random.Generator, spec: AugmentSpec = AugmentSpec()) -> np.ndarray:
    """One random rotation + shift (+ flip) of an HxW(xC) image; output has the same shape and dtype."""
    height, width = image.shape[:2]
    angle = rng.uniform(-spec.rotation_deg, spec.rotation_deg)
    dx = rng.uniform(-spec.shift_fraction, spec.shift_fraction) * width
    dy = rng.uniform(-spec.shift_fraction, spec.shift_fraction) * height
    flip = spec.horizontal_flip and rng.random() < 0.5
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2.0, (height - 1) / 2.0), angle, 1.0)
    matrix[:, 2] += (dx, dy)
    out = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if out.ndim == 2 and image.ndim == 3:
        out = out[:, :, None]
    return out[:, ::-1].copy() if flip else out
