"""GC10 annotated crops: every VOC box of a frame as a padded square crop, labelled with the box's class."""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_runtime.errors import ImageReadError
from edge_runtime.preprocessing import read_image
from export.datasets.classes import GC10_TO_NEU
from export.datasets.gc10 import Gc10Frame
from export.datasets.voc import VocBox

log = logging.getLogger(__name__)


def crop_window(box: VocBox | tuple[int, int, int, int], width: int, height: int, pad: float = 0.25,
                min_side: int = 64) -> tuple[int, int, int, int]:
    """Square window (x0, y0, x1, y1) centred on ``box`` (xmin, ymin, xmax, ymax; clipped to the frame first):
    side ``round(max(w, h)·(1 + pad))``, at least ``min_side``; moved inside the frame along each axis where
    the frame is long enough, else spanning the whole axis (it then reaches outside: see :func:`crop_pixels`)."""
    xmin, ymin, xmax, ymax = box[-4:]
    xmin, xmax = min(max(xmin, 0), width), min(max(xmax, 0), width)
    ymin, ymax = min(max(ymin, 0), height), min(max(ymax, 0), height)
    side = max(int(round(max(xmax - xmin, ymax - ymin) * (1 + pad))), int(min_side), 1)
    x0 = _place(math.floor((xmin + xmax - side) / 2), side, width)
    y0 = _place(math.floor((ymin + ymax - side) / 2), side, height)
    return x0, y0, x0 + side, y0 + side


def _place(start: int, side: int, length: int) -> int:
    """``start`` moved so that the window lies inside [0, length), or covers all of it when it is longer."""
    low, high = min(0, length - side), max(0, length - side)
    return min(max(start, low), high)


def crop_pixels(image: np.ndarray, window: tuple[int, int, int, int]) -> np.ndarray:
    """The pixels of ``window`` (a view when it lies inside the image), the edge pixels repeated
    (cv2.BORDER_REPLICATE) where it reaches outside."""
    height, width = image.shape[:2]
    x0, y0, x1, y1 = window
    inner = image[max(y0, 0):min(y1, height), max(x0, 0):min(x1, width)]
    borders = (max(0, -y0), max(0, y1 - height), max(0, -x0), max(0, x1 - width))
    if not any(borders):
        return inner
    return cv2.copyMakeBorder(np.ascontiguousarray(inner), *borders, cv2.BORDER_REPLICATE)


@dataclass(frozen=True)
class Gc10Crop:
    frame: Path
    box: VocBox
    label: str  # the box's class
    index: int  # the box's position in its frame's xml
    frame_label: str | None
    frame_size: tuple[int, int] | None  # (width, height) from the xml
    pad: float = 0.25
    min_side: int = 64

    @property
    def neu_label(self) -> str | None:
        return GC10_TO_NEU.get(self.label)

    def window(self, width: int, height: int) -> tuple[int, int, int, int]:
        return crop_window(self.box, width, height, self.pad, self.min_side)

    def crop(self, image: np.ndarray) -> np.ndarray:
        """This box's square crop of its decoded frame (raises ValueError if the frame's size is not the xml's)."""
        height, width = image.shape[:2]
        if self.frame_size and self.frame_size != (width, height):
            raise ValueError(f"{self.frame} is {width}×{height} but its xml says {self.frame_size[0]}×"
                             f"{self.frame_size[1]}: the boxes do not fit this copy; use the original frame")
        return crop_pixels(image, self.window(width, height))

    def read(self) -> np.ndarray:
        """Decode the frame and crop it (raises ImageReadError naming an unreadable frame)."""
        return self.crop(read_image(self.frame))


def gc10_crops(frames: Iterable[Gc10Frame], pad: float = 0.25, min_side: int = 64) -> list[Gc10Crop]:
    """One crop per VOC box of every frame, labelled with the box's class, frame by frame."""
    if pad < 0 or min_side < 1:
        raise ValueError(f"crop pad must be >= 0 and min_side >= 1, got pad={pad}, min_side={min_side}")
    return [Gc10Crop(f.path, box, box.label, i, f.label, f.size, pad, min_side)
            for f in frames for i, box in enumerate(f.boxes)]


def iter_crop_pixels(crops: Iterable[Gc10Crop],
                     errors: list[tuple[Path, str]] | None = None) -> Iterator[tuple[Gc10Crop, np.ndarray]]:
    """(crop, pixels) for every crop, decoding each frame once (crops of a frame grouped, first-seen order).

    An unreadable frame is logged, its crops skipped and ``(path, reason)`` appended to ``errors``.
    """
    by_frame: dict[Path, list[Gc10Crop]] = defaultdict(list)
    for crop in crops:
        by_frame[crop.frame].append(crop)
    for path, group in by_frame.items():
        try:
            image = read_image(path)
            pixels = [(crop, crop.crop(image)) for crop in group]
        except (ImageReadError, ValueError) as exc:
            log.warning("%s: %d crops skipped: %s", path, len(group), exc)
            if errors is not None:
                errors.append((path, str(exc)))
            continue
        yield from pixels
