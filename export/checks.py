"""Accuracy checks of exported artifacts through the device code path (edge_runtime), against the float model.

Evaluation sets (groups):

* ``neu``: the run's validation + test images, from its split manifest (verified by sha256);
* ``gc10_inclusion``: the reference protocol, every image of GC10-DET's ``inclusion`` folder as a whole frame,
  expected to be called inclusion (the full GC10-DET release has 216 such frames);
* ``gc10_crops`` / ``gc10_frames``: annotated box crops and whole frames, labelled by their VOC boxes
  (export/datasets/); classes without NEU counterpart are expected to be answered unknown;
* ``xsdd``: X-SDD, another hot-rolling plant: slag_inclusion -> inclusion, surface_scratch -> scratches;
  ``xsdd_other``: its five classes without NEU counterpart.

Each quantised artifact is compared with the float reference on every image: accuracy per set (share called
the expected class), its drop in percentage points, top-1 agreement, agreement of the answers (class or
unknown), the unknown score's AUROC and share of confidently wrong cross-plant images, and the probability
differences. A float artifact (fp32, fp16 weights) is a conversion of the same arithmetic, so what can go wrong
with it is systematic (a wrong layout, normalisation or operator), not a rounding error that a few images near
a threshold reveal: it is checked on :func:`conversion_sample` and also held to a bound on its probability
differences (export.gates).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_runtime.backends import default_threads, engine_for
from edge_runtime.errors import ImageReadError
from edge_runtime.polarity import AS_IS
from edge_runtime.preprocessing import PreprocessConfig, is_image_file, prepare_pixels, read_image
from train import embeddings
from train.data import normalize_label
from train.split import rows_of

log = logging.getLogger(__name__)

IN_DOMAIN = "neu"  # the group of the model's own held-out images (validation + test of its split)


@dataclass(frozen=True)
class EvalImage:
    """One evaluation image: a file, or a square ``box`` (x0, y0, x1, y1) of it (GC10 annotated crops).

    ``expected`` is the NEU class it should be called, or None (no NEU counterpart: it should be unknown);
    ``split`` is "val"/"test" for NEU images (the unknown threshold is chosen on "val" only).
    """

    path: Path
    group: str
    expected: str | None
    box: tuple[int, int, int, int] | None = None
    split: str | None = None
    source_class: str | None = None  # the dataset's own class name (for the "called as" tables)

    @property
    def name(self) -> str:
        return f"{self.path}#{','.join(map(str, self.box))}" if self.box else str(self.path)


@dataclass
class EvalData:
    """Evaluation images decoded and resized once (uint8 BGR at the model size), shared by every artifact."""

    items: list[EvalImage]
    pixels: np.ndarray
    errors: list[tuple[str, str]] = field(default_factory=list)

    @property
    def groups(self) -> list[str]:
        return list(dict.fromkeys(i.group for i in self.items))

    def subset(self, indices) -> "EvalData":
        return EvalData([self.items[i] for i in indices], self.pixels[np.asarray(indices, int)], self.errors)


def conversion_sample(items: list[EvalImage], share: float, minimum: int = 64) -> list[int]:
    """Indices of the images a float artifact is checked on: every image of the model's own held-out set and of
    any set of at most ``minimum`` images, and of each larger set a fixed ``share`` of it (at least
    ``minimum``), drawn by the hash of the image's name so that every export and engine checks the same ones."""
    import hashlib

    chosen: list[int] = []
    for group in dict.fromkeys(i.group for i in items):
        members = [k for k, i in enumerate(items) if i.group == group]
        wanted = len(members) if group == IN_DOMAIN or share >= 1 else max(minimum, int(np.ceil(share * len(members))))
        if wanted < len(members):
            members = sorted(members, key=lambda k: hashlib.sha256(items[k].name.encode()).hexdigest())[:wanted]
        chosen += members
    return sorted(chosen)


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
    """NEU val+test; GC10 (reference protocol, annotated crops, whole frames); X-SDD (mapped and other classes)."""
    root, rows = run.manifest(neu_root)
    items = [EvalImage(root / r.path, IN_DOMAIN, r.label, split=split, source_class=r.label)
             for split in ("val", "test") for r in rows_of(rows, split)]
    if gc10:
        items += gc10_eval_images(Path(gc10))
    if xsdd:
        items += xsdd_eval_images(Path(xsdd))
    return items


