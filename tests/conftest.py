"""Shared fixtures: tiny generated datasets, the optional ../shared data, one tiny trained run."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGE_SHARED_DIR", REPO.parent / "shared"))
NEU = SHARED / "datasets" / "neu"
GC10 = SHARED / "datasets" / "gc10"
WEIGHTS = SHARED / "weights" / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
NEU_CLASSES = ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]

needs_neu = pytest.mark.skipif(not NEU.is_dir(), reason=f"NEU data not found at {NEU}")


def synthetic_image(class_index: int, i: int, size: int = 40) -> np.ndarray:
    """A grayscale texture whose brightness and stripe direction depend on the class."""
    rng = np.random.default_rng([class_index, i])
    yy, xx = np.mgrid[0:size, 0:size]
    stripes = np.sin((xx if class_index % 2 else yy) * (0.3 + 0.2 * class_index)) * 40
    noise = rng.normal(0, 8, (size, size))
    return np.clip(60 + 25 * class_index + stripes + noise, 0, 255).astype(np.uint8)


def write_class_folders(root: Path, per_class: int = 6, classes=NEU_CLASSES, size: int = 40) -> Path:
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            cv2.imwrite(str(root / name / f"{name}_{i + 1}.jpg"), synthetic_image(c, i, size))
    return root


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    return write_class_folders(tmp_path / "tiny")


TINY_ARGS = [
    "--weights", "none", "--input-size", "32", "--epochs-stage1", "1", "--epochs-stage2", "1",
    "--val-per-class", "1", "--test-per-class", "1", "--aug-copies", "2", "--batch-size", "8", "--no-progress",
]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """One tiny end-to-end training run (random init, 32×32, one epoch per stage), shared by the tests."""
    from train.cli import main

    base = tmp_path_factory.mktemp("trained")
    data = write_class_folders(base / "data")
    assert main(["--data", str(data), "--runs", str(base / "runs"), "--name", "tiny", *TINY_ARGS]) == 0
    return base / "runs" / "tiny"
