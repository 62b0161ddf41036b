"""Accuracy checks of exported artifacts through the device code path (edge_runtime), against the float model.

Evaluation sets:

* ``neu``: the run's validation + test images, from its split manifest (verified by sha256);
* ``gc10_inclusion``: the reference protocol, every image of GC10-DET's ``inclusion`` folder, expected to be
  called inclusion (only one such image exists in ../shared; a user's full copy has 216);
* ``xsdd``: X-SDD, another hot-rolling plant: slag_inclusion -> inclusion, surface_scratch -> scratches.

Each artifact is compared with the float reference on every image: accuracy per set (share called the
expected class), its drop in percentage points, top-1 agreement and the largest probability difference.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_runtime.errors import ImageReadError
from edge_runtime.preprocessing import PreprocessConfig, is_image_file, normalize, prepare_pixels, read_image
from train.data import normalize_label
from train.split import rows_of

log = logging.getLogger(__name__)

GC10_MAP = {"inclusion": "inclusion"}
XSDD_MAP = {"slag_inclusion": "inclusion", "surface_scratch": "scratches"}
CROSS_PLANT_GROUPS = ("gc10_inclusion", "xsdd")


@dataclass(frozen=True)
class EvalImage:
    path: Path
    group: str
    expected: str | None


@dataclass
class EvalData:
    """Evaluation images decoded and resized once (uint8 BGR at the model size), shared by every artifact."""

    items: list[EvalImage]
    pixels: np.ndarray
    errors: list[tuple[str, str]] = field(default_factory=list)

    @property
    def groups(self) -> list[str]:
        return list(dict.fromkeys(i.group for i in self.items))


def mapped_folder_images(root: Path, mapping: dict[str, str], group: str) -> list[EvalImage]:
    """Images of the class folders of ``root`` named in ``mapping`` (folder name -> expected NEU class)."""
    images = []
    for folder, expected in mapping.items():
        directory = Path(root) / folder
        if not directory.is_dir():
            log.warning("%s: folder %s not found, skipped", group, directory)
            continue
        images += [EvalImage(p, group, expected) for p in sorted(directory.iterdir()) if is_image_file(p)]
    return images


def labelled_folder_images(root: Path, classes: list[str], mapping: dict[str, str] | None = None) -> list[EvalImage]:
    """Every class folder of ``root``; the expected class is the folder name (or its ``mapping`` entry)."""
    mapping = {normalize_label(k): v for k, v in (mapping or {}).items()}
    images = []
    for directory in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        label = normalize_label(directory.name)
        expected = mapping.get(label, label if label in classes else None)
        images += [EvalImage(p, directory.name, expected) for p in sorted(directory.rglob("*")) if is_image_file(p)]
    if not images and any(is_image_file(p) for p in Path(root).iterdir()):
        images = [EvalImage(p, Path(root).name, None) for p in sorted(Path(root).iterdir()) if is_image_file(p)]
    return images


def standard_eval_images(run, neu_root: Path | None, gc10: Path | None, xsdd: Path | None) -> list[EvalImage]:
    root, rows = run.manifest(neu_root)
    items = [EvalImage(root / r.path, "neu", r.label) for split in ("val", "test") for r in rows_of(rows, split)]
    if gc10:
        items += mapped_folder_images(gc10, GC10_MAP, "gc10_inclusion")
    if xsdd:
        items += mapped_folder_images(xsdd, XSDD_MAP, "xsdd")
    return items


def load_eval_data(items: list[EvalImage], preprocess: PreprocessConfig, progress: bool = True) -> EvalData:
    from tqdm.auto import tqdm

    kept, pixels, errors = [], [], []
    for item in tqdm(items, desc="decoding evaluation images", unit="img", disable=not progress):
        try:
            pixels.append(prepare_pixels(read_image(item.path), preprocess))
            kept.append(item)
        except (ImageReadError, ValueError) as exc:
            log.warning("%s", exc)
            errors.append((str(item.path), str(exc)))
    height, width = preprocess.input_size
    stacked = np.stack(pixels) if pixels else np.zeros((0, height, width, 3), np.uint8)
    return EvalData(kept, stacked, errors)


def keras_probabilities(model, data: EvalData, preprocess: PreprocessConfig, batch: int = 16,
                        progress: bool = True) -> np.ndarray:
    """The float reference: the Keras model on the same pixels, normalised by the shared function."""
    from tqdm.auto import tqdm

    out = []
    for start in tqdm(range(0, len(data.pixels), batch), desc="keras float reference", unit="batch",
                      disable=not progress):
        x = normalize(data.pixels[start : start + batch], preprocess)
        out.append(np.asarray(model(x, training=False)))
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def artifact_probabilities(path: Path, data: EvalData, threads: int | None = None, batch: int = 16,
                           progress: bool = True, labels: list[str] | None = None) -> tuple[np.ndarray, float, list[str]]:
    """Probabilities from an artifact through ``edge_runtime.Classifier``; also its load time and labels."""
    from tqdm.auto import tqdm

    from edge_runtime.classifier import Classifier

    started = time.perf_counter()
    classifier = Classifier.load(path, threads=threads, labels=labels)
    load_seconds = time.perf_counter() - started
    out = []
    for start in tqdm(range(0, len(data.pixels), batch), desc=Path(path).name, unit="batch", disable=not progress):
        predictions = classifier.predict_batch(list(data.pixels[start : start + batch]))
        out.append(np.stack([p.probabilities for p in predictions]))
    probabilities = np.concatenate(out) if out else np.zeros((0, len(classifier.labels)), np.float32)
    return probabilities, load_seconds, list(classifier.labels)


def score(items: list[EvalImage], classes: list[str], probabilities: np.ndarray) -> dict[str, dict]:
    """Per group: images, how many are called the expected class, and the share."""
    predicted = probabilities.argmax(axis=1)
    result: dict[str, dict] = {}
    for group in dict.fromkeys(i.group for i in items):
        idx = [k for k, i in enumerate(items) if i.group == group and i.expected is not None]
        correct = sum(classes[predicted[k]] == items[k].expected for k in idx)
        result[group] = {"images": len(idx), "correct": int(correct),
                         "accuracy": correct / len(idx) if idx else None}
    return result


def compare(items: list[EvalImage], classes: list[str], reference: np.ndarray, candidate: np.ndarray) -> dict:
    """Accuracy of both, drop in percentage points per group, top-1 agreement and max |Δprobability|."""
    ref_scores = score(items, classes, reference)
    cand_scores = score(items, classes, candidate)
    groups = {}
    for group, cand in cand_scores.items():
        ref = ref_scores[group]
        drop = None
        if cand["accuracy"] is not None and ref["accuracy"] is not None:
            drop = 100.0 * (ref["accuracy"] - cand["accuracy"])
        idx = [k for k, i in enumerate(items) if i.group == group]
        agree = float(np.mean(reference[idx].argmax(1) == candidate[idx].argmax(1))) if idx else None
        groups[group] = {**cand, "float_accuracy": ref["accuracy"], "drop_pp": drop, "agreement": agree}
    agreement = float(np.mean(reference.argmax(1) == candidate.argmax(1))) if len(items) else None
    max_dprob = float(np.abs(reference - candidate).max()) if len(items) else None
    return {"groups": groups, "agreement": agreement, "max_abs_dprob": max_dprob}


@dataclass(frozen=True)
class Gates:
    max_drop_neu_pp: float = 0.5
    max_drop_cross_pp: float = 2.0
    min_agreement_pct: float = 99.0

    def failures(self, comparison: dict) -> list[str]:
        """Human-readable reasons an artifact fails; empty when it passes."""
        reasons = []
        for group, g in comparison["groups"].items():
            if g["drop_pp"] is None:
                continue
            limit = self.max_drop_neu_pp if group == "neu" else self.max_drop_cross_pp
            if g["drop_pp"] > limit + 1e-9:
                reasons.append(f"{group} accuracy {100 * g['accuracy']:.2f} % is {g['drop_pp']:.2f} pp below float "
                               f"({100 * g['float_accuracy']:.2f} %; limit {limit} pp)")
        agreement = comparison["agreement"]
        if agreement is not None and 100 * agreement < self.min_agreement_pct - 1e-9:
            reasons.append(f"top-1 agreement with float {100 * agreement:.2f} % < {self.min_agreement_pct} %")
        return reasons
