"""Cross-plant test sets for the NEU classifier: GC10-DET frames and crops, X-SDD images (numpy/OpenCV only).

**GC10-DET** (2,306 grayscale 2048×1000 line-scan frames, 10 classes; Kaggle "defects-class-and-location" or
the authors' release) keeps one folder per class, named in English (``inclusion``, ``waist folding``), by
number (``7``) or as ``N_pinyin`` (``7_yiwu``), and one VOC xml per frame, beside the image or in a separate
``annotations/``, ``Annotations/``, ``label/`` or ``labels/`` folder (at any depth below the root).

Which xml belongs to a frame: the xml beside the image (same stem), else the annotation folders' xml with the
image's file stem. When a file name occurs in more than one class folder (12 names do in the release), a
shared xml belongs to the folder whose class number equals the xml's ``<folder>`` (else, when ``<folder>`` is
not a class number, to the folder whose class is among its boxes); the other image of that name gets none.

How a frame's label is resolved (the boxes are the annotation, the folder only a hint):

* ``label`` = the folder class if any box has it; otherwise the most frequent box class (ties: the largest
  total box area, then the lower class number), and the frame is flagged ``conflict`` with the reason;
* a frame without a usable xml (none found, unreadable, or no GC10 box in it) keeps its folder label and is
  flagged ``conflict`` with the reason ("no xml", "bad xml: ...", "xml has no boxes");
* frames in an ``unlabeled/`` folder have no label (``unlabeled=True``); box labels that are no GC10 class
  (one box in the release is named ``d``) are skipped with a warning and recorded on the annotation.

**Scoring against NEU.** Only ``inclusion`` has a NEU counterpart (:data:`GC10_TO_NEU`). Eight classes have none
and are the "unknown defect" examples (:data:`GC10_UNKNOWN`). ``rolled_pit`` is neither: NEU has no rolled-in
pits, but "pitted_surface" is close enough that calling either answer wrong would be arbitrary, so it is
reported and never scored (:data:`GC10_REPORT_ONLY`). The annotated-crop protocol (:func:`gc10_crops`) cuts
every box with its own label, whatever the folder.

**X-SDD** (:func:`xsdd_images`): ``slag_inclusion`` → inclusion, ``surface_scratch`` → scratches
(:data:`XSDD_TO_NEU`); the other five classes have no NEU counterpart. The two oxide-scale classes are only
loosely NEU's rolled-in_scale, so they stay unmapped and are reported (:data:`XSDD_LOOSE`).
"""

from __future__ import annotations

import csv
import logging
import math
import os
import re
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from edge_runtime.errors import ImageReadError
from edge_runtime.fileio import file_sha256
from edge_runtime.preprocessing import is_image_file, read_image

log = logging.getLogger(__name__)

# --- class tables --------------------------------------------------------------------------------------------

GC10_CLASSES = ("punching_hole", "welding_line", "crescent_gap", "water_spot", "oil_spot", "silk_spot",
                "inclusion", "rolled_pit", "crease", "waist_folding")  # class number i + 1
GC10_CODES = {
    "1_chongkong": "punching_hole", "2_hanfeng": "welding_line", "3_yueyawan": "crescent_gap",
    "4_shuiban": "water_spot", "5_youban": "oil_spot", "6_siban": "silk_spot", "7_yiwu": "inclusion",
    "8_yahen": "rolled_pit", "9_zhehen": "crease", "10_yaozhe": "waist_folding", "10_yaozhed": "waist_folding",
}
GC10_TO_NEU = {"inclusion": "inclusion"}
GC10_UNKNOWN = ("punching_hole", "welding_line", "crescent_gap", "water_spot", "oil_spot", "silk_spot",
                "crease", "waist_folding")
GC10_REPORT_ONLY = ("rolled_pit",)
GC10_MANIFEST = "full-set-sha256.tsv"
ANNOTATION_DIRS = ("annotations", "label", "labels", "lable")  # compared lower-case; "lable" is a Kaggle typo
UNLABELED_DIRS = ("unlabeled", "unlabelled")

XSDD_CLASSES = ("slag_inclusion", "surface_scratch", "oxide_scale_of_plate_system",
                "oxide_scale_of_temperature_system", "red_iron", "iron_sheet_ash", "finishing_roll_printing")
