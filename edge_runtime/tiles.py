"""Tiling whole line-scan frames into NEU-scale windows, and combining the windows' answers into one.

NEU images are 200×200 crops of steel; a 2048×1000 GC10 frame squashed to 224×224 shrinks its defects ~5×.
With ``--tiles`` every frame is cut into windows, each window is classified as an image of its own, and the
frame's answer combines the windows that are *valid* (on the device: unknown score below the model's
threshold).

**Where the windows go** (:func:`tile_boxes`), per axis of length ``L`` with windows of length ``s``:

* square tiles of ``tile`` pixels (default: the frame's short side, i.e. the height of a line-scan frame):
  ``s = min(tile, height, width)`` on both axes, so windows stay square and keep the image's aspect ratio;
  a frame that fits inside one tile (``height <= tile`` and ``width <= tile``) is one window, the whole frame;
* a grid of ``R`` rows × ``C`` columns: ``s = ceil(L / (1 + (n - 1)(1 - overlap)))`` for ``n`` = R or C, the
  smallest window with which ``n`` windows overlapping by ``overlap`` cover the axis;
* the number of windows is ``n = 1 + ceil((L - s) / (s·(1 - overlap)))`` and their starts are spread evenly
  from 0 to ``L - s`` (``round(i·(L - s)/(n - 1))``): the first touches one edge, the last the other, every
  window is full size, the frame is covered, and neighbours overlap by at least ``overlap``·s (more when the
  size does not divide evenly, ±1 pixel of rounding). A 2048×1000 frame gives 3 windows of 1000×1000 at
  x = 0, 524, 1048 (overlap 0 or 0.25), 4 at overlap 0.5 (x = 0, 349, 699, 1048).

**Combining the windows** (:func:`aggregate`): ``max`` takes, per class, the highest probability of any valid
window, renormalised to sum 1 (a defect seen in one window names the frame); ``mean`` averages the valid
windows. When no window is valid, all windows are used and the result says so (``fallback``). The frame's
most confident window is the used window with the highest probability of the frame's answer (first on ties).

Tile specifications (:meth:`TileSpec.parse`, the ``--tiles`` option): ``auto`` = square windows of the frame's
short side, ``RxC`` = a grid of R rows and C columns, ``N`` = square windows of N pixels.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

AGGREGATIONS = ("max", "mean")
MIN_TILE = 8
TILE_FORMS = ("'auto' (squares of the frame's short side), ROWSxCOLS (a grid, e.g. 1x3) "
              "or a window side in pixels (e.g. 512)")

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive ends)


def tile_boxes(height: int, width: int, tile: int | None = None, rows_cols: tuple[int, int] | None = None,
               overlap: float = 0.0) -> list[Box]:
    """Windows (x0, y0, x1, y1) covering a ``height``×``width`` frame, row by row (rules: module docstring)."""
    if height < 1 or width < 1:
        raise ValueError(f"a frame needs at least 1×1 pixels, got height {height}, width {width}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"tile overlap is a fraction of the window in [0, 1), got {overlap}")
    if tile is not None and rows_cols is not None:
        raise ValueError("give either a tile size or a rows×cols grid, not both")
    if rows_cols is not None:
        rows, cols = rows_cols
        if rows < 1 or cols < 1:
            raise ValueError(f"a tile grid needs at least 1 row and 1 column, got {rows}x{cols}")
        size_h, size_w = _grid_window(height, rows, overlap), _grid_window(width, cols, overlap)
        count_h, count_w = rows, cols
    else:
        if tile is not None and tile < 1:
            raise ValueError(f"tile side must be a positive number of pixels, got {tile}")
        side = min(height, width) if tile is None else tile
        if height <= side and width <= side:
            return [(0, 0, width, height)]
        size_h = size_w = min(side, height, width)
        count_h, count_w = _count(height, size_h, overlap), _count(width, size_w, overlap)
    ys, xs = _starts(height, size_h, count_h), _starts(width, size_w, count_w)
    return [(x, y, x + size_w, y + size_h) for y in ys for x in xs]


def _grid_window(length: int, count: int, overlap: float) -> int:
    """The smallest window with which ``count`` windows overlapping by ``overlap`` cover ``length``."""
    return min(length, math.ceil(length / (1 + (count - 1) * (1 - overlap))))


def _count(length: int, size: int, overlap: float) -> int:
    """How many windows of ``size`` with steps of at most ``size·(1 - overlap)`` cover ``length``."""
    if size >= length:
        return 1
    step = max(size * (1 - overlap), 1.0)
    return 1 + math.ceil((length - size) / step - 1e-9)


def _starts(length: int, size: int, count: int) -> list[int]:
    """``count`` window starts from 0 to ``length - size``, evenly spaced."""
    if count <= 1:
        return [0]
    return [round(i * (length - size) / (count - 1)) for i in range(count)]


def split_tiles(image: np.ndarray, boxes: list[Box]) -> list[np.ndarray]:
    """The windows of ``image`` (numpy views, no copies), in the order of ``boxes``."""
    return [image[y0:y1, x0:x1] for x0, y0, x1, y1 in boxes]


split = split_tiles  # the name edge_runtime.classifier uses


@dataclass(frozen=True)
class TileResult:
    """The frame's answer from its windows."""

    probabilities: np.ndarray  # (classes,), sums to 1
    tile_index: int  # the used window with the highest probability of the frame's answer
    used: int  # windows that went into the answer (all of them when ``fallback``)
    tiles: int  # windows in the frame
    fallback: bool  # no window was valid, so all were used


