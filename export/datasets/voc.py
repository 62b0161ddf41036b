"""VOC annotation files (one xml per image, boxes with class names), read with GC10's class names."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from export.datasets.classes import gc10_class

log = logging.getLogger(__name__)


class VocError(ValueError):
    """A VOC xml that cannot be used; the message names the file and what to do."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}; fix or remove this annotation file")


class VocBox(NamedTuple):
    label: str  # English GC10 class
    xmin: int
    ymin: int
    xmax: int
    ymax: int

    @property
    def area(self) -> int:
        return max(0, self.xmax - self.xmin) * max(0, self.ymax - self.ymin)


@dataclass(frozen=True)
class VocAnnotation:
    path: Path
    filename: str
    folder: int | None  # class number of the annotator's folder (None when not a number, e.g. "all")
    width: int | None
    height: int | None
    boxes: tuple[VocBox, ...]
    skipped: tuple[str, ...] = ()  # boxes left out, with why (label that is no GC10 class, empty box)


def read_voc(path: str | Path) -> VocAnnotation:
    """Parse one VOC xml; raises :class:`VocError` naming the file when it is not usable."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise VocError(path, f"not readable as XML ({exc})") from exc
    if root.tag != "annotation":
        raise VocError(path, f"root element is <{root.tag}>, not a VOC <annotation>")
    folder_text = (root.findtext("folder") or "").strip()
    boxes, skipped = [], []
    for number, obj in enumerate(root.iter("object"), 1):
        box, why = _voc_box(path, number, obj)
        if box is None:
            log.warning("%s: box %d skipped: %s", path, number, why)
            skipped.append(f"box {number}: {why}")
        else:
            boxes.append(box)
    return VocAnnotation(path, (root.findtext("filename") or "").strip(),
                         int(folder_text) if folder_text.isdigit() else None,
                         _voc_int(path, root, "size/width", required=False),
                         _voc_int(path, root, "size/height", required=False), tuple(boxes), tuple(skipped))


def _voc_int(path: Path, element: ET.Element, key: str, required: bool = True) -> int | None:
    text = element.findtext(key)
    if text is None or not text.strip():
        if required:
            raise VocError(path, f"<{key}> is missing")
        return None
    try:
        return int(round(float(text)))
    except ValueError:
        raise VocError(path, f"<{key}> is {text.strip()!r}, not a number") from None


def _voc_box(path: Path, number: int, obj: ET.Element) -> tuple[VocBox | None, str]:
    name = (obj.findtext("name") or "").strip()
    bndbox = obj.find("bndbox")
    if bndbox is None:
        raise VocError(path, f"box {number} ({name!r}) has no <bndbox>")
    coords = [_voc_int(path, bndbox, k) for k in ("xmin", "ymin", "xmax", "ymax")]
    label = gc10_class(name)
    if label is None:
        return None, f"label {name!r} is no GC10 class"
    if coords[2] <= coords[0] or coords[3] <= coords[1]:
        return None, f"empty box {coords}"
    return VocBox(label, *coords), ""
