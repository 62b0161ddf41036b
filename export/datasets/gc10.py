"""GC10-DET, a cross-plant test set for the NEU classifier: its frames, their xml and labels (numpy/OpenCV only).

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

How each class counts against NEU: :mod:`export.datasets.classes`; annotated crops: :mod:`export.datasets.crops`.
:func:`verify_gc10` compares a local copy with the release's checksums (``full-set-sha256.tsv``).
"""

from __future__ import annotations

import csv
import logging
import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from edge_runtime.fileio import file_sha256
from edge_runtime.preprocessing import is_image_file
from export.datasets.classes import GC10_CLASSES, GC10_TO_NEU, gc10_class, gc10_number, gc10_role
from export.datasets.voc import VocAnnotation, VocBox, VocError, read_voc

log = logging.getLogger(__name__)

GC10_MANIFEST = "full-set-sha256.tsv"
ANNOTATION_DIRS = ("annotations", "label", "labels", "lable")  # compared lower-case; "lable" is a Kaggle typo
UNLABELED_DIRS = ("unlabeled", "unlabelled")


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


# --- summary ---------------------------------------------------------------------------------------------------


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