XSDD_TO_NEU = {"slag_inclusion": "inclusion", "surface_scratch": "scratches"}
XSDD_LOOSE = {"oxide_scale_of_plate_system": "rolled-in_scale", "oxide_scale_of_temperature_system": "rolled-in_scale"}
XSDD_UNKNOWN = tuple(c for c in XSDD_CLASSES if c not in XSDD_TO_NEU)


def _clean(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def gc10_class(name: str | int) -> str | None:
    """English GC10 class of a box label, folder name or class number ('7_yiwu', 'waist folding', '10', 7)."""
    cleaned = _clean(str(name))
    if cleaned in GC10_CLASSES:
        return cleaned
    number = re.fullmatch(r"(\d+)(_[a-z]+)?", cleaned)
    if number and 1 <= int(number.group(1)) <= len(GC10_CLASSES):
        return GC10_CLASSES[int(number.group(1)) - 1]
    return None


def gc10_number(label: str) -> int:
    """Class number (1..10) of an English GC10 class."""
    return GC10_CLASSES.index(label) + 1


def gc10_role(label: str | None) -> str:
    """How a GC10 class counts against NEU: 'scored', 'unknown' (no counterpart), 'report_only' or 'unlabeled'."""
    if label is None:
        return "unlabeled"
    if label in GC10_TO_NEU:
        return "scored"
    return "report_only" if label in GC10_REPORT_ONLY else "unknown"


# --- VOC annotations -----------------------------------------------------------------------------------------


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


# --- GC10 frames ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gc10Frame:
    path: Path
    folder_class: str | None  # class of the folder it lies in (None in unlabeled/)
    boxes: tuple[VocBox, ...] = ()
    label: str | None = None  # the resolved frame label (module docstring)
    conflict: bool = False
    reason: str = ""  # why it is flagged: folder/box disagreement, "no xml", "bad xml: ..."
    xml: Path | None = None
    size: tuple[int, int] | None = None  # (width, height) from the xml
    unlabeled: bool = False

    @property
    def box_labels(self) -> tuple[str, ...]:
        return tuple(b.label for b in self.boxes)

    @property
    def neu_label(self) -> str | None:
        """The NEU class a correct answer would name (None: not scored)."""
        return GC10_TO_NEU.get(self.label or "")


def resolve_label(folder_class: str | None, boxes: Iterable[VocBox]) -> tuple[str | None, str]:
    """(frame label, disagreement reason or '') from the folder class and the xml boxes (module docstring)."""
    boxes = tuple(boxes)
    if not boxes:
        return folder_class, ""
    counts = Counter(b.label for b in boxes)
    if folder_class in counts:
        return folder_class, ""
    area = Counter()
    for box in boxes:
        area[box.label] += box.area
    label = max(counts, key=lambda c: (counts[c], area[c], -gc10_number(c)))
    found = ", ".join(f"{c} ×{n}" for c, n in sorted(counts.items()))
    return label, f"folder {folder_class} but boxes {found}: labelled {label}"


def gc10_frames(root: str | Path) -> list[Gc10Frame]:
    """Every image under ``root``'s class folders (and ``unlabeled/``), with its xml, boxes and label.

    Images outside any class folder are ignored (logged). A bad xml is logged and recorded on its frame
    (``reason`` "bad xml: ..."); the scan goes on.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"GC10 folder {root} not found; pass the folder that holds the class folders")
    images, annotation_dirs, outside = _walk_gc10(root)
    if outside:
        log.info("%s: %d images outside any GC10 class folder ignored (e.g. %s)", root, len(outside), outside[0])
    return _resolve_frames(images, _xml_index(annotation_dirs))


def gc10_release_frames(root: str | Path) -> list[Gc10Frame]:
    """The frames of the full release as listed in ``full-set-sha256.tsv``, resolved against the xml files
    present: the label/conflict picture of all 2,306 frames even when most images are absent (their ``path``
    is where they would lie)."""
    root = Path(root)
    entries = read_gc10_manifest(root / GC10_MANIFEST)
    images = [(root / e.class_dir / e.filename, gc10_class(e.class_dir), False) for e in entries]
    _, annotation_dirs, _ = _walk_gc10(root)
    return _resolve_frames(images, _xml_index(annotation_dirs))


def _walk_gc10(root: Path) -> tuple[list[tuple[Path, str | None, bool]], list[Path], list[Path]]:
    """(images as (path, folder class, unlabeled), annotation folders, images outside any class folder)."""
    images, annotation_dirs, outside = [], [], []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for d in [d for d in dirnames if d.lower() in ANNOTATION_DIRS]:
            annotation_dirs.append(here / d)
            dirnames.remove(d)
        context = _folder_context(root, here)
        for name in sorted(filenames):
            path = here / name
            if not is_image_file(path):
                continue
            if context is None:
                outside.append(path)
            else:
                images.append((path, context if context != "unlabeled" else None, context == "unlabeled"))
    return images, annotation_dirs, outside


def _folder_context(root: Path, directory: Path) -> str | None:
    """The innermost GC10 class (or 'unlabeled') named by ``directory`` or a folder between it and ``root``
    (``root``'s own name included, so a single class folder can be scanned)."""
    parts = [root.name, *directory.relative_to(root).parts]
    for part in reversed(parts):
        if part.lower() in UNLABELED_DIRS:
            return "unlabeled"
        if gc10_class(part):
            return gc10_class(part)
    return None


def _xml_index(annotation_dirs: list[Path]) -> dict[str, list[Path]]:
    index: dict[str, list[Path]] = defaultdict(list)
    for directory in annotation_dirs:
        for xml in sorted(directory.rglob("*")):
            if xml.suffix.lower() == ".xml":
                index[xml.stem].append(xml)
    return index


class _VocCache:
    """Parses each xml once; a bad one is logged once and remembered as its error message."""

    def __init__(self) -> None:
        self._parsed: dict[Path, VocAnnotation | str] = {}

    def get(self, path: Path) -> VocAnnotation | str:
        if path not in self._parsed:
            try:
                self._parsed[path] = read_voc(path)
            except VocError as exc:
                log.warning("%s", exc)
                self._parsed[path] = str(exc)
        return self._parsed[path]


def _resolve_frames(images: list[tuple[Path, str | None, bool]], index: dict[str, list[Path]]) -> list[Gc10Frame]:
    folders_of: dict[str, set[str]] = defaultdict(set)
    for path, folder_class, unlabeled in images:
        if not unlabeled:
            folders_of[path.stem].add(folder_class)
    cache = _VocCache()
    frames = []
    for path, folder_class, unlabeled in images:
        if unlabeled:
            frames.append(Gc10Frame(path, None, unlabeled=True))
            continue
        beside = path.with_suffix(".xml")
        if beside.is_file():
            voc = cache.get(beside)
        else:
            repeated = len(folders_of[path.stem]) > 1
            voc = _pick_xml(index.get(path.stem, []), folder_class, repeated, cache)
        frames.append(_frame(path, folder_class, voc))
    return frames


def _pick_xml(candidates: list[Path], folder_class: str | None, repeated: bool,
              cache: _VocCache) -> VocAnnotation | str | None:
    """The frame's annotation among the annotation folders' xml of its stem (or the error of a bad one);
    None when it has none."""
    parsed = [cache.get(c) for c in candidates]
    good = [p for p in parsed if isinstance(p, VocAnnotation)]
    number = gc10_number(folder_class) if folder_class else None
    by_folder = [a for a in good if number is not None and a.folder == number]
    if by_folder:
        return by_folder[0]
    if repeated:  # a shared name: only an xml that names this folder, or whose boxes do, belongs to it
        return next((a for a in good if a.folder is None and folder_class in {b.label for b in a.boxes}), None)
    if good:
        return good[0]
    return parsed[0] if parsed else None


def _frame(path: Path, folder_class: str | None, voc: VocAnnotation | str | None) -> Gc10Frame:
    if voc is None:
        return Gc10Frame(path, folder_class, label=folder_class, conflict=True, reason="no xml")
    if isinstance(voc, str):
        return Gc10Frame(path, folder_class, label=folder_class, conflict=True, reason=f"bad xml: {voc}")
    size = (voc.width, voc.height) if voc.width and voc.height else None
    if not voc.boxes:
        return Gc10Frame(path, folder_class, label=folder_class, conflict=True, reason="xml has no boxes",
                         xml=voc.path, size=size)
    label, reason = resolve_label(folder_class, voc.boxes)
    return Gc10Frame(path, folder_class, voc.boxes, label, bool(reason), reason, voc.path, size)


# --- verification against the release checksums --------------------------------------------------------------


class ManifestEntry(NamedTuple):
    sha256: str
    size: int
    class_dir: str
    filename: str


@dataclass(frozen=True)
class FileCheck:
    path: Path
    # "match" | "renamed" (same bytes, other folder or name) | "changed" (same name, other bytes) | "not_in_release"
    status: str
    release: ManifestEntry | None  # the release entry it was compared with


def read_gc10_manifest(path: str | Path) -> list[ManifestEntry]:
    """Rows of ``full-set-sha256.tsv`` (sha256, size_bytes, class_dir, filename)."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    try:
        return [ManifestEntry(r["sha256"].lower(), int(r["size_bytes"]), r["class_dir"], r["filename"]) for r in rows]
    except (KeyError, ValueError, AttributeError) as exc:
        raise ValueError(f"{path}: expected columns sha256, size_bytes, class_dir, filename ({exc})") from exc


def verify_gc10(root: str | Path) -> list[FileCheck] | None:
    """Each image under ``root`` compared with ``full-set-sha256.tsv`` (None when that file is absent).

    Re-encoded or edited copies are "changed"; a file is hashed only when its size matches an entry's.
    """
    root = Path(root)
    manifest = root / GC10_MANIFEST
    if not manifest.is_file():
        log.info("%s not found: GC10 copy not verified", manifest)
        return None
    entries = read_gc10_manifest(manifest)
    by_name: dict[str, list[ManifestEntry]] = defaultdict(list)
    for e in entries:
        by_name[e.filename].append(e)
    by_sha = {e.sha256: e for e in entries}
    sizes = {e.size for e in entries}
    images, _, outside = _walk_gc10(root)
    found = [(path, folder_class) for path, folder_class, _ in images] + [(path, None) for path in outside]
    return [_check_file(path, folder_class, by_name, by_sha, sizes) for path, folder_class in sorted(found)]


def _check_file(path: Path, folder_class: str | None, by_name: dict[str, list[ManifestEntry]],
                by_sha: dict[str, ManifestEntry], sizes: set[int]) -> FileCheck:
    named = by_name.get(path.name, [])
    same_folder = [e for e in named if gc10_class(e.class_dir) == folder_class]
    expected = (same_folder or named or [None])[0]
    digest = file_sha256(path) if path.stat().st_size in sizes else None
    if digest is not None:
        if any(e.sha256 == digest for e in named):
            return FileCheck(path, "match", next(e for e in named if e.sha256 == digest))
        if digest in by_sha:
            return FileCheck(path, "renamed", by_sha[digest])
    return FileCheck(path, "changed" if expected else "not_in_release", expected)




# --- annotated crops -----------------------------------------------------------------------------------------


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


# --- X-SDD ---------------------------------------------------------------------------------------------------


class XsddImage(NamedTuple):
    path: Path
    xsdd_class: str
    neu_class: str | None  # the NEU class a correct answer names; None: no NEU counterpart


def xsdd_class(name: str) -> str | None:
    """X-SDD class of a folder name ('slag inclusion', 'slag_inclusion'), else None."""
    cleaned = _clean(name)
    return cleaned if cleaned in XSDD_CLASSES else None


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


# --- summaries -----------------------------------------------------------------------------------------------


def _conflict_kind(frame: Gc10Frame) -> str:
    if frame.unlabeled:
        return "unlabeled"
    if not frame.conflict:
        return "agree"
    if frame.reason.startswith("folder "):
        return "folder_box_disagree"
    return frame.reason.split(":")[0].replace(" ", "_")  # no_xml, bad_xml, xml_has_no_boxes


def gc10_summary(frames: Iterable[Gc10Frame]) -> dict:
    """Counts for a report: frames, folders, labels, boxes per class, conflicts by kind, NEU roles."""
    frames = list(frames)
    labelled = [f for f in frames if not f.unlabeled]
    boxes = Counter(b.label for f in labelled for b in f.boxes)
    return {
        "frames": len(frames),
        "labelled": len(labelled),
        "unlabeled": len(frames) - len(labelled),
        "per_folder": dict(sorted(Counter(f.folder_class for f in labelled).items())),
        "per_label": dict(sorted(Counter(f.label for f in labelled).items())),
        "boxes_per_class": {c: boxes.get(c, 0) for c in GC10_CLASSES},
        "boxes": sum(boxes.values()),
        "conflicts": dict(sorted(Counter(_conflict_kind(f) for f in frames).items())),
        "mixed_class_frames": sum(len(set(f.box_labels)) > 1 for f in labelled),
        "frame_roles": dict(sorted(Counter(gc10_role(f.label) for f in labelled).items())),
        "box_roles": dict(sorted(Counter(gc10_role(b.label) for f in labelled for b in f.boxes).items())),
        "conflict_examples": [f"{f.path}: {f.reason}" for f in labelled if f.conflict][:20],
    }


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
