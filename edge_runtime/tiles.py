"""Tiling whole line-scan frames into NEU-scale windows, and combining the windows' answers into one.

NEU images are 200×200 crops of steel; a 2048×1000 GC10 frame squashed to 224×224 shrinks its defects ~5×.
With ``--tiles`` every frame is cut into windows, each window is classified as an image of its own, and the
frame's answer combines the windows that are *known* (unknown score below the model's threshold):

* ``max``: per class, the highest probability of any known window, renormalised (a defect seen in one window
  names the frame);
* ``mean``: the mean probabilities of the known windows.

When no window is known the frame is unknown (its probabilities then combine all windows). A frame's unknown
score is its lowest window score.

Tile specifications (``TileSpec.parse``): ``auto`` = square windows with the side of the frame's short edge
(2048×1000 → 3 windows), ``RxC`` = a grid of R rows and C columns, ``N`` = square windows of N pixels; windows
are spread evenly so that the first touches one edge and the last the other (they overlap when the size does
not divide evenly). Frames smaller than a window give one window, the whole frame.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

AGGREGATIONS = ("max", "mean")


@dataclass(frozen=True)
class TileSpec:
    """How to cut frames: ``grid`` (rows, cols), or square windows of ``side`` pixels (None: the short edge)."""

    grid: tuple[int, int] | None = None
    side: int | None = None
    method: str = "max"

    def __post_init__(self) -> None:
        if self.method not in AGGREGATIONS:
            raise ValueError(f"tile aggregation must be one of {AGGREGATIONS}, got {self.method!r}")
        if self.grid is not None and min(self.grid) < 1:
            raise ValueError(f"a tile grid needs at least 1 row and 1 column, got {self.grid}")
        if self.side is not None and self.side < 8:
            raise ValueError(f"tiles must be at least 8 pixels wide, got {self.side}")

    @classmethod
    def parse(cls, text: str, method: str = "max") -> "TileSpec":
        """'auto', 'RxC' (e.g. '1x3') or 'N' (pixels, e.g. '512')."""
        text = text.strip().lower()
        if text == "auto":
            return cls(method=method)
        grid = re.fullmatch(r"(\d+)x(\d+)", text)
        if grid:
            return cls(grid=(int(grid.group(1)), int(grid.group(2))), method=method)
        if text.isdigit():
            return cls(side=int(text), method=method)
        raise ValueError(f"--tiles takes 'auto', ROWSxCOLS (e.g. 1x3) or a window size in pixels, got {text!r}")

    def boxes(self, height: int, width: int) -> list[tuple[int, int, int, int]]:
        """Windows (x0, y0, x1, y1) covering the whole frame."""
        if self.grid is not None:
            rows, cols = self.grid
            ys = _spread(height, math.ceil(height / rows), rows)
            xs = _spread(width, math.ceil(width / cols), cols)
            tile_h, tile_w = min(height, math.ceil(height / rows)), min(width, math.ceil(width / cols))
        else:
            side = min(self.side or min(height, width), height, width)
            tile_h = tile_w = side
            ys = _spread(height, side, math.ceil(height / side))
            xs = _spread(width, side, math.ceil(width / side))
        return [(x, y, x + tile_w, y + tile_h) for y in ys for x in xs]


def _spread(length: int, size: int, count: int) -> list[int]:
    """``count`` start offsets of windows of ``size`` from 0 to ``length - size``, evenly spaced."""
    size = min(size, length)
    if count <= 1 or length <= size:
        return [0]
    return [round(i * (length - size) / (count - 1)) for i in range(count)]


def split(image: np.ndarray, boxes: list[tuple[int, int, int, int]]) -> list[np.ndarray]:
    """The windows of ``image`` (views, no copies)."""
    return [image[y0:y1, x0:x1] for x0, y0, x1, y1 in boxes]


@dataclass(frozen=True)
class Combined:
    probabilities: np.ndarray  # (classes,)
    ood_score: float | None  # lowest window score (None without an unknown score)
    known: int  # windows below the threshold (all windows when there is no unknown score)
    tiles: int
    best_tile: int  # index of the window with the most confident known answer


def combine(probabilities: np.ndarray, method: str = "max", scores: np.ndarray | None = None,
            threshold: float | None = None) -> Combined:
    """One answer from the windows' (T, C) probabilities; windows above ``threshold`` are left out."""
    probabilities = np.asarray(probabilities, np.float32)
    if probabilities.ndim != 2 or len(probabilities) == 0:
        raise ValueError(f"expected (tiles, classes) probabilities, got shape {probabilities.shape}")
    if method not in AGGREGATIONS:
        raise ValueError(f"tile aggregation must be one of {AGGREGATIONS}, got {method!r}")
    known = np.ones(len(probabilities), bool)
    if scores is not None and threshold is not None:
        known = np.asarray(scores) <= threshold
    use = probabilities[known] if known.any() else probabilities
    merged = use.max(axis=0) if method == "max" else use.mean(axis=0)
    merged = merged / max(float(merged.sum()), 1e-12)
    confidence = np.where(known if known.any() else np.ones_like(known), probabilities.max(axis=1), -1.0)
    return Combined(merged.astype(np.float32), None if scores is None else float(np.min(scores)),
                    int(known.sum()) if known.any() else 0, len(probabilities), int(np.argmax(confidence)))
