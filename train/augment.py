"""The reference augmentation (rotation ±10°, shifts of 10 %, horizontal flip), on uint8 pixels with OpenCV,
plus optional *camera* augmentation: what another line camera changes (focus, motion of the strip, exposure,
sensor noise and banding, response curve, contrast, resolution, JPEG compression),
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
    camera: bool = False  # also draw another camera's look (see camera_augment)
    contrast_range: tuple[float, float] = (0.3, 1.2)  # contrast factor about the image mean, log-uniform
    gamma_range: tuple[float, float] = (0.7, 1.4)
    blur_sigma_max: float = 1.2  # Gaussian blur sigma in pixels, uniform from 0; half the copies stay sharp
    noise_std_max: float = 3.0  # Gaussian sensor noise in gray levels, uniform from 0
    # Kinds added later; each is drawn in a share of the copies (CAMERA_SHARE) and left out of the cache key
    # when switched off, so caches of the earlier recipe keep their keys.
    gain_range: tuple[float, float] | None = (0.65, 1.5)  # exposure gain, log-uniform, clipped at 255
    motion_blur_max: int | None = 9  # strip motion during exposure: a line kernel of 2..N px at any angle
    banding_std_max: float | None = 6.0  # per-row offsets (gray levels) plus a column pattern of half that
    resolution_range: tuple[float, float] | None = (0.4, 1.0)  # detail lost: down by this factor and back up
    jpeg_quality_range: tuple[int, int] | None = (20, 95)  # JPEG re-encoding at a quality uniform in the range
    motion_along_axes: bool = False  # the strip's motion along the image rows or columns (+-5 deg), not any angle
    polarity: bool = False  # invert the gray levels of half the augmented copies (see invert_polarity)

    def identity(self) -> dict:
        """The settings that change augmented pixels (for cache keys); options left off are not listed, so
        caches made before an option existed keep their keys."""
        values = asdict(self)
        for name in ("polarity", *LATER_CAMERA_KINDS, *THIRD_RECIPE_KINDS):
            if not values[name]:
                values.pop(name)
        return values

    @classmethod
    def first_camera_recipe(cls, **settings) -> "AugmentSpec":
        """The camera augmentation as first shipped: contrast, gamma, blur and noise only."""
        return cls(**{**{name: None for name in LATER_CAMERA_KINDS}, **settings})

    @classmethod
    def third_camera_recipe(cls, **settings) -> "AugmentSpec":
        """Recipe 2 with a high-gain sensor's noise (up to 10 gray levels instead of 3) and motion blur along the
        strip: a line camera is mounted square to the strip, so its travel smears along the image rows or
        columns, not at any angle."""
        return cls(**{"noise_std_max": 10.0, "motion_along_axes": True, **settings})


LATER_CAMERA_KINDS = ("gain_range", "motion_blur_max", "banding_std_max", "resolution_range", "jpeg_quality_range")
THIRD_RECIPE_KINDS = ("motion_along_axes",)  # left out of the cache key when off, like the later kinds
CAMERA_SHARE = 1 / 3  # share of the augmented copies that draw each of the later kinds


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
    """Another camera's look on uint8 pixels, in the order a camera makes it: optics (defocus, the strip's
    motion), sensor (exposure gain, noise, row banding), response (gamma, contrast), then resolution and JPEG.

    Contrast is applied before the uint8 rounding, so low-contrast copies also lose gray levels, as a
    low-contrast camera image does; the same change goes to every channel (the images are gray).
    """
    low, high = np.log(spec.contrast_range[0]), np.log(spec.contrast_range[1])
    contrast = float(np.exp(rng.uniform(low, high)))
    gamma = float(np.exp(rng.uniform(np.log(spec.gamma_range[0]), np.log(spec.gamma_range[1]))))
    sigma = rng.uniform(0.0, spec.blur_sigma_max) if rng.random() < 0.5 else 0.0
    noise = rng.uniform(0.0, spec.noise_std_max)
    values = image.astype(np.float32)
    if sigma > 0:
        values = cv2.GaussianBlur(values, (0, 0), sigma).reshape(image.shape)
    if spec.motion_blur_max and rng.random() < CAMERA_SHARE:
        length = int(rng.integers(2, spec.motion_blur_max + 1))
        angle = along_axes_angle(rng) if spec.motion_along_axes else rng.uniform(0.0, 180.0)
        values = motion_blur(values, length, angle)
    if spec.gain_range and rng.random() < CAMERA_SHARE:
        values = values * float(np.exp(rng.uniform(np.log(spec.gain_range[0]), np.log(spec.gain_range[1]))))
    if noise > 0:
        values = values + per_pixel(values, rng.normal(0.0, noise, size=image.shape[:2]).astype(np.float32))
    if spec.banding_std_max and rng.random() < CAMERA_SHARE:
        field = banding_field(rng, image.shape[:2], rng.uniform(0.0, spec.banding_std_max))
        values = values + per_pixel(values, field)
    values = 255.0 * (np.clip(values, 0, 255) / 255.0) ** gamma
    values = (values - values.mean()) * contrast + values.mean()
    out = np.clip(values + 0.5, 0, 255).astype(np.uint8)
    if spec.resolution_range and rng.random() < CAMERA_SHARE:
        out = lose_resolution(out, rng.uniform(*spec.resolution_range))
    if spec.jpeg_quality_range and rng.random() < CAMERA_SHARE:
        out = jpeg_roundtrip(out, int(rng.integers(spec.jpeg_quality_range[0], spec.jpeg_quality_range[1] + 1)))
    return out


def per_pixel(values: np.ndarray, field: np.ndarray) -> np.ndarray:
    """A (H, W) field shaped to broadcast over ``values``' channels."""
    return field.reshape(field.shape + (1,) * (values.ndim - 2))


