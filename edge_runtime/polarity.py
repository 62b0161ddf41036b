"""Test-time polarity: read each image as captured and with inverted gray levels, keep the closer reading.

The same defect can be bright under one plant's lighting and dark under another's (X-SDD's scratches are dark
lines, NEU's are bright). With ``polarity="auto"`` the classifier runs both readings of every image in one
batch and keeps, per image, the one whose embedding lies closer to the training images (the lower unknown
score, see :mod:`edge_runtime.ood`). Nothing is tuned: the rule uses no labels and no threshold, so it can be
switched on for a new plant without any of its images. It needs a model with the unknown score and costs a
second inference per image.
"""

from __future__ import annotations

import numpy as np

AS_IS = "as-is"
AUTO = "auto"
POLARITY_MODES = (AS_IS, AUTO)


def invert_polarity(image: np.ndarray) -> np.ndarray:
    """Bright becomes dark: a uint8 image's gray levels mirrored (255 - value)."""
    if image.dtype != np.uint8:
        raise TypeError(f"invert_polarity expects uint8 pixels, got {image.dtype}")
    return 255 - image


def check_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`POLARITY_MODES`, else ValueError naming the choices."""
    if mode not in POLARITY_MODES:
        raise ValueError(f"polarity must be one of {POLARITY_MODES}, got {mode!r}")
    return mode


def choose_inverted(as_is_scores: np.ndarray, inverted_scores: np.ndarray) -> np.ndarray:
    """Per image, True where the inverted reading is strictly closer to the training images (ties: as captured).

    A NaN score never wins: an image whose inverted reading cannot be scored keeps its captured reading.
    """
    as_is = np.asarray(as_is_scores, np.float64)
    inverted = np.asarray(inverted_scores, np.float64)
    return (inverted < as_is) | (np.isnan(as_is) & ~np.isnan(inverted))


def pick(as_is: np.ndarray, inverted: np.ndarray, use_inverted: np.ndarray) -> np.ndarray:
    """Rows of ``inverted`` where ``use_inverted``, else rows of ``as_is`` (any trailing shape)."""
    mask = np.asarray(use_inverted, bool).reshape((-1,) + (1,) * (np.ndim(as_is) - 1))
    return np.where(mask, inverted, as_is)
