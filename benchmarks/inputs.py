"""Fixed benchmark inputs, the same for every format and every run: images and a short video of them.

Where the run's split manifest and its dataset are present, ``count`` *test* images of the manifest are used
(the first of each class, then the second of each class, ... in manifest order; their sha256 checked);
otherwise deterministic NEU-like textures (200×200 grayscale) from
``np.random.default_rng(0)``. Workers get them through an ``.npz`` file, never by re-reading the dataset.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_runtime.fileio import file_sha256
from edge_runtime.preprocessing import read_image, to_bgr8

log = logging.getLogger(__name__)

SYNTHETIC_SIZE = 200  # NEU images are 200×200
VIDEO_FPS = 25.0


@dataclass
class FixedInputs:
    images: list[np.ndarray]
    description: str
    files: list[str]  # dataset-relative paths, empty for synthetic images


def synthetic_images(count: int, size: int = SYNTHETIC_SIZE) -> list[np.ndarray]:
    """Grayscale steel-like textures (stripes, blotches, noise), identical on every machine and run."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    images = []
    for i in range(count):
        angle = rng.uniform(0, np.pi)
        stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * rng.uniform(0.05, 0.4)) * rng.uniform(5, 30)
        blotches = cv2.GaussianBlur(rng.normal(0, 40, (size, size)).astype(np.float32), (0, 0), rng.uniform(2, 8))
        noise = rng.normal(0, 6, (size, size))
        image = rng.uniform(70, 170) + stripes + blotches + noise
        images.append(np.clip(image, 0, 255).astype(np.uint8))
    return images


def manifest_test_images(run_dir: Path, count: int) -> FixedInputs | None:
    """``count`` test images of the run's split manifest, class by class, or None where they are not available."""
    manifest, metadata = run_dir / "split_manifest.csv", run_dir / "metadata.json"
    if not (manifest.is_file() and metadata.is_file()):
        return None
    try:
        root = Path(json.loads(metadata.read_text())["data_root"])
        with open(manifest, newline="") as handle:
            rows = _round_robin([r for r in csv.DictReader(handle) if r.get("split") == "test"])[:count]
        if len(rows) < count:
            return None
        images = []
        for row in rows:
            path = root / row["path"]
            if not path.is_file() or file_sha256(path) != row["sha256"]:
                log.warning("%s is missing or changed since training; using synthetic benchmark images", path)
                return None
            images.append(read_image(path))
    except (OSError, KeyError, ValueError) as exc:
        log.warning("cannot read the test images of %s (%s); using synthetic benchmark images", run_dir, exc)
        return None
    return FixedInputs(images, f"{count} test-split images of {manifest} (under {root}), taken class by class "
                       "in manifest order", [r["path"] for r in rows])


def _round_robin(rows: list[dict]) -> list[dict]:
    """Manifest rows reordered first of each class, second of each class, ... (manifest order kept)."""
    by_class: dict[str, list[dict]] = {}
    for row in rows:
        by_class.setdefault(row.get("class", ""), []).append(row)
    columns = list(by_class.values())
    return [column[i] for i in range(max(map(len, columns), default=0)) for column in columns if i < len(column)]


def fixed_inputs(run_dir: Path | None, count: int) -> FixedInputs:
    found = manifest_test_images(run_dir, count) if run_dir is not None else None
    if found is not None:
        return found
    return FixedInputs(synthetic_images(count), f"{count} synthetic {SYNTHETIC_SIZE}×{SYNTHETIC_SIZE} grayscale "
                       "textures (np.random.default_rng(0))", [])


def save_images(images: list[np.ndarray], path: Path) -> Path:
    np.savez(path, **{f"image_{i:04d}": image for i, image in enumerate(images)})
    return path


def load_images(path: str | Path) -> list[np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return [data[key] for key in sorted(data.files)]


def write_video(images: list[np.ndarray], frames: int, path: Path) -> Path | None:
    """An MJPG .avi of ``frames`` frames cycling through ``images`` (resized to the first one's size)."""
    height, width = images[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), VIDEO_FPS, (width, height))
    if not writer.isOpened():
        log.warning("OpenCV cannot write an MJPG video here; the end-to-end column is left out")
        return None
    try:
        for i in range(frames):
            frame = to_bgr8(images[i % len(images)])
            if frame.shape[:2] != (height, width):
                frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
            writer.write(frame)
    finally:
        writer.release()
    return path
