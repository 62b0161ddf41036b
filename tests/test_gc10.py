"""GC10-DET protocols: VOC parsing, which xml belongs to which frame, folder/box conflicts, annotated crops."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import SHARED
from export.gc10 import Box, VocError, class_of, read_voc, resolve_label, scan_gc10, square_crop_box

GC10 = SHARED / "datasets" / "gc10"


def write_voc(path: Path, filename: str, folder: str, boxes: list[tuple[str, int, int, int, int]]) -> Path:
    objects = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax><ymax>{d}</ymax>"
        "</bndbox></object>" for n, a, b, c, d in boxes)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<annotation><folder>{folder}</folder><filename>{filename}</filename>"
                    f"<size><width>400</width><height>200</height><depth>1</depth></size>{objects}</annotation>")
    return path


def write_frame(path: Path, value: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((200, 400), value, np.uint8))
    return path


def test_class_names_from_codes_folders_and_both_waist_folding_spellings():
    assert class_of("7_yiwu") == "inclusion" and class_of("7") == "inclusion"
    assert class_of("10_yaozhe") == class_of("10_yaozhed") == "waist_folding"
    assert class_of("inclusion") == "inclusion" and class_of("unlabeled") is None


def test_voc_boxes_are_read_with_english_labels(tmp_path: Path):
    voc = read_voc(write_voc(tmp_path / "a.xml", "a.jpg", "7", [("7_yiwu", 10, 20, 50, 60), ("4_shuiban", 0, 0, 5, 5)]))
    assert voc.filename == "a.jpg" and voc.folder == "7"
    assert voc.boxes == (Box("inclusion", 10, 20, 50, 60), Box("water_spot", 0, 0, 5, 5))


def test_a_box_with_an_unknown_label_is_skipped_and_the_others_kept(tmp_path: Path):
    voc = read_voc(write_voc(tmp_path / "a.xml", "a.jpg", "7", [("d", 1, 1, 5, 5), ("7_yiwu", 10, 20, 50, 60)]))
    assert voc.boxes == (Box("inclusion", 10, 20, 50, 60),)


def test_malformed_xml_names_the_file_and_the_scan_goes_on(tmp_path: Path):
    bad = tmp_path / "annotations" / "b.xml"
    bad.parent.mkdir(parents=True)
    bad.write_text("<annotation><object><name>7_yiwu</name>")  # cut short
    with pytest.raises(VocError, match="b.xml"):
        read_voc(bad)
    write_frame(tmp_path / "inclusion" / "b.jpg")
    write_frame(tmp_path / "inclusion" / "c.jpg")
    write_voc(tmp_path / "annotations" / "c.xml", "c.jpg", "7", [("7_yiwu", 1, 1, 30, 30)])
    scan = scan_gc10(tmp_path)
    assert [f.label for f in scan.frames] == ["inclusion", "inclusion"]
    assert scan.frames[0].note == "no xml" and scan.frames[1].note == ""
    assert len(scan.bad_xml) == 1 and "b.xml" in scan.bad_xml[0][0]


def test_folder_and_boxes_disagree_the_boxes_win_and_the_frame_is_flagged():
    label, note = resolve_label("inclusion", (Box("water_spot", 0, 0, 10, 10), Box("water_spot", 0, 0, 5, 5),
                                              Box("silk_spot", 0, 0, 50, 50)))
    assert label == "water_spot" and "folder inclusion" in note
    # ties on count go to the larger total area
    assert resolve_label("crease", (Box("oil_spot", 0, 0, 5, 5), Box("silk_spot", 0, 0, 50, 50)))[0] == "silk_spot"
    # a box of the folder's class confirms the folder, whatever else is in the frame
    assert resolve_label("welding_line", (Box("punching_hole", 0, 0, 90, 90), Box("welding_line", 0, 0, 5, 5))) == (
        "welding_line", "")


def test_a_file_name_in_two_class_folders_gets_the_xml_whose_folder_matches(tmp_path: Path):
    write_frame(tmp_path / "inclusion" / "same.jpg", 50)
    write_frame(tmp_path / "crease" / "same.jpg", 150)
    write_voc(tmp_path / "annotations" / "a" / "same.xml", "same.jpg", "9", [("9_zhehen", 0, 0, 100, 100)])
    write_voc(tmp_path / "annotations" / "b" / "same.xml", "same.jpg", "7", [("7_yiwu", 0, 0, 10, 10)])
    frames = {f.path.parent.name: f for f in scan_gc10(tmp_path).frames}
    assert frames["inclusion"].label == "inclusion" and frames["inclusion"].boxes[0].label == "inclusion"
    assert frames["crease"].label == "crease" and frames["crease"].boxes[0].label == "crease"


def test_pinyin_folder_names_and_xml_beside_the_image(tmp_path: Path):
    write_frame(tmp_path / "7_yiwu" / "x.jpg")
    write_voc(tmp_path / "7_yiwu" / "x.xml", "x.jpg", "7", [("7_yiwu", 0, 0, 10, 10)])
    (frame,) = scan_gc10(tmp_path).frames
    assert frame.folder_class == "inclusion" and frame.label == "inclusion" and frame.xml.name == "x.xml"


@pytest.mark.parametrize("box, expected", [
    (Box("inclusion", 100, 50, 140, 90), (88, 38, 152, 102)),  # 40 px box -> 64 px minimum, centred
    (Box("inclusion", 0, 0, 100, 40), (0, 0, 125, 125)),  # at the corner: moved inside
    (Box("inclusion", 350, 150, 400, 200), (336, 136, 400, 200)),  # at the far corner
    (Box("inclusion", 0, 0, 400, 200), (0, 0, 400, 200)),  # larger than the frame: the whole frame
])
def test_crops_are_padded_squares_inside_the_frame(box: Box, expected):
    x0, y0, x1, y1 = square_crop_box(box, width=400, height=200)
    assert (x0, y0, x1, y1) == expected
    assert 0 <= x0 < x1 <= 400 and 0 <= y0 < y1 <= 200


@pytest.mark.data
@pytest.mark.skipif(not GC10.is_dir(), reason="../shared/datasets/gc10 not present")
def test_the_gc10_subset_here():
    from export.checks import gc10_eval_images

    scan = scan_gc10(GC10)
    labelled = [f for f in scan.frames if f.folder_class]
    assert len(labelled) == 10 and sum(f.folder_class is None for f in scan.frames) == 7
    inclusion = next(f for f in labelled if f.folder_class == "inclusion")
    assert inclusion.label == "water_spot" and inclusion.conflict
    items = gc10_eval_images(GC10)
    crops = [i for i in items if i.group == "gc10_crops"]
    assert len(crops) == 14 and not any(i.expected for i in crops)  # no inclusion box among the frames here
    assert sum(i.group == "gc10_inclusion" for i in items) == 1
