"""--data accepts the three dataset layouts; class order is fixed; bad images stop or are skipped."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from conftest import NEU_CLASSES, synthetic_image, write_class_folders
from edge_runtime.errors import ImageReadError
from train.data import DatasetError, check_images, discover, normalize_label


def test_class_folder_layout(tiny_dataset: Path):
    ds = discover(tiny_dataset)
    assert ds.layout == "class-folders"
    assert ds.classes == NEU_CLASSES
    assert ds.count_per_class() == {c: 6 for c in NEU_CLASSES}


def test_neu_flat_layout_reads_the_class_from_the_file_name(tmp_path: Path):
    images = tmp_path / "NEU-DET" / "IMAGES"
    images.mkdir(parents=True)
    (tmp_path / "NEU-DET" / "ANNOTATIONS").mkdir()
    for c, name in enumerate(NEU_CLASSES):
        for i in range(3):
            cv2.imwrite(str(images / f"{name}_{i + 1}.jpg"), synthetic_image(c, i))
    ds = discover(tmp_path / "NEU-DET")
    assert ds.layout == "neu-flat"
    assert ds.classes == NEU_CLASSES
    assert ds.count_per_class()["rolled-in_scale"] == 3


def test_kaggle_train_and_validation_folders_are_pooled(tmp_path: Path):
    for part, count in (("train", 4), ("validation", 2)):
        for c, name in enumerate(NEU_CLASSES):
            folder = tmp_path / part / "images" / name
            folder.mkdir(parents=True)
            for i in range(count):
                cv2.imwrite(str(folder / f"{name}_{part}{i}.jpg"), synthetic_image(c, i))
        (tmp_path / part / "annotations").mkdir()
    ds = discover(tmp_path)
    assert ds.layout == "kaggle"
    assert ds.count_per_class() == {c: 6 for c in NEU_CLASSES}


def test_folder_names_are_normalised_and_sorted(tmp_path: Path):
    write_class_folders(tmp_path, per_class=2, classes=["Scratches", "Crazing", "Rolled-in Scale"])
    assert discover(tmp_path).classes == ["crazing", "rolled-in_scale", "scratches"]
    assert normalize_label(" Pitted Surface ") == "pitted_surface"


def test_explicit_class_order_is_kept_and_missing_classes_refused(tiny_dataset: Path):
    order = list(reversed(NEU_CLASSES))
    assert discover(tiny_dataset, classes=order).classes == order
    with pytest.raises(DatasetError, match="welding_line"):
        discover(tiny_dataset, classes=["crazing", "welding_line"])


def test_empty_or_missing_folder_gives_a_clear_error(tmp_path: Path):
    with pytest.raises(DatasetError, match="does not exist"):
        discover(tmp_path / "nope")
    with pytest.raises(DatasetError, match="no images"):
        discover(tmp_path)


def test_corrupt_image_stops_with_its_name(tiny_dataset: Path):
    bad = tiny_dataset / "patches" / "patches_99.jpg"
    bad.write_bytes(b"not a jpeg")
    ds = discover(tiny_dataset)
    with pytest.raises(ImageReadError, match="patches_99.jpg.*--skip-bad"):
        check_images(ds, progress=False)


def test_skip_bad_drops_and_counts_corrupt_images(tiny_dataset: Path):
    (tiny_dataset / "patches" / "patches_99.jpg").write_bytes(b"")
    (tiny_dataset / "crazing" / "crazing_99.png").write_bytes(b"\x89PNG broken")
    ds = discover(tiny_dataset)
    hashes = check_images(ds, skip_bad=True, progress=False)
    assert len(ds.skipped) == 2
    assert {p for p, _ in ds.skipped} == {"patches/patches_99.jpg", "crazing/crazing_99.png"}
    assert len(hashes) == len(ds.images) == 36
