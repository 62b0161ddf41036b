"""Finding labelled images on disk, whatever the dataset layout, and checking that each one decodes.

Supported layouts of ``--data DIR``:

* ``class-folders``: ``DIR/<class>/*.jpg`` (as ``../shared/datasets/neu``);
* ``neu-flat``: ``DIR/IMAGES/crazing_1.jpg`` (or the images directly in ``DIR``), class from the file name;
* ``kaggle``: ``DIR/train/`` and ``DIR/validation/`` (or ``valid/``), each with class folders, optionally
  under ``images/``. Both parts are pooled; the project makes its own split.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from edge_runtime.errors import ImageReadError
from edge_runtime.fileio import file_sha256
from edge_runtime.preprocessing import is_image_file, read_image, to_bgr8

log = logging.getLogger(__name__)

_FLAT_NAME = re.compile(r"^(?P<label>.+?)_\d+$")
_KAGGLE_PARTS = ("train", "validation", "valid", "val", "test")


class DatasetError(ValueError):
    """The dataset folder cannot be used as given."""


@dataclass(frozen=True)
class LabelledImage:
    path: Path  # absolute
    label: str


@dataclass
class Dataset:
    root: Path
    layout: str
    classes: list[str]
    images: list[LabelledImage]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def count_per_class(self) -> dict[str, int]:
        counts = {name: 0 for name in self.classes}
        for image in self.images:
            counts[image.label] += 1
        return counts


def normalize_label(name: str) -> str:
    """'Rolled-in Scale' -> 'rolled-in_scale': one spelling for folder names and file-name prefixes."""
    return re.sub(r"\s+", "_", name.strip()).lower()


def _images_in(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_file() and is_image_file(p)), key=_natural_key)


def _natural_key(path: Path) -> list[object]:
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", path.name.lower())]


def _class_folders(folder: Path) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images = _images_in(sub)
        if images:
            found.setdefault(normalize_label(sub.name), []).extend(images)
    return found


def _flat(folder: Path) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for image in _images_in(folder):
        match = _FLAT_NAME.match(image.stem)
        if not match:
            raise DatasetError(
                f"'{image}' does not follow the flat NEU naming '<class>_<number>.<ext>'; "
                "use one sub-folder per class instead"
            )
        found.setdefault(normalize_label(match["label"]), []).append(image)
    return found


def _detect(root: Path) -> tuple[str, dict[str, list[Path]]]:
    subdirs = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    kaggle_parts = [subdirs[name] for name in _KAGGLE_PARTS if name in subdirs]
    if "train" in subdirs and len(kaggle_parts) >= 2:
        found: dict[str, list[Path]] = {}
        for part in kaggle_parts:
            inner = next((p for p in part.iterdir() if p.is_dir() and p.name.lower() == "images"), part)
            for label, images in _class_folders(inner).items():
                found.setdefault(label, []).extend(images)
        return "kaggle", found
    if "images" in subdirs and _images_in(subdirs["images"]):
        return "neu-flat", _flat(subdirs["images"])
    by_folder = _class_folders(root)
    if by_folder:
        return "class-folders", by_folder
    if _images_in(root):
        return "neu-flat", _flat(root)
    raise DatasetError(
        f"no images found in '{root}'; expected one sub-folder per class, NEU's IMAGES/<class>_<n>.jpg, "
        "or Kaggle's train/ + validation/ folders"
    )


def discover(root: str | Path, classes: list[str] | None = None) -> Dataset:
    """List the labelled images under ``root``; class order is sorted names unless ``classes`` is given."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DatasetError(f"dataset folder '{root}' does not exist; pass --data with the dataset's root folder")
    layout, found = _detect(root)
    if classes is None:
        classes = sorted(found)
    else:
        classes = [normalize_label(c) for c in classes]
        missing = [c for c in classes if c not in found]
        extra = sorted(set(found) - set(classes))
        if missing:
            raise DatasetError(f"classes {missing} have no images in '{root}' (found {sorted(found)})")
        if extra:
            log.warning("ignoring folders/classes not in --classes: %s", extra)
    images = [LabelledImage(path, label) for label in classes for path in found[label]]
    log.info("found %d images in %d classes (%s layout) under %s", len(images), len(classes), layout, root)
    return Dataset(root=root, layout=layout, classes=list(classes), images=images)


def check_images(dataset: Dataset, skip_bad: bool = False, progress: bool = True) -> dict[Path, str]:
    """Hash and decode every image once. Returns {path: sha256} for the good ones.

    A bad image raises :class:`ImageReadError` naming it, unless ``skip_bad``: then it is dropped from
    ``dataset.images`` and recorded in ``dataset.skipped``.
    """
    from tqdm.auto import tqdm

    hashes: dict[Path, str] = {}
    kept: list[LabelledImage] = []
    for image in tqdm(dataset.images, desc="checking images", unit="img", disable=not progress):
        try:
            to_bgr8(read_image(image.path))
        except (ImageReadError, ValueError) as exc:
            if not skip_bad:
                raise ImageReadError(
                    image.path, f"{getattr(exc, 'reason', exc)}. Remove or replace it, or pass --skip-bad"
                ) from exc
            log.warning("skipping bad image: %s", exc)
            dataset.skipped.append((dataset.relative(image.path), str(getattr(exc, "reason", exc))))
            continue
        hashes[image.path] = file_sha256(image.path)
        kept.append(image)
    dataset.images = kept
    if dataset.skipped:
        log.warning("skipped %d bad image(s)", len(dataset.skipped))
    return hashes
