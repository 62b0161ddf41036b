"""The split is deterministic and stratified; its manifest detects changed files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from train.data import Dataset, LabelledImage, check_images, discover
from train.split import (
    SplitManifestError,
    kfold_splits,
    read_manifest,
    rows_of,
    stratified_split,
    verify_files,
    write_manifest,
)

ROOT = Path("/data")
CLASSES = ["a", "b", "c"]


def fake_dataset(per_class: int = 300, duplicate_pairs: int = 0) -> tuple[Dataset, dict]:
    """A dataset listing without files: stratified_split only needs paths, labels and hashes."""
    images = [LabelledImage(ROOT / c / f"{c}_{i}.jpg", c) for c in CLASSES for i in range(per_class)]
    hashes = {im.path: f"{im.path.name:0>64}" for im in images}
    for i in range(duplicate_pairs):  # make a_{2i} and a_{2i+1} byte-identical
        hashes[ROOT / "a" / f"a_{2 * i + 1}.jpg"] = hashes[ROOT / "a" / f"a_{2 * i}.jpg"]
    return Dataset(ROOT, "class-folders", CLASSES, images), hashes


def test_reference_split_is_276_12_12_per_class():
    rows = stratified_split(*fake_dataset())
    counts = Counter((r.label, r.split) for r in rows)
    for c in CLASSES:
        assert (counts[(c, "train")], counts[(c, "val")], counts[(c, "test")]) == (276, 12, 12)


def test_same_seed_same_split_other_seed_other_split():
    assert stratified_split(*fake_dataset(), seed=3) == stratified_split(*fake_dataset(), seed=3)
    a = {r.path for r in rows_of(stratified_split(*fake_dataset(), seed=3), "test")}
    b = {r.path for r in rows_of(stratified_split(*fake_dataset(), seed=4), "test")}
    assert a != b


def test_split_of_a_class_does_not_depend_on_other_classes():
    ds, hashes = fake_dataset()
    rows = stratified_split(ds, hashes)
    smaller = Dataset(ROOT, "class-folders", ["a"], [im for im in ds.images if im.label == "a"])
    assert [r for r in rows if r.label == "a"] == stratified_split(smaller, hashes)


def test_identical_files_never_straddle_splits():
    rows = stratified_split(*fake_dataset(duplicate_pairs=100))
    by_hash: dict[str, set] = {}
    for r in rows:
        by_hash.setdefault(r.sha256, set()).add(r.split)
    assert all(len(splits) == 1 for splits in by_hash.values())


def test_too_small_classes_are_refused():
    with pytest.raises(SplitManifestError, match="class 'a' has 20 images"):
        stratified_split(*fake_dataset(per_class=20))


def test_kfold_tests_every_image_exactly_once():
    folds = kfold_splits(*fake_dataset(per_class=50), folds=5, val_per_class=5)
    tested = Counter(r.path for rows in folds for r in rows_of(rows, "test"))
    assert len(tested) == 150 and set(tested.values()) == {1}
    for rows in folds:
        assert Counter(r.split for r in rows) == {"train": 105, "val": 15, "test": 30}


def test_manifest_round_trip(tmp_path: Path):
    rows = stratified_split(*fake_dataset(per_class=30), val_per_class=2, test_per_class=2)
    write_manifest(tmp_path / "m.csv", rows)
    assert read_manifest(tmp_path / "m.csv") == rows
    assert (tmp_path / "m.csv").read_text().splitlines()[0] == "path,class,split,sha256"


def test_changed_or_missing_files_are_refused_by_name(tiny_dataset: Path):
    ds = discover(tiny_dataset)
    rows = stratified_split(ds, check_images(ds, progress=False), 1, 1)
    verify_files(rows, tiny_dataset)  # untouched: passes
    test_file = tiny_dataset / rows_of(rows, "test")[0].path
    test_file.write_bytes(test_file.read_bytes() + b"\0")
    (tiny_dataset / rows_of(rows, "val")[0].path).unlink()
    with pytest.raises(SplitManifestError) as info:
        verify_files(rows, tiny_dataset)
    message = str(info.value)
    assert "2 file(s)" in message and test_file.name in message and "missing" in message


def test_non_manifest_csv_is_refused(tmp_path: Path):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(SplitManifestError, match="not a split manifest"):
        read_manifest(tmp_path / "x.csv")
