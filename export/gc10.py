"""GC10-DET for the cross-plant checks: frames, VOC boxes, the label of each frame, annotated crops.

GC10-DET (2,306 grayscale 2048×1000 line-scan frames, 10 classes) stores one class folder per defect and one
VOC xml per frame (beside the image, or in a separate ``annotations/`` / ``label/`` folder). Its folders and
its boxes sometimes disagree (``inclusion/img_01_4406743300_00935.jpg`` holds water_spot and silk_spot boxes),
14 frames have no xml and 12 file names occur in two class folders with different content.

How labels are resolved (the boxes are the annotation; the folder is only a hint):

* each frame's xml is looked up beside the image, else by file name in the annotation folder; when a name
  occurs in two class folders, the xml belongs to the folder whose class number equals the xml's ``<folder>``;
* a frame's label is the folder class if one of its boxes has that class, else its most frequent box class
  (ties: the larger total box area), flagged as a conflict; a frame without xml keeps its folder class,
  flagged "no xml";
* the annotated-crop protocol uses every box with its own label, whatever the folder.

Scoring: only ``inclusion`` has a NEU counterpart (``GC10_TO_NEU``); rolled_pit is reported but not scored
(NEU has no rolled-in pits); the other eight classes have no counterpart and should be answered unknown.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from edge_runtime.preprocessing import is_image_file

log = logging.getLogger(__name__)

GC10_CODES = {
    "1": "punching_hole", "2": "welding_line", "3": "crescent_gap", "4": "water_spot", "5": "oil_spot",
    "6": "silk_spot", "7": "inclusion", "8": "rolled_pit", "9": "crease", "10": "waist_folding",
}
GC10_TO_NEU = {"inclusion": "inclusion"}
GC10_NO_COUNTERPART = ("punching_hole", "welding_line", "crescent_gap", "water_spot", "oil_spot", "silk_spot",
                       "crease", "waist_folding")
ANNOTATION_FOLDERS = ("annotations", "Annotations", "label", "labels", "lable")


class VocError(ValueError):
    """A VOC annotation file that cannot be used; names the file."""


@dataclass(frozen=True)
class Box:
    label: str
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def area(self) -> int:
        return max(0, self.x1 - self.x0) * max(0, self.y1 - self.y0)


@dataclass(frozen=True)
class VocAnnotation:
    path: Path
    filename: str
    folder: str | None  # GC10 class number of the annotator's folder
    boxes: tuple[Box, ...]


@dataclass
class Gc10Frame:
    path: Path
    folder_class: str | None  # None for frames outside a class folder (unlabeled)
    boxes: tuple[Box, ...] = ()
    label: str | None = None
    note: str = ""  # "", "no xml", or the conflict between folder and boxes
    xml: Path | None = None

    @property
    def conflict(self) -> bool:
        return bool(self.note)


@dataclass
class Gc10Scan:
    frames: list[Gc10Frame]
    bad_xml: list[tuple[str, str]] = field(default_factory=list)


def class_of(name: str) -> str | None:
    """English GC10 class of a box label or folder name ('7_yiwu', '10_yaozhed', 'inclusion', '7'), else None."""
    code = name.strip().split("_")[0]
    if code in GC10_CODES:
        return GC10_CODES[code]
    return name if name in GC10_CODES.values() else None


def read_voc(path: Path) -> VocAnnotation:
    """Parse one VOC xml; raises :class:`VocError` naming the file when it is malformed."""
    try:
        root = ET.parse(path).getroot()
        boxes = []
        for obj in root.iter("object"):
            name = obj.findtext("name", "").strip()
            label = class_of(name)
            if label is None:  # the release has one box named "d": skip it, keep the others
                log.warning("%s: box label %r is no GC10 class; that box is skipped", path, name)
                continue
            bb = obj.find("bndbox")
            coords = [int(float(bb.findtext(k))) for k in ("xmin", "ymin", "xmax", "ymax")]
            boxes.append(Box(label, *coords))
        return VocAnnotation(path, root.findtext("filename", "").strip(), root.findtext("folder"), tuple(boxes))
    except (ET.ParseError, AttributeError, TypeError, ValueError) as exc:
        if isinstance(exc, VocError):
            raise
        raise VocError(f"{path}: not a usable VOC annotation ({exc}); fix or remove the file") from exc


def resolve_label(folder_class: str | None, boxes: tuple[Box, ...]) -> tuple[str | None, str]:
    """The frame label and a note (empty when folder and boxes agree); see the module docstring."""
    if not boxes:
        return folder_class, "no xml" if folder_class else "unlabeled"
    classes = Counter(b.label for b in boxes)
    if folder_class in classes:
        return folder_class, ""
    area = Counter()
    for b in boxes:
        area[b.label] += b.area
    label = max(classes, key=lambda c: (classes[c], area[c]))
    return label, f"folder {folder_class} but boxes {dict(classes)}: labelled {label}"


def scan_gc10(root: Path) -> Gc10Scan:
    """Every frame under the class folders of ``root`` (any depth below them) with its boxes and label."""
    root = Path(root)
    annotation_dirs = [root / d for d in ANNOTATION_FOLDERS if (root / d).is_dir()]
    index: dict[str, list[Path]] = {}
    for directory in annotation_dirs:
        for xml in directory.rglob("*.xml"):
            index.setdefault(xml.stem, []).append(xml)
    scan = Gc10Scan([])
    cache: dict[Path, VocAnnotation | None] = {}

    def annotation(xml: Path) -> VocAnnotation | None:
        if xml not in cache:
            try:
                cache[xml] = read_voc(xml)
            except VocError as exc:
                log.warning("%s", exc)
                scan.bad_xml.append((str(xml), str(exc)))
                cache[xml] = None
        return cache[xml]

    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in ANNOTATION_FOLDERS):
        folder_class = class_of(folder.name)
        for image in sorted(p for p in folder.rglob("*") if is_image_file(p)):
            candidates = [image.with_suffix(".xml")] if image.with_suffix(".xml").is_file() else index.get(image.stem, [])
            voc = _matching(candidates, folder_class, annotation)
            boxes = voc.boxes if voc else ()
            label, note = resolve_label(folder_class, boxes)
            scan.frames.append(Gc10Frame(image, folder_class, boxes, label, note, voc.path if voc else None))
    return scan


def _matching(candidates: list[Path], folder_class: str | None, annotation) -> VocAnnotation | None:
    """The frame's xml: the only readable candidate, or, when a file name repeats across class folders, the
    one whose ``<folder>`` names this folder's class (none if no candidate does)."""
    parsed = [a for a in (annotation(c) for c in candidates) if a is not None]
    if len(parsed) == 1:
        return parsed[0]
    return next((a for a in parsed if class_of(a.folder or "") == folder_class), None)


def square_crop_box(box: Box, width: int, height: int, pad: float = 0.25, min_side: int = 64) -> tuple[int, int, int, int]:
    """A square window centred on ``box``, side max(w, h)·(1 + pad) (at least ``min_side``), moved inside the
    frame where it fits, clipped to the frame where it does not."""
    side = max(box.x1 - box.x0, box.y1 - box.y0)
    side = max(int(round(side * (1 + pad))), min_side)
    side = min(side, max(width, height))
    cx, cy = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
    x0 = int(round(min(max(cx - side / 2, 0), max(width - side, 0))))
    y0 = int(round(min(max(cy - side / 2, 0), max(height - side, 0))))
    return x0, y0, min(x0 + side, width), min(y0 + side, height)


def frame_size(frame: Gc10Frame) -> tuple[int, int] | None:
    """(width, height) from the frame's xml, when it has one."""
    if frame.xml is None:
        return None
    root = ET.parse(frame.xml).getroot()
    width, height = root.findtext("size/width"), root.findtext("size/height")
    return (int(width), int(height)) if width and height else None
