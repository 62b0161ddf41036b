"""The reference augmentation (rotation ±10°, shifts of 10 %, horizontal flip), on uint8 pixels with OpenCV,
plus optional *camera* augmentation: what another line camera changes (contrast, gamma, focus, sensor noise),
and optional *polarity* augmentation: inverted gray levels, because the same defect is bright under one
plant's lighting and dark under another's (X-SDD's scratches are dark lines, NEU's are bright).

Like Keras' ``ImageDataGenerator`` defaults, pixels moved in from outside are filled with the nearest edge
pixel. Parameters are drawn from a seeded generator so an augmented copy can be recomputed exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from edge_runtime.polarity import invert_polarity


@dataclass(frozen=True)
class AugmentSpec:
    rotation_deg: float = 10.0
    shift_fraction: float = 0.10
    horizontal_flip: bool = True
    camera: bool = False  # also draw contrast, gamma, blur and noise (see camera_augment)
    contrast_range: tuple[float, float] = (0.3, 1.2)  # contrast factor about the image mean, log-uniform
    gamma_range: tuple[float, float] = (0.7, 1.4)
    blur_sigma_max: float = 1.2  # Gaussian blur sigma in pixels, uniform from 0; half the copies stay sharp
    noise_std_max: float = 3.0  # Gaussian sensor noise in gray levels, uniform from 0
    polarity: bool = False  # invert the gray levels of half the augmented copies (see invert_polarity)

    def identity(self) -> dict:
        """The settings that change augmented pixels (for cache keys); options left off are not listed, so
        caches made before an option existed keep their keys."""
        values = asdict(self)
        if not self.polarity:
            values.pop("polarity")
        return values


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
    out = out[:, ::-1].copy() if flip else out
    out = camera_augment(out, rng, spec) if spec.camera else out
    if spec.polarity and rng.random() < 0.5:
        out = invert_polarity(out)
    return out


def camera_augment(image: np.ndarray, rng: np.random.Generator, spec: AugmentSpec) -> np.ndarray:
    """Another camera's look on uint8 pixels: contrast about the mean, gamma, slight defocus, sensor noise.

    Contrast is applied before the uint8 rounding, so low-contrast copies also lose gray levels, as a
    low-contrast camera image does; the same change goes to every channel (the images are gray).
    """
    low, high = np.log(spec.contrast_range[0]), np.log(spec.contrast_range[1])
    contrast = float(np.exp(rng.uniform(low, high)))
    gamma = float(np.exp(rng.uniform(np.log(spec.gamma_range[0]), np.log(spec.gamma_range[1]))))
    sigma = rng.uniform(0.0, spec.blur_sigma_max) if rng.random() < 0.5 else 0.0
    noise = rng.uniform(0.0, spec.noise_std_max)
    values = image.astype(np.float32)
    values = 255.0 * (np.clip(values, 0, 255) / 255.0) ** gamma
    values = (values - values.mean()) * contrast + values.mean()
    if sigma > 0:
        values = cv2.GaussianBlur(values, (0, 0), sigma)
        values = values.reshape(image.shape)
    if noise > 0:
        values = values + rng.normal(0.0, noise, size=image.shape[:2] + (1,) * (image.ndim - 2)).astype(np.float32)
    return np.clip(values + 0.5, 0, 255).astype(np.uint8)
