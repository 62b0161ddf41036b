"""Class tables of the cross-plant test sets (GC10-DET, X-SDD) and how each class counts against NEU.

**GC10-DET.** Only ``inclusion`` has a NEU counterpart (:data:`GC10_TO_NEU`). Eight classes have none and are
the "unknown defect" examples (:data:`GC10_UNKNOWN`). ``rolled_pit`` is neither: NEU has no rolled-in pits, but
"pitted_surface" is close enough that calling either answer wrong would be arbitrary, so it is reported and
never scored (:data:`GC10_REPORT_ONLY`).

**X-SDD.** ``slag_inclusion`` -> inclusion, ``surface_scratch`` -> scratches (:data:`XSDD_TO_NEU`); the other
five classes have no NEU counterpart. The two oxide-scale classes are only loosely NEU's rolled-in_scale, so
they stay unmapped and are reported (:data:`XSDD_LOOSE`).
"""

from __future__ import annotations

import re

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

XSDD_CLASSES = ("slag_inclusion", "surface_scratch", "oxide_scale_of_plate_system",
                "oxide_scale_of_temperature_system", "red_iron", "iron_sheet_ash", "finishing_roll_printing")
XSDD_TO_NEU = {"slag_inclusion": "inclusion", "surface_scratch": "scratches"}
XSDD_LOOSE = {"oxide_scale_of_plate_system": "rolled-in_scale", "oxide_scale_of_temperature_system": "rolled-in_scale"}
XSDD_UNKNOWN = tuple(c for c in XSDD_CLASSES if c not in XSDD_TO_NEU)


def clean_name(name: str) -> str:
    """A class or folder name compared case- and separator-blind: 'Waist folding' -> 'waist_folding'."""
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def gc10_class(name: str | int) -> str | None:
    """English GC10 class of a box label, folder name or class number ('7_yiwu', 'waist folding', '10', 7)."""
    cleaned = clean_name(str(name))
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


def xsdd_class(name: str) -> str | None:
    """X-SDD class of a folder name ('slag inclusion', 'slag_inclusion'), else None."""
    cleaned = clean_name(name)
    return cleaned if cleaned in XSDD_CLASSES else None