def banding_field(rng: np.random.Generator, shape: tuple[int, int], std: float) -> np.ndarray:
    """Row banding of a rolling readout: one offset per row (``std`` gray levels) plus a column pattern of half
    that, as a float32 (H, W) field."""
    return (rng.normal(0.0, std, (shape[0], 1)) + rng.normal(0.0, std / 2, (1, shape[1]))).astype(np.float32)


def along_axes_angle(rng: np.random.Generator) -> float:
    """A smear's angle along the rows (0 deg) or the columns (90 deg), +-5 deg: a line camera square to the
    strip."""
    return float(90.0 * rng.integers(0, 2) + rng.uniform(-5.0, 5.0))


def motion_blur(values: np.ndarray, length: int, angle_deg: float) -> np.ndarray:
    """Float pixels smeared along a line of ``length`` pixels at ``angle_deg`` (edges reflected)."""
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1.0
    centre = ((length - 1) / 2.0, (length - 1) / 2.0)
    kernel = cv2.warpAffine(kernel, cv2.getRotationMatrix2D(centre, angle_deg, 1.0), (length, length))
    kernel /= kernel.sum()
    return cv2.filter2D(values, -1, kernel, borderType=cv2.BORDER_REFLECT).reshape(values.shape)


def lose_resolution(image: np.ndarray, factor: float) -> np.ndarray:
    """A camera with ``factor`` times fewer pixels per side: resized down and back to the same size."""
    height, width = image.shape[:2]
    small = cv2.resize(image, (max(1, round(width * factor)), max(1, round(height * factor))),
                       interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR).reshape(image.shape)


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """``image`` encoded as JPEG at ``quality`` and decoded again."""
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG of shape %s" % (image.shape,))
    return cv2.imdecode(data, cv2.IMREAD_UNCHANGED).reshape(image.shape)


# The unknown score's bank holds one more copy of every training image per kind: the strong camera changes that
# the training copies show rarely (recipe 2 draws each later kind into a third of them). docs/unknown.md
BANK_CAMERA_KINDS = ("noise", "motion", "banding")
_BANK_KIND_SEEDS = {"noise": 7, "motion": 8, "banding": 9}


def content_seed(sha256: str) -> int:
    """A seed from an image's content hash, so that its seeded copies are the same in every run and fold."""
    return int(sha256[:15], 16)


def bank_camera_copy(image: np.ndarray, kind: str, sha256: str) -> np.ndarray:
    """A training image (decoded, its own resolution) under one strong camera change, seeded by kind and the
    image's content hash (the same copy in every run and fold): ``noise`` (Gaussian, sigma up to 10 gray levels),
    ``motion`` (a 2-9 px smear along the rows or the columns, +-5 deg) or ``banding`` (row offsets up to sigma 6
    gray levels, columns half that)."""
    if kind not in _BANK_KIND_SEEDS:
        raise ValueError(f"bank camera copy {kind!r} is not one of {BANK_CAMERA_KINDS}")
    rng = np.random.default_rng([_BANK_KIND_SEEDS[kind], content_seed(sha256)])
    values = np.asarray(image).astype(np.float32)
    if kind == "motion":
        values = motion_blur(values, int(rng.integers(2, 10)), along_axes_angle(rng))
    elif kind == "noise":
        field = rng.normal(0.0, rng.uniform(0.0, 10.0), values.shape[:2]).astype(np.float32)
        values = values + per_pixel(values, field)
    else:
        values = values + per_pixel(values, banding_field(rng, values.shape[:2], rng.uniform(0.0, 6.0)))
    return np.clip(values + 0.5, 0, 255).astype(np.uint8)