def gc10_eval_images(root: Path) -> list[EvalImage]:
    """GC10-DET, three protocols (frames, xml matching and labels resolved by export/datasets/):

    * ``gc10_inclusion``: the reference protocol, every image of the ``inclusion`` folder as a whole frame,
      expected inclusion (whatever its boxes say, as the reference counted it);
    * ``gc10_crops``: every annotated box as a padded square crop, labelled by the box: inclusion boxes expected
      inclusion, boxes of classes without NEU counterpart expected unknown (rolled_pit: not scored, left out);
    * ``gc10_frames``: whole frames outside the inclusion folder whose label has no NEU counterpart.
    """
    from export.datasets.classes import GC10_TO_NEU, GC10_UNKNOWN
    from export.datasets.crops import crop_window
    from export.datasets.gc10 import gc10_frames

    frames = gc10_frames(root) if root.is_dir() else []
    items = [EvalImage(f.path, "gc10_inclusion", "inclusion", source_class="inclusion")
             for f in frames if f.folder_class == "inclusion"]
    for frame in frames:
        size = frame.size or (_image_size(frame.path) if frame.boxes else None)
        for box in frame.boxes if size else ():
            if box.label in GC10_TO_NEU or box.label in GC10_UNKNOWN:
                x0, y0, x1, y1 = crop_window(box, *size)
                window = (max(x0, 0), max(y0, 0), min(x1, size[0]), min(y1, size[1]))
                items.append(EvalImage(frame.path, "gc10_crops", GC10_TO_NEU.get(box.label), box=window,
                                       source_class=box.label))
        if frame.folder_class != "inclusion" and frame.label in GC10_UNKNOWN:
            items.append(EvalImage(frame.path, "gc10_frames", None, source_class=frame.label))
    conflicts = [f for f in frames if f.conflict and not f.unlabeled]
    for frame in conflicts:
        log.info("gc10: %s: %s", frame.path.name, frame.reason)
    log.info("gc10: %d frames (%d with folder/box conflicts or no xml), %d crops", len(frames), len(conflicts),
             sum(i.group == "gc10_crops" for i in items))
    return items


def _image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) of an image file whose xml gives no size, by decoding it; None if unreadable."""
    try:
        image = read_image(path)
    except ImageReadError as exc:
        log.warning("%s", exc)
        return None
    return image.shape[1], image.shape[0]


def xsdd_eval_images(root: Path) -> list[EvalImage]:
    """X-SDD: the mapped classes as group ``xsdd`` (scored), the others as ``xsdd_other`` (should be unknown)."""
    from export.datasets.xsdd import xsdd_images

    items = [EvalImage(i.path, "xsdd" if i.neu_class else "xsdd_other", i.neu_class, source_class=i.xsdd_class)
             for i in xsdd_images(root)]
    if not items:
        log.warning("xsdd: no class folders with images under %s", root)
    return items


def load_eval_data(items: list[EvalImage], preprocess: PreprocessConfig, progress: bool = True) -> EvalData:
    from tqdm.auto import tqdm

    kept, pixels, errors = [], [], []
    decoded: tuple[Path, np.ndarray] | None = None  # crops of one frame follow each other: decode it once
    for item in tqdm(items, desc="decoding evaluation images", unit="img", disable=not progress):
        try:
            if decoded is None or decoded[0] != item.path:
                decoded = (item.path, read_image(item.path))
            image = decoded[1]
            if item.box is not None:
                x0, y0, x1, y1 = item.box
                image = image[y0:y1, x0:x1]
            pixels.append(prepare_pixels(image, preprocess))
            kept.append(item)
        except (ImageReadError, ValueError) as exc:
            log.warning("%s", exc)
            errors.append((item.name, str(exc)))
    height, width = preprocess.input_size
    stacked = np.stack(pixels) if pixels else np.zeros((0, height, width, 3), np.uint8)
    return EvalData(kept, stacked, errors)


def keras_outputs(model, data: EvalData, preprocess: PreprocessConfig, batch: int = 16,
                  progress: bool = True, cache=None) -> tuple[np.ndarray, np.ndarray]:
    """The float reference: probabilities and embeddings of the Keras model on the same pixels (``cache``: a
    train.output_cache.KerasOutputCache, or None)."""
    return embeddings.keras_outputs(model, data.pixels, preprocess, batch, progress, desc="keras float reference",
                                    cache=cache)


def float_outputs(model, data: EvalData, preprocess: PreprocessConfig, ood, polarity: str = AS_IS,
                  progress: bool = True, cache=None) -> tuple[np.ndarray, np.ndarray]:
    """The float reference as the device would answer: probabilities and unknown scores (``ood``: an OodSpec),
    with test-time ``polarity`` "auto" the reading (as captured or inverted) closer to the training images."""
    probabilities, scores, _ = embeddings.polarity_outputs(model, data.pixels, preprocess, ood, polarity, progress,
                                                           cache)
    return probabilities, scores


def keras_probabilities(model, data: EvalData, preprocess: PreprocessConfig, batch: int = 16,
                        progress: bool = True, cache=None) -> np.ndarray:
    """The float reference's probabilities (see :func:`keras_outputs`)."""
    return keras_outputs(model, data, preprocess, batch, progress, cache)[0]


