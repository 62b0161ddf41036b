"""X-SDD, a cross-plant test set for the NEU classifier: its images by class folder (numpy/OpenCV only).

Class folders may lie at any depth and be named with spaces or underscores; how each class counts against NEU
is in :mod:`export.datasets.classes`. Some X-SDD images are JPEG data named .png: :func:`xsdd_summary` can
report those (:func:`image_format`).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from edge_runtime.preprocessing import is_image_file
from export.datasets.classes import XSDD_LOOSE, XSDD_TO_NEU, xsdd_class

log = logging.getLogger(__name__)


class XsddImage(NamedTuple):
    path: Path
    xsdd_class: str
    neu_class: str | None  # the NEU class a correct answer names; None: no NEU counterpart


def xsdd_images(root: str | Path) -> list[XsddImage]:
    """Every image under ``root``'s X-SDD class folders (any depth; names with spaces or underscores), sorted.

    Files are chosen by extension; their content is decoded by OpenCV whatever the extension says (X-SDD has
    JPEG data named .png).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"X-SDD folder {root} not found; pass the folder that holds the class folders")
    images = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        here = Path(dirpath)
        cls = next((xsdd_class(p) for p in reversed([root.name, *here.relative_to(root).parts]) if xsdd_class(p)), None)
        if cls is None:
            continue
        images += [XsddImage(here / n, cls, XSDD_TO_NEU.get(cls)) for n in sorted(filenames) if is_image_file(n)]
    if not images:
        log.warning("%s: no X-SDD class folder with images found (expected e.g. slag_inclusion/)", root)
    return sorted(images)


def image_format(path: str | Path) -> str:
    """The format the file's bytes are in ('jpeg', 'png', 'bmp', 'tiff', 'webp', or 'unknown')."""
    with open(path, "rb") as handle:
        head = handle.read(12)
    signatures = {b"\xff\xd8\xff": "jpeg", b"\x89PNG": "png", b"BM": "bmp", b"II*\x00": "tiff", b"MM\x00*": "tiff"}
    for magic, name in signatures.items():
        if head.startswith(magic):
            return name
    return "webp" if head[:4] == b"RIFF" and head[8:12] == b"WEBP" else "unknown"


def _suffix_format(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    return {"jpg": "jpeg", "jpe": "jpeg", "tif": "tiff"}.get(suffix, suffix)


def xsdd_summary(images: Iterable[XsddImage], check_formats: bool = False) -> dict:
    """Counts per class and NEU mapping; with ``check_formats`` also the files whose bytes are another format
    than their extension says (reads 12 bytes per file)."""
    images = list(images)
    summary = {
        "images": len(images),
        "per_class": {c: n for c, n in sorted(Counter(i.xsdd_class for i in images).items())},
        "scored": dict(sorted(Counter(i.neu_class for i in images if i.neu_class).items())),
        "no_neu_counterpart": sum(i.neu_class is None for i in images),
        "loosely_related": dict(sorted(Counter(XSDD_LOOSE[i.xsdd_class] for i in images
                                               if i.xsdd_class in XSDD_LOOSE).items())),
    }
    if check_formats:
        mismatched = Counter(f"{i.xsdd_class}: {_suffix_format(i.path)} named, {image_format(i.path)} data"
                             for i in images if image_format(i.path) != _suffix_format(i.path))
        summary["format_mismatch"] = dict(sorted(mismatched.items()))
    return summary