def aggregate(probabilities: np.ndarray, method: str = "max", valid: np.ndarray | None = None) -> TileResult:
    """One (C,) answer from (T, C) window probabilities: ``max`` (per class, renormalised) or ``mean``.

    ``valid`` (bool, (T,)) selects the windows to use; when none is valid every window is used
    (``fallback=True``). Deterministic: ties pick the first window.
    """
    probabilities = np.asarray(probabilities, np.float32)
    if probabilities.ndim != 2 or probabilities.shape[0] == 0 or probabilities.shape[1] == 0:
        raise ValueError("expected (tiles, classes) probabilities with at least one tile, "
                         f"got shape {probabilities.shape}")
    if method not in AGGREGATIONS:
        raise ValueError(f"tile aggregation must be one of {AGGREGATIONS}, got {method!r}")
    tiles = probabilities.shape[0]
    mask = np.ones(tiles, bool) if valid is None else np.asarray(valid, bool)
    if mask.shape != (tiles,):
        raise ValueError(f"the valid mask needs one entry per tile ({tiles}), got shape {mask.shape}")
    fallback = not mask.any()
    if fallback:
        mask = np.ones(tiles, bool)
    used = probabilities[mask]
    merged = used.max(axis=0) if method == "max" else used.mean(axis=0)
    merged = merged / max(float(merged.sum()), 1e-12)
    answer = int(np.argmax(merged))
    support = np.where(mask, probabilities[:, answer], -np.inf)
    return TileResult(merged.astype(np.float32), int(np.argmax(support)), int(mask.sum()), tiles, fallback)


@dataclass(frozen=True)
class Combined:
    """:func:`combine`'s answer for a classifier with an unknown score."""

    probabilities: np.ndarray  # (classes,)
    ood_score: float | None  # lowest window score (None without an unknown score)
    known: int  # windows at or below the threshold (all windows without a threshold; 0 on fallback)
    tiles: int
    best_tile: int  # see TileResult.tile_index


def combine(probabilities: np.ndarray, method: str = "max", scores: np.ndarray | None = None,
            threshold: float | None = None) -> Combined:
    """:func:`aggregate` with the windows whose unknown score is at most ``threshold`` as the valid ones.

    A frame's unknown score is its lowest window score; a NaN score counts as unknown.
    """
    valid = None
    if scores is not None and threshold is not None:
        valid = np.asarray(scores, np.float64) <= threshold
    result = aggregate(probabilities, method, valid)
    ood = None if scores is None else float(np.min(scores))
    return Combined(result.probabilities, ood, 0 if result.fallback else result.used, result.tiles,
                    result.tile_index)


@dataclass(frozen=True)
class TileSpec:
    """How to cut frames: a ``grid`` (rows, cols) or square windows of ``side`` pixels (None: the short side),
    neighbours overlapping by at least ``overlap`` (fraction of a window), combined by ``method``."""

    grid: tuple[int, int] | None = None
    side: int | None = None
    method: str = "max"
    overlap: float = 0.0

    def __post_init__(self) -> None:
        if self.method not in AGGREGATIONS:
            raise ValueError(f"tile aggregation must be one of {AGGREGATIONS}, got {self.method!r}")
        if self.grid is not None and self.side is not None:
            raise ValueError("a tile spec is a grid or a window side, not both")
        if self.grid is not None and (len(self.grid) != 2 or min(self.grid) < 1):
            raise ValueError(f"a tile grid needs at least 1 row and 1 column, got {self.grid}")
        if self.side is not None and self.side < MIN_TILE:
            raise ValueError(f"tiles must be at least {MIN_TILE} pixels wide, got {self.side}")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"tile overlap is a fraction of the window in [0, 1), got {self.overlap}")

    @classmethod
    def parse(cls, text: str, method: str = "max", overlap: float = 0.0) -> "TileSpec":
        """'auto', 'RxC' (e.g. '3x1', rows × columns) or 'N' (window side in pixels, e.g. '512')."""
        cleaned = str(text).strip().lower()
        if cleaned == "auto":
            return cls(method=method, overlap=overlap)
        grid = re.fullmatch(r"(\d+)\s*x\s*(\d+)", cleaned)
        if grid:
            rows, cols = int(grid.group(1)), int(grid.group(2))
            if rows < 1 or cols < 1:
                raise ValueError(f"--tiles {text!r}: a grid needs at least 1 row and 1 column; use {TILE_FORMS}")
            return cls(grid=(rows, cols), method=method, overlap=overlap)
        if cleaned.isdigit():
            if int(cleaned) < MIN_TILE:
                raise ValueError(f"--tiles {text!r}: windows must be at least {MIN_TILE} pixels; use {TILE_FORMS}")
            return cls(side=int(cleaned), method=method, overlap=overlap)
        raise ValueError(f"--tiles takes {TILE_FORMS}, got {text!r}")

    def __str__(self) -> str:
        """The ``--tiles`` text of this spec (``parse(str(spec))`` gives the same windows)."""
        return f"{self.grid[0]}x{self.grid[1]}" if self.grid else str(self.side) if self.side else "auto"

    def boxes(self, height: int, width: int) -> list[Box]:
        """Windows (x0, y0, x1, y1) covering a frame of ``height``×``width``."""
        return tile_boxes(height, width, tile=self.side, rows_cols=self.grid, overlap=self.overlap)
