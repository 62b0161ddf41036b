"""Cross-plant data protocols (export/datasets/): GC10 frames, xml matching, labels, crops; X-SDD listing."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import SHARED
from edge_runtime.fileio import file_sha256
from edge_runtime.preprocessing import read_image
from export.datasets import crops as crops_module
from export.datasets.classes import (
    GC10_CLASSES, GC10_CODES, GC10_REPORT_ONLY, GC10_TO_NEU, GC10_UNKNOWN, XSDD_TO_NEU, gc10_class, gc10_role,
)
from export.datasets.crops import crop_pixels, crop_window, gc10_crops, iter_crop_pixels
from export.datasets.gc10 import Gc10Frame, gc10_frames, gc10_release_frames, gc10_summary, resolve_label, verify_gc10
from export.datasets.voc import VocBox, VocError, read_voc
from export.datasets.xsdd import image_format, xsdd_images, xsdd_summary

GC10 = SHARED / "datasets" / "gc10"
XSDD = SHARED / "datasets" / "xsdd"
W, H = 400, 200  # synthetic frames


def write_voc(path: Path, boxes: list[tuple[str, int, int, int, int]], folder: str = "7",
              size: tuple[int, int] = (W, H)) -> Path:
    objects = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax><ymax>{d}</ymax>"
        "</bndbox></object>" for n, a, b, c, d in boxes)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<annotation><folder>{folder}</folder><filename>{path.stem}.jpg</filename><size><width>"
                    f"{size[0]}</width><height>{size[1]}</height><depth>1</depth></size>{objects}</annotation>")
    return path


def write_frame(path: Path, value: int = 100, size: tuple[int, int] = (W, H)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((size[1], size[0]), value, np.uint8))
    return path


def by_name(frames) -> dict[str, Gc10Frame]:
    return {f"{f.path.parent.name}/{f.path.name}": f for f in frames}


# --- class tables --------------------------------------------------------------------------------------------


def test_class_names_from_voc_codes_folder_names_and_numbers():
    assert gc10_class("7_yiwu") == gc10_class("7") == gc10_class(7) == gc10_class("inclusion") == "inclusion"
    assert gc10_class("10_yaozhe") == gc10_class("10_yaozhed") == gc10_class("waist folding") == "waist_folding"
    assert gc10_class("Water_Spot") == "water_spot"
    assert [gc10_class(n) for n in ("unlabeled", "d", "11", "0", "annotations")] == [None] * 5
    assert [gc10_class(code) for code in GC10_CODES] == [*GC10_CLASSES, "waist_folding"]


def test_every_gc10_class_is_scored_unknown_or_report_only_exactly_once():
    groups = [set(GC10_TO_NEU), set(GC10_UNKNOWN), set(GC10_REPORT_ONLY)]
    assert sum(len(g) for g in groups) == len(GC10_CLASSES) and set().union(*groups) == set(GC10_CLASSES)
    assert GC10_TO_NEU == {"inclusion": "inclusion"} and GC10_REPORT_ONLY == ("rolled_pit",)
    assert [gc10_role(c) for c in ("inclusion", "rolled_pit", "crease", None)] == [
        "scored", "report_only", "unknown", "unlabeled"]


# --- VOC files -----------------------------------------------------------------------------------------------


def test_voc_fields_and_boxes_are_read_with_english_labels(tmp_path: Path):
    voc = read_voc(write_voc(tmp_path / "a.xml", [("7_yiwu", 10, 20, 50, 60), ("10_yaozhed", 0, 0, 5, 5)]))
    assert (voc.filename, voc.folder, voc.width, voc.height) == ("a.jpg", 7, W, H)
    assert voc.boxes == (("inclusion", 10, 20, 50, 60), ("waist_folding", 0, 0, 5, 5))
    assert voc.boxes[0].area == 40 * 40 and voc.skipped == ()


def test_a_box_label_that_is_no_gc10_class_is_skipped_and_recorded(tmp_path: Path, caplog):
    path = write_voc(tmp_path / "a.xml", [("2_hanfeng", 3, 83, 400, 154), ("d", 1997, 0, 2048, 50)], folder="all")
    with caplog.at_level(logging.WARNING):
        voc = read_voc(path)
    assert voc.folder is None and [b.label for b in voc.boxes] == ["welding_line"]
    assert voc.skipped == ("box 2: label 'd' is no GC10 class",) and str(path) in caplog.text


@pytest.mark.parametrize("content, reason", [
    ("<annotation><object><name>7_yiwu", "not readable as XML"),
    ("<annotation><object><name>7_yiwu</name></object></annotation>", "no <bndbox>"),
    ("<annotation><object><name>7_yiwu</name><bndbox><xmin>a</xmin><ymin>0</ymin><xmax>5</xmax><ymax>5</ymax>"
     "</bndbox></object></annotation>", "not a number"),
    ("<annotation><object><name>7_yiwu</name><bndbox><xmin>1</xmin></bndbox></object></annotation>", "missing"),
    ("<html></html>", "not a VOC"),
    ("", "not readable as XML"),
])
def test_a_malformed_voc_file_is_refused_naming_the_file(tmp_path: Path, content: str, reason: str):
    path = tmp_path / "broken.xml"
    path.write_text(content)
    with pytest.raises(VocError, match=reason) as caught:
        read_voc(path)
    assert str(path) in str(caught.value) and "fix or remove" in str(caught.value)


def test_a_bad_xml_is_logged_and_recorded_and_the_scan_goes_on(tmp_path: Path, caplog):
    write_frame(tmp_path / "inclusion" / "a.jpg")
    write_frame(tmp_path / "inclusion" / "b.jpg")
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "a.xml").write_text("<annotation><object>")
    write_voc(tmp_path / "annotations" / "b.xml", [("7_yiwu", 10, 10, 60, 60)])
    with caplog.at_level(logging.WARNING):
        frames = by_name(gc10_frames(tmp_path))
    bad = frames["inclusion/a.jpg"]
    assert bad.conflict and bad.reason.startswith("bad xml:") and bad.label == "inclusion" and not bad.boxes
    assert "a.xml" in caplog.text
    good = frames["inclusion/b.jpg"]
    assert not good.conflict and good.box_labels == ("inclusion",) and good.size == (W, H)


# --- which xml, which label ----------------------------------------------------------------------------------


def test_folder_and_box_disagreement_takes_the_most_frequent_box_class_and_is_flagged(tmp_path: Path):
    write_frame(tmp_path / "inclusion" / "f.jpg")
    write_voc(tmp_path / "inclusion" / "f.xml",
              [("4_shuiban", 0, 0, 10, 10), ("4_shuiban", 20, 20, 30, 30), ("6_siban", 0, 0, 200, 200)])
    frame, = gc10_frames(tmp_path)
    assert frame.folder_class == "inclusion" and frame.label == "water_spot" and frame.conflict
    assert "inclusion" in frame.reason and "silk_spot ×1" in frame.reason and "water_spot ×2" in frame.reason
    assert frame.box_labels == ("water_spot", "water_spot", "silk_spot") and frame.neu_label is None


def test_label_resolution_rule():
    box = lambda label, side: VocBox(label, 0, 0, side, side)  # noqa: E731
    # the folder class wins whenever one box has it, even as a minority: no conflict
    assert resolve_label("inclusion", [box("water_spot", 9), box("water_spot", 9), box("inclusion", 1)]) == (
        "inclusion", "")
    # equal counts: the class with the larger total box area
    label, reason = resolve_label("inclusion", [box("silk_spot", 10), box("oil_spot", 30)])
    assert label == "oil_spot" and reason
    # equal counts and areas: the lower class number (oil_spot 5 before silk_spot 6)
    assert resolve_label("crease", [box("silk_spot", 10), box("oil_spot", 10)])[0] == "oil_spot"
    assert resolve_label("crease", []) == ("crease", "")


def test_a_name_in_two_class_folders_gets_the_xml_whose_folder_number_matches(tmp_path: Path):
    write_frame(tmp_path / "inclusion" / "dup.jpg", 50)
    write_frame(tmp_path / "water_spot" / "dup.jpg", 150)
    write_voc(tmp_path / "annotations" / "dup.xml", [("4_shuiban", 5, 5, 50, 50)], folder="4")
    frames = by_name(gc10_frames(tmp_path))
    water = frames["water_spot/dup.jpg"]
    assert water.xml == tmp_path / "annotations" / "dup.xml" and water.label == "water_spot" and not water.conflict
    inclusion = frames["inclusion/dup.jpg"]
    assert inclusion.xml is None and inclusion.label == "inclusion" and inclusion.reason == "no xml"


def test_a_shared_xml_without_a_folder_number_goes_to_the_folder_its_boxes_name(tmp_path: Path):
    write_frame(tmp_path / "inclusion" / "dup.jpg")
    write_frame(tmp_path / "crease" / "dup.jpg")
    write_voc(tmp_path / "annotations" / "dup.xml", [("9_zhehen", 5, 5, 50, 50)], folder="all")
    frames = by_name(gc10_frames(tmp_path))
    assert frames["crease/dup.jpg"].box_labels == ("crease",) and frames["inclusion/dup.jpg"].reason == "no xml"


def test_a_frame_without_xml_keeps_its_folder_label_and_is_flagged(tmp_path: Path):
    write_frame(tmp_path / "oil_spot" / "lonely.jpg")
    frame, = gc10_frames(tmp_path)
    assert (frame.label, frame.conflict, frame.reason, frame.boxes, frame.xml) == ("oil_spot", True, "no xml", (), None)


def test_an_xml_beside_the_image_wins_over_the_annotation_folder(tmp_path: Path):
    write_frame(tmp_path / "crease" / "a.jpg")
    write_voc(tmp_path / "crease" / "a.xml", [("9_zhehen", 1, 1, 9, 9)], folder="9")
    write_voc(tmp_path / "annotations" / "a.xml", [("7_yiwu", 1, 1, 9, 9)], folder="9")
    frame, = gc10_frames(tmp_path)
    assert frame.xml == tmp_path / "crease" / "a.xml" and frame.box_labels == ("crease",)


@pytest.mark.parametrize("class_dirs, label_dir", [
    ({"inclusion": "inclusion", "waist folding": "waist_folding"}, "annotations"),  # this repo's / Kaggle names
    ({"7_yiwu": "inclusion", "10_yaozhe": "waist_folding"}, "label"),  # VOC-code folder names
    ({"7": "inclusion", "10": "waist_folding"}, "Annotations"),  # the authors' numbered folders
    ({"images/images/inclusion": "inclusion", "images/images/waist_folding": "waist_folding"}, "label/label"),
])
def test_both_folder_naming_styles_and_separate_label_folders(tmp_path: Path, class_dirs: dict, label_dir: str):
    for i, (folder, label) in enumerate(class_dirs.items()):
        write_frame(tmp_path / folder / f"img_{i}.jpg")
        code = {"inclusion": "7_yiwu", "waist_folding": "10_yaozhed"}[label]
        write_voc(tmp_path / label_dir / f"img_{i}.xml", [(code, 0, 0, 20, 20)], folder=code.split("_")[0])
    frames = gc10_frames(tmp_path)
    assert sorted((f.folder_class, f.label, f.conflict) for f in frames) == [
        ("inclusion", "inclusion", False), ("waist_folding", "waist_folding", False)]


def test_a_single_class_folder_can_be_scanned_on_its_own(tmp_path: Path):
    write_frame(tmp_path / "inclusion" / "a.jpg")
    write_voc(tmp_path / "inclusion" / "a.xml", [("7_yiwu", 0, 0, 20, 20)])
    frame, = gc10_frames(tmp_path / "inclusion")
    assert frame.label == "inclusion" and frame.neu_label == "inclusion"


def test_unlabeled_frames_have_no_label_and_stray_images_are_ignored(tmp_path: Path):
    write_frame(tmp_path / "unlabeled" / "0014.jpg")
    write_frame(tmp_path / "stray.jpg")
    write_frame(tmp_path / "annotations" / "not_a_frame.jpg")
    frame, = gc10_frames(tmp_path)
    assert frame.unlabeled and frame.label is None and frame.folder_class is None and not frame.conflict


def test_summary_counts_frames_labels_boxes_and_conflicts(tmp_path: Path):
    write_frame(tmp_path / "inclusion" / "a.jpg")
    write_voc(tmp_path / "inclusion" / "a.xml", [("4_shuiban", 0, 0, 9, 9)])
    write_frame(tmp_path / "inclusion" / "b.jpg")
    write_voc(tmp_path / "inclusion" / "b.xml", [("7_yiwu", 0, 0, 9, 9), ("8_yahen", 0, 0, 9, 9)])
    write_frame(tmp_path / "crease" / "c.jpg")
    write_frame(tmp_path / "unlabeled" / "u.jpg")
    summary = gc10_summary(gc10_frames(tmp_path))
    assert (summary["frames"], summary["labelled"], summary["unlabeled"], summary["boxes"]) == (4, 3, 1, 3)
    assert summary["per_folder"] == {"crease": 1, "inclusion": 2}
    assert summary["per_label"] == {"crease": 1, "inclusion": 1, "water_spot": 1}
    assert summary["boxes_per_class"]["inclusion"] == 1 and summary["boxes_per_class"]["rolled_pit"] == 1
    assert summary["conflicts"] == {"agree": 1, "folder_box_disagree": 1, "no_xml": 1, "unlabeled": 1}
    assert summary["mixed_class_frames"] == 1
    assert summary["box_roles"] == {"report_only": 1, "scored": 1, "unknown": 1}


# --- checksums of the release --------------------------------------------------------------------------------


def test_copies_are_verified_against_the_release_checksums(tmp_path: Path):
    original = write_frame(tmp_path / "crease" / "a.jpg", 80)
    moved = write_frame(tmp_path / "inclusion" / "b.jpg", 90)
    reencoded = tmp_path / "crease" / "c.jpg"
    cv2.imwrite(str(reencoded), np.full((H, W), 70, np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 50])
    write_frame(tmp_path / "unlabeled" / "u.jpg", 60)
    moved_sha = file_sha256(moved)
    rows = [(file_sha256(original), original.stat().st_size, "crease", "a.jpg"),
            (moved_sha, moved.stat().st_size, "waist folding", "z.jpg"),
            ("0" * 64, reencoded.stat().st_size, "crease", "c.jpg")]
    (tmp_path / "full-set-sha256.tsv").write_text(
        "sha256\tsize_bytes\tclass_dir\tfilename\n" + "".join("\t".join(map(str, r)) + "\n" for r in rows))
    checks = {c.path.name: c for c in verify_gc10(tmp_path)}
    assert {name: c.status for name, c in checks.items()} == {
        "a.jpg": "match", "b.jpg": "renamed", "c.jpg": "changed", "u.jpg": "not_in_release"}
    assert checks["b.jpg"].release.filename == "z.jpg"
    assert verify_gc10(tmp_path / "crease") is None  # no checksum file there


def test_the_release_table_gives_every_listed_frame_a_label(tmp_path: Path):
    write_voc(tmp_path / "annotations" / "a.xml", [("4_shuiban", 0, 0, 9, 9)], folder="7")
    (tmp_path / "full-set-sha256.tsv").write_text(
        "sha256\tsize_bytes\tclass_dir\tfilename\n" + f"{'1' * 64}\t10\tinclusion\ta.jpg\n"
        f"{'2' * 64}\t10\twaist folding\tb.jpg\n")
    frames = gc10_release_frames(tmp_path)
    assert [(f.folder_class, f.label, f.reason.split(" ")[0]) for f in frames] == [
        ("inclusion", "water_spot", "folder"), ("waist_folding", "waist_folding", "no")]


# --- annotated crops -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("box, expected", [
    (VocBox("inclusion", 160, 60, 240, 140), (150, 50, 250, 150)),  # inside: 80 × 1.25 = 100, centred
    (VocBox("inclusion", 0, 0, 100, 40), (0, 0, 125, 125)),  # at a corner: moved inside
    (VocBox("inclusion", 350, 150, 400, 200), (336, 136, 400, 200)),  # 50 × 1.25 < 64: min side, far corner
    (VocBox("inclusion", 10, 10, 20, 20), (0, 0, 64, 64)),  # small box near the edge: min side, moved inside
    (VocBox("inclusion", 100, 20, 300, 180), (75, -25, 325, 225)),  # 250 > height 200: spans it, padded
    (VocBox("inclusion", 0, 0, 400, 200), (-50, -150, 450, 350)),  # 500 > the frame: centred, padded all round
    (VocBox("inclusion", -50, 0, 450, 200), (-50, -150, 450, 350)),  # box beyond the frame: clipped first
])
def test_crop_windows_are_squares_centred_on_the_box_kept_inside_where_possible(box, expected):
    x0, y0, x1, y1 = crop_window(box, W, H)
    assert (x0, y0, x1, y1) == expected and x1 - x0 == y1 - y0
    if x1 - x0 <= min(W, H):
        assert 0 <= x0 and x1 <= W and 0 <= y0 and y1 <= H


def test_crop_pixels_inside_are_a_view_and_outside_repeat_the_edge():
    image = np.arange(H * W, dtype=np.uint16).reshape(H, W)
    inside = crop_pixels(image, (175, 75, 225, 125))
    assert np.shares_memory(inside, image) and np.array_equal(inside, image[75:125, 175:225])
    padded = crop_pixels(image, (0, -25, 250, 225))
    assert padded.shape == (250, 250) and padded.dtype == np.uint16
    assert np.array_equal(padded[25:225], image[:, :250])
    assert np.array_equal(padded[0], image[0, :250]) and np.array_equal(padded[-1], image[-1, :250])
    color = crop_pixels(np.zeros((10, 20, 3), np.uint8), (-5, -5, 25, 25))
    assert color.shape == (30, 30, 3)


def test_every_box_becomes_a_crop_labelled_with_its_own_class(tmp_path: Path):
    write_frame(tmp_path / "inclusion" / "f.jpg")
    write_voc(tmp_path / "inclusion" / "f.xml", [("4_shuiban", 0, 0, 10, 10), ("7_yiwu", 100, 50, 180, 130)])
    write_frame(tmp_path / "unlabeled" / "u.jpg")
    crops = gc10_crops(gc10_frames(tmp_path), pad=0.5, min_side=32)
    assert [(c.label, c.index, c.frame_label, c.neu_label) for c in crops] == [
        ("water_spot", 0, "inclusion", None), ("inclusion", 1, "inclusion", "inclusion")]
    assert crops[1].read().shape == (120, 120) and crops[0].read().shape == (32, 32)


def test_crops_decode_each_frame_once_and_skip_unreadable_frames(tmp_path: Path, monkeypatch):
    for name in ("a", "b"):
        write_frame(tmp_path / "crease" / f"{name}.jpg")
        write_voc(tmp_path / "crease" / f"{name}.xml", [("9_zhehen", 0, 0, 10, 10), ("9_zhehen", 50, 50, 90, 90)])
    (tmp_path / "crease" / "b.jpg").write_bytes(b"not an image")
    decoded = []
    monkeypatch.setattr(crops_module, "read_image", lambda path: decoded.append(path) or read_image(path))
    errors: list = []
    pixels = list(iter_crop_pixels(gc10_crops(gc10_frames(tmp_path)), errors))
    assert [c.frame.name for c, _ in pixels] == ["a.jpg", "a.jpg"] and [p.shape for _, p in pixels] == [(64, 64)] * 2
    assert [p.name for p in decoded] == ["a.jpg", "b.jpg"]
    assert [p.name for p, _ in errors] == ["b.jpg"] and "b.jpg" in errors[0][1]


def test_a_frame_whose_size_is_not_the_xml_size_is_refused(tmp_path: Path):
    write_frame(tmp_path / "crease" / "a.jpg", size=(200, 100))
    write_voc(tmp_path / "crease" / "a.xml", [("9_zhehen", 0, 0, 10, 10)])
    crop, = gc10_crops(gc10_frames(tmp_path))
    with pytest.raises(ValueError, match="200×100 but its xml says 400×200"):
        crop.read()


def test_bad_crop_settings_are_refused():
    with pytest.raises(ValueError, match="pad"):
        gc10_crops([], pad=-0.1)


# --- X-SDD ---------------------------------------------------------------------------------------------------


def test_xsdd_folders_are_listed_with_their_neu_class(tmp_path: Path):
    gray = np.full((128, 128, 3), 90, np.uint8)
    for folder in ("slag inclusion", "surface_scratch", "red_iron", "oxide_scale_of_plate_system"):
        (tmp_path / folder).mkdir()
        cv2.imwrite(str(tmp_path / folder / "1.jpg"), gray)
    (tmp_path / "red_iron" / "notes.txt").write_text("not an image")
    (tmp_path / "something_else").mkdir()
    cv2.imwrite(str(tmp_path / "something_else" / "x.jpg"), gray)
    images = xsdd_images(tmp_path)
    assert [(i.path.parent.name, i.xsdd_class, i.neu_class) for i in images] == [
        ("oxide_scale_of_plate_system", "oxide_scale_of_plate_system", None),
        ("red_iron", "red_iron", None),
        ("slag inclusion", "slag_inclusion", "inclusion"),
        ("surface_scratch", "surface_scratch", "scratches")]
    summary = xsdd_summary(images)
    assert summary["scored"] == {"inclusion": 1, "scratches": 1} and summary["no_neu_counterpart"] == 2
    assert summary["loosely_related"] == {"rolled-in_scale": 1}
    assert XSDD_TO_NEU == {"slag_inclusion": "inclusion", "surface_scratch": "scratches"}


def test_jpeg_data_named_png_is_still_read_and_reported(tmp_path: Path):
    folder = tmp_path / "finishing_roll_printing"
    folder.mkdir()
    ok, jpeg = cv2.imencode(".jpg", np.full((128, 128, 3), 77, np.uint8))
    (folder / "6143.png").write_bytes(jpeg.tobytes())
    cv2.imwrite(str(folder / "6001.png"), np.full((128, 128, 3), 77, np.uint8))
    images = xsdd_images(tmp_path)
    assert [image_format(i.path) for i in images] == ["png", "jpeg"]
    assert all(read_image(i.path).shape == (128, 128, 3) for i in images)
    assert xsdd_summary(images, check_formats=True)["format_mismatch"] == {
        "finishing_roll_printing: png named, jpeg data": 1}


# --- the real data in ../shared ------------------------------------------------------------------------------


@pytest.mark.data
@pytest.mark.skipif(not GC10.is_dir(), reason=f"GC10 data not found at {GC10}")
def test_the_gc10_subset_here():
    frames = gc10_frames(GC10)
    summary = gc10_summary(frames)
    print("GC10 here:", summary)
    assert (summary["labelled"], summary["unlabeled"]) == (10, 7)
    assert summary["per_folder"] == {c: 1 for c in sorted(GC10_CLASSES)}
    assert summary["boxes_per_class"] == {
        "punching_hole": 2, "welding_line": 3, "crescent_gap": 1, "water_spot": 3, "oil_spot": 1, "silk_spot": 2,
        "inclusion": 0, "rolled_pit": 2, "crease": 1, "waist_folding": 1}
    assert summary["conflicts"] == {"agree": 9, "folder_box_disagree": 1, "unlabeled": 7}
    inclusion, = [f for f in frames if f.folder_class == "inclusion"]
    assert inclusion.label == "water_spot" and inclusion.box_labels == ("water_spot", "water_spot", "silk_spot")
    pixels = list(iter_crop_pixels(gc10_crops(frames)))
    assert len(pixels) == 16 and all(p.shape[0] == p.shape[1] >= 64 for _, p in pixels)
    checks = verify_gc10(GC10)
    assert [c.status for c in checks].count("match") == 10
    assert {c.status for c in checks if c.path.parent.name == "unlabeled"} == {"not_in_release"}


@pytest.mark.data
@pytest.mark.skipif(not (GC10 / "full-set-sha256.tsv").is_file(), reason=f"GC10 checksums not found in {GC10}")
def test_the_full_gc10_release_as_the_annotations_describe_it():
    summary = gc10_summary(gc10_release_frames(GC10))
    print("GC10 release:", {k: v for k, v in summary.items() if k != "conflict_examples"})
    assert summary["frames"] == 2306 and summary["per_folder"]["inclusion"] == 216
    assert summary["boxes_per_class"]["inclusion"] == 344 and summary["per_label"]["inclusion"] == 197
    assert summary["conflicts"] == {"agree": 2207, "folder_box_disagree": 73, "no_xml": 26}


@pytest.mark.data
@pytest.mark.skipif(not XSDD.is_dir(), reason=f"X-SDD data not found at {XSDD}")
def test_the_xsdd_set_here():
    images = xsdd_images(XSDD)
    summary = xsdd_summary(images, check_formats=True)
    print("X-SDD here:", summary)
    assert summary["per_class"] == {
        "finishing_roll_printing": 203, "iron_sheet_ash": 122, "oxide_scale_of_plate_system": 63,
        "oxide_scale_of_temperature_system": 203, "red_iron": 397, "slag_inclusion": 238, "surface_scratch": 134}
    assert summary["scored"] == {"inclusion": 238, "scratches": 134} and summary["no_neu_counterpart"] == 988
    printing = [i.path for i in images if i.xsdd_class == "finishing_roll_printing"]
    assert sum(image_format(p) == "jpeg" for p in printing) == 61
    assert all(read_image(p).shape[:2] == (128, 128) for p in printing)
