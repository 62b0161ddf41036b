"""Deterministic stratified splits and the split manifest that every later step reads.

The manifest (``split_manifest.csv``) lists each image's path relative to the dataset root, its class, its
split (train/val/test) and its sha256. Export, evaluation and benchmarks read it to use exactly the same
validation and test images, and refuse to go on if a listed file has changed.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_runtime.fileio import file_sha256
from train.data import Dataset

MANIFEST_NAME = "split_manifest.csv"
SPLITS = ("train", "val", "test")
_FIELDS = ("path", "class", "split", "sha256")


class SplitManifestError(ValueError):
    """The split manifest is missing, malformed, or no longer matches the files on disk."""


@dataclass(frozen=True)
class ManifestRow:
    path: str  # relative to the dataset root, POSIX separators
    label: str
    split: str
    sha256: str


def _class_rng(seed: int, label: str) -> np.random.Generator:
    # Stable across Python runs (no hash randomisation) and independent of the other classes.
    label_key = int.from_bytes(hashlib.sha256(label.encode()).digest()[:4], "little")
    return np.random.default_rng([seed, label_key])


def _by_class(dataset: Dataset) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {label: [] for label in dataset.classes}
    for image in dataset.images:
        groups[image.label].append(dataset.relative(image.path))
    return groups


def _permuted(dataset: Dataset, seed: int) -> dict[str, list[str]]:
    return {
        label: [paths[i] for i in _class_rng(seed, label).permutation(len(paths))]
        for label, paths in _by_class(dataset).items()
    }


def stratified_split(
    dataset: Dataset, hashes: dict[Path, str], val_per_class: int = 12, test_per_class: int = 12, seed: int = 0
) -> list[ManifestRow]:
    """Per class: ``test_per_class`` test, ``val_per_class`` validation, the rest training (NEU: 276/12/12).

    Byte-identical files (NEU has one such pair) always land in the same split, so none leaks into test.
    """
    rows = []
    for label, paths in _permuted(dataset, seed).items():
        if len(paths) < val_per_class + test_per_class + 1:
            raise SplitManifestError(
                f"class '{label}' has {len(paths)} images; need more than {val_per_class + test_per_class} "
                "for the validation and test splits (lower --val-per-class/--test-per-class)"
            )
        counts = {"test": 0, "val": 0}

        def next_split() -> str:
            split = "test" if counts["test"] < test_per_class else "val" if counts["val"] < val_per_class else "train"
            counts[split] = counts.get(split, 0) + 1
            return split

        rows += _assign(dataset, hashes, label, paths, lambda _i: next_split())
    return rows


def kfold_splits(
    dataset: Dataset, hashes: dict[Path, str], folds: int, val_per_class: int = 12, seed: int = 0
) -> list[list[ManifestRow]]:
    """Stratified K folds: fold k tests on the k-th chunk of every class and validates on the next images."""
    if folds < 2:
        raise ValueError("--folds needs at least 2")
    permuted = _permuted(dataset, seed)
    result = []
    for k in range(folds):
        rows = []
        for label, paths in permuted.items():
            chunks = np.array_split(np.arange(len(paths)), folds)
            test = set(chunks[k].tolist())
            rest = [i for i in range(len(paths)) if i not in test]
            if len(rest) <= val_per_class:
                raise SplitManifestError(f"class '{label}' has too few images for {folds} folds")
            val = set(rest[:val_per_class])
            rows += _assign(dataset, hashes, label, paths, lambda i: "test" if i in test else "val" if i in val else "train")
        result.append(rows)
    return result


def _assign(dataset: Dataset, hashes: dict[Path, str], label: str, paths: list[str], split_of) -> list[ManifestRow]:
    """Rows for one class in permutation order; a file identical to an earlier one follows it into its split."""
    seen: dict[str, str] = {}
    rows = []
    for i, rel in enumerate(paths):
        digest = hashes[dataset.root / rel]
        split = seen[digest] if digest in seen else split_of(i)
        seen.setdefault(digest, split)
        rows.append(ManifestRow(rel, label, split, digest))
    return rows


def write_manifest(path: Path, rows: list[ManifestRow]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(_FIELDS)
        for row in rows:
            writer.writerow((row.path, row.label, row.split, row.sha256))


def read_manifest(path: Path) -> list[ManifestRow]:
    path = Path(path)
    if not path.is_file():
        raise SplitManifestError(f"split manifest '{path}' not found; it is written by 'edge-train' into the run folder")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != _FIELDS:
            raise SplitManifestError(f"'{path}' is not a split manifest (columns {reader.fieldnames}, expected {_FIELDS})")
        rows = [ManifestRow(r["path"], r["class"], r["split"], r["sha256"]) for r in reader]
    bad = sorted({r.split for r in rows} - set(SPLITS))
    if bad:
        raise SplitManifestError(f"'{path}' has unknown split names {bad}")
    return rows


def verify_files(rows: list[ManifestRow], data_root: Path, splits: tuple[str, ...] = SPLITS) -> None:
    """Raise :class:`SplitManifestError` if any listed file (of ``splits``) is missing or its bytes changed."""
    problems = []
    for row in rows:
        if row.split not in splits:
            continue
        file = Path(data_root) / row.path
        if not file.is_file():
            problems.append(f"{file}: missing")
        elif file_sha256(file) != row.sha256:
            problems.append(f"{file}: contents changed (sha256 differs from the manifest)")
    if problems:
        shown = "\n  ".join(problems[:10]) + (f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise SplitManifestError(
            f"{len(problems)} file(s) listed in the split manifest do not match the data under '{data_root}':\n  "
            f"{shown}\nRestore the original files, or train a new run on the changed data."
        )


def rows_of(rows: list[ManifestRow], split: str) -> list[ManifestRow]:
    return [row for row in rows if row.split == split]