@dataclass
class ArtifactOutputs:
    probabilities: np.ndarray
    ood_scores: np.ndarray | None  # None when the artifact has no unknown score
    load_seconds: float
    labels: list[str]


def check_workers(threads: int | None = None, cores: int | None = None) -> tuple[int, int]:
    """How the checks run an artifact: ``(workers, threads per worker)``.

    The checks want throughput, not one image's latency: every core runs its own copy of the model on its own
    share of the images (what OpenVINO's THROUGHPUT hint does with streams), instead of one copy whose threads
    meet after every layer. Up to 4 copies (memory); ``threads`` (``--threads``) sets each copy's threads."""
    cores = cores or default_threads()
    if threads:
        return max(1, min(4, cores // threads)), threads
    workers = max(1, min(4, cores))
    return workers, max(1, cores // workers)


def artifact_outputs(path: Path, data: EvalData, threads: int | None = None, batch: int = 16,
                     progress: bool = True, labels: list[str] | None = None,
                     engine: str | None = None, polarity: str | None = None,
                     workers: int | None = None) -> ArtifactOutputs:
    """Probabilities and unknown scores from an artifact through ``edge_runtime.Classifier`` (on ``engine``,
    default: the file's usual engine; test-time ``polarity``, default: the artifact's own setting).

    The images go in chunks of ``batch`` to ``workers`` copies of the classifier running side by side (default:
    :func:`check_workers`), each chunk through ``Classifier.predict_batch`` as on the device; every image's
    result is the same whichever copy runs it (tests/test_export_speed.py). ``load_seconds`` is one copy's."""
    from concurrent.futures import ThreadPoolExecutor
    from queue import SimpleQueue

    from tqdm.auto import tqdm

    from edge_runtime.classifier import Classifier

    default_workers, per_worker = check_workers(threads)
    workers = max(1, min(workers or default_workers, -(-len(data.pixels) // batch) or 1))
    engine = engine or engine_for(path)

    def load() -> Classifier:
        classifier = Classifier.load(path, engine=engine, threads=per_worker if workers > 1 else threads,
                                     labels=labels)
        if polarity:
            classifier.polarity = polarity
        return classifier

    started = time.perf_counter()
    first = load()
    load_seconds = time.perf_counter() - started
    idle: SimpleQueue = SimpleQueue()
    for classifier in [first, *(load() for _ in range(workers - 1))]:
        idle.put(classifier)

    def run(start: int) -> list:
        classifier = idle.get()  # a copy nobody else is using (they are not thread-safe)
        try:
            return classifier.predict_batch(list(data.pixels[start : start + batch]))
        finally:
            idle.put(classifier)

    predictions = []
    starts = range(0, len(data.pixels), batch)
    with ThreadPoolExecutor(workers) as pool:  # the engines release the GIL while they infer
        for chunk in tqdm(pool.map(run, starts), total=len(starts), desc=Path(path).name, unit="batch",
                          disable=not progress):
            predictions += chunk
    width = len(first.labels)
    probabilities = np.stack([p.probabilities for p in predictions]) if predictions else np.zeros((0, width))
    scores = None
    if first.ood is not None:
        scores = np.array([p.ood_score for p in predictions], dtype=np.float32)
    return ArtifactOutputs(probabilities, scores, load_seconds, list(first.labels))


def artifact_probabilities(path: Path, data: EvalData, threads: int | None = None, batch: int = 16,
                           progress: bool = True, labels: list[str] | None = None,
                           polarity: str | None = None) -> tuple[np.ndarray, float, list[str]]:
    """Probabilities from an artifact through ``edge_runtime.Classifier``; also its load time and labels."""
    out = artifact_outputs(path, data, threads, batch, progress, labels, polarity=polarity)
    return out.probabilities, out.load_seconds, out.labels


def _validation(items: list[EvalImage]) -> list[int]:
    return [k for k, i in enumerate(items) if i.group == IN_DOMAIN and i.split == "val"]


def unknown_threshold(items: list[EvalImage], scores: np.ndarray, quantile: float) -> float:
    """The unknown threshold from the NEU *validation* images' scores only (never test or other plants)."""
    from edge_runtime.ood import threshold_from

    return threshold_from(scores[_validation(items)], quantile)


def matched_threshold(items: list[EvalImage], reference_scores: np.ndarray, scores: np.ndarray,
                      reference_threshold: float) -> float:
    """An artifact's unknown threshold: the float model's, moved by the median difference of the artifact's
    scores from the float model's on the same NEU *validation* images (nothing else is read).

    Quantisation shifts every score a little (noise makes an embedding less like all training embeddings);
    the paired median measures that shift robustly. Taking the artifact's own validation quantile instead
    re-draws one extreme value of the validation images' noisy scores, which moves the threshold far more
    than the paired shift does and turns images near it between known and unknown (measurements:
    docs/quantisation.md).
    """
    validation = _validation(items)
    if not validation:
        raise ValueError("no NEU validation images to match the unknown threshold on")
    shift = np.median(np.asarray(scores, np.float64)[validation] - np.asarray(reference_scores, np.float64)[validation])
    return float(reference_threshold + shift)


def unknown_summary(items: list[EvalImage], classes: list[str], probabilities: np.ndarray, scores: np.ndarray,
                    threshold: float) -> dict:
    """How the unknown answer works out: per group, share flagged unknown and share *confidently wrong*
    (not flagged, and not the expected class; for images without NEU counterpart any class is wrong);
    AUROC of NEU test (in) against each group of images without NEU counterpart (out)."""
    from edge_runtime.ood import auroc

    flagged = ~(scores <= threshold)
    predicted = probabilities.argmax(axis=1)
    neu_test = np.array([i.group == IN_DOMAIN and i.split == "test" for i in items])
    groups: dict[str, dict] = {}
    for group in dict.fromkeys(i.group for i in items):
        idx = np.array([k for k, i in enumerate(items) if i.group == group])
        right = np.array([items[k].expected is not None and classes[predicted[k]] == items[k].expected for k in idx])
        out_idx = np.array([k for k in idx if items[k].expected is None], dtype=int)
        groups[group] = {
            "images": int(len(idx)),
            "unknown": int(flagged[idx].sum()),
            "confident_wrong": int((~flagged[idx] & ~right).sum()),
            "right_and_known": int((~flagged[idx] & right).sum()),
            "no_counterpart": int(len(out_idx)),
            "no_counterpart_unknown": int(flagged[out_idx].sum()),
            "auroc_vs_neu_test": auroc(scores[neu_test], scores[out_idx]) if len(out_idx) else None,
        }
    cross = np.array([i.group != IN_DOMAIN for i in items])
    cross_out = np.array([i.group != IN_DOMAIN and i.expected is None for i in items])
    return {
        "threshold": float(threshold),
        "groups": groups,
        "neu_test_flagged": float(flagged[neu_test].mean()) if neu_test.any() else None,
        "cross_plant_confident_wrong": _share(sum(g["confident_wrong"] for n, g in groups.items() if n != IN_DOMAIN),
                                              int(cross.sum())),
        "auroc_all_no_counterpart": auroc(scores[neu_test], scores[cross_out]) if cross_out.any() else None,
    }


def called_as(items: list[EvalImage], labels: list[str], probabilities: np.ndarray,
              flagged: np.ndarray | None = None) -> dict[str, dict[str, dict[str, int]]]:
    """Per group and source class, how many images get each answer ("unknown" included when flagged)."""
    predicted = probabilities.argmax(axis=1)
    table: dict[str, dict[str, dict[str, int]]] = {}
    for k, item in enumerate(items):
        answer = "unknown" if flagged is not None and flagged[k] else labels[predicted[k]]
        row = table.setdefault(item.group, {}).setdefault(item.source_class or item.group, {})
        row[answer] = row.get(answer, 0) + 1
    return table


def _share(count: int, total: int) -> float | None:
    return count / total if total else None


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


UNKNOWN_ANSWER = -1


@dataclass
class Reference:
    """The float model's results on the evaluation images, that every artifact is compared with."""

    probabilities: np.ndarray
    answers: np.ndarray | None  # class index or UNKNOWN_ANSWER, with the float model's unknown threshold
    unknown: dict | None  # unknown_summary of the float model
    scores: np.ndarray | None = None  # the float model's unknown scores
    groups: dict[str, dict] | None = None  # score() of the float model's probabilities, computed once


def answers(probabilities: np.ndarray, scores: np.ndarray | None = None, threshold: float | None = None) -> np.ndarray:
    """What the device reports per image: the class index, or ``UNKNOWN_ANSWER`` above the unknown threshold."""
    out = probabilities.argmax(axis=1)
    if scores is not None and threshold is not None:
        out = np.where(scores <= threshold, out, UNKNOWN_ANSWER)
    return out


def compare(items: list[EvalImage], classes: list[str], reference: np.ndarray, candidate: np.ndarray,
            reference_answers: np.ndarray | None = None, candidate_answers: np.ndarray | None = None,
            reference_groups: dict[str, dict] | None = None) -> dict:
    """Accuracy of both, drop in percentage points per group, top-1 agreement and max |Δprobability|.

    With both models' answers (class or unknown, see :func:`answers`) also ``answer_agreement``: the share of
    images on which the two report the same thing (an image both call unknown agrees whatever its top class).
    """
    ref_scores = reference_groups if reference_groups is not None else score(items, classes, reference)
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
        if reference_answers is not None and candidate_answers is not None and idx:
            groups[group]["answer_agreement"] = float(np.mean(reference_answers[idx] == candidate_answers[idx]))
    agreement = float(np.mean(reference.argmax(1) == candidate.argmax(1))) if len(items) else None
    dprob = np.abs(reference - candidate).max(axis=1) if len(items) else None
    result = {"groups": groups, "agreement": agreement, "images": len(items),
              "max_abs_dprob": float(dprob.max()) if dprob is not None else None,
              "p99_abs_dprob": float(np.percentile(dprob, 99)) if dprob is not None else None}
    if reference_answers is not None and candidate_answers is not None and len(items):
        result["answer_agreement"] = float(np.mean(reference_answers == candidate_answers))
    foreign = np.array([i.group != IN_DOMAIN for i in items], bool)
    if IN_DOMAIN in groups and foreign.any():  # another plant's images, beside the model's own held-out ones
        same = (reference_answers == candidate_answers if reference_answers is not None and
                candidate_answers is not None else reference.argmax(1) == candidate.argmax(1))
        result["foreign_agreement"] = float(np.mean(same[foreign]))
    return result
