"""``edge-adapt``: teach a model a new line from a few labelled images, on the device, without TensorFlow.

    edge-adapt --data LABELLED_DIR --out line3.tflite --only-new     # the new line's classes only
    edge-adapt --data MORE_IMAGES --model line3.tflite --out line3.tflite   # extend it later
    edge-adapt --data LABELLED_DIR --unlabelled LINE_FRAMES --out line3.tflite --only-new   # + unlabelled frames
    edge-adapt --info line3.tflite

``LABELLED_DIR`` holds one folder per class. A folder named like a class the model knows adds examples to it;
other names add classes. The result is a model file of the base model's format (same graph, new metadata:
:mod:`edge_runtime.adapt`) that edge-classify, Classifier.load, edge-bench and edge-export check take like
any exported artifact. ``LINE_FRAMES`` (any folder of the line's images, e.g. edge-classify's ``--sort-into``
folders) lends the head the images it names confidently (:func:`edge_runtime.adapt.build_head`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from edge_runtime.adapt import (DEFAULT_QUANTILE, DEFAULT_VIEWS, EMBEDDING, FEATURES, MIRRORS, AdaptedHead,
                                Unlabelled, build_head, is_labelled, mirrored_views, transform)
from edge_runtime.classifier import Classifier
from edge_runtime.cli_support import HelpFormatter, dispatch, setup_logging
from edge_runtime.errors import AdaptError, ImageReadError
from edge_runtime.fileio import file_sha256
from edge_runtime.metadata import read_metadata
from edge_runtime.model_file import write_model
from edge_runtime.preprocessing import is_image_file, read_image
from edge_runtime.shipped import default_model_path

log = logging.getLogger("edge-adapt")

BATCH = 16
UNLABELLED_LIMIT = 1000  # frames read from --unlabelled at most (evenly spaced): a bounded file and enrolment time


@dataclasses.dataclass
class Enrolment:
    """Images read from a labelled folder: rows of transformed features, their classes and provenance."""

    rows: list[np.ndarray] = dataclasses.field(default_factory=list)
    gate: list[np.ndarray] = dataclasses.field(default_factory=list)  # embeddings, for choosing the expert
    labels: list[str] = dataclasses.field(default_factory=list)
    enrolled: list[dict[str, str]] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)


def adapt(data: str | Path, out: str | Path, model: str | Path | None = None, only_new: bool = False,
          quantile: float = DEFAULT_QUANTILE, threads: int | None = None,
          views: int = DEFAULT_VIEWS, unlabelled: str | Path | None = None,
          unlabelled_limit: int = UNLABELLED_LIMIT) -> AdaptedHead:
    """Enrol the class folders under ``data`` into ``model`` (default: the shipped one) and write ``out``.

    Each image is enrolled in ``views`` views: as captured, then mirrored (:data:`edge_runtime.adapt.MIRRORS`).
    ``unlabelled``: a folder of the line's images nobody labelled; those the head names confidently are
    enrolled too (as captured), marked as such; at most ``unlabelled_limit`` of its images, evenly spaced.
    """
    base_path = Path(model) if model is not None else default_model_path()
    out = Path(out)
    if out.suffix.lower() != base_path.suffix.lower():
        raise AdaptError(f"--out '{out}' must have the base model's suffix '{base_path.suffix}' (the adapted model "
                         "is the same graph with new metadata)")
    classifier = Classifier.load(base_path, engine=None, threads=threads)
    if classifier.ood is None:
        raise AdaptError(f"model '{base_path}' has no embedding output and unknown score, which enrolment needs; "
                         "use a model exported by edge-export (or the shipped default model)")
    previous = classifier.adapted
    feature = previous.feature if previous else feature_output(classifier)
    folders = _class_folders(Path(data))
    started = time.perf_counter()
    new = _enrol(classifier, folders, feature, previous, views)
    rows, gate, labels, enrolled = _merge(previous, new, only_new)
    pool, pool_skipped = (_read_unlabelled(classifier, Path(unlabelled), feature, {e["sha256"] for e in enrolled},
                                           unlabelled_limit) if unlabelled is not None else (None, []))
    keep_base = not only_new and (previous.keep_base if previous else True)
    base_labels = previous.base_labels if previous else list(classifier.labels)
    history = [*(previous.history if previous else []),
               {"added": len(_images(new.enrolled)), "from": str(Path(data)), "only_new": only_new, "views": views,
                "classes": {c: len(_images(new.enrolled, c)) for c in dict.fromkeys(new.labels)},
                "skipped": len(new.skipped), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}]
    head = build_head(np.stack(rows), np.stack(gate), labels, enrolled, base_labels, keep_base, feature, quantile,
                      previous.base_model_sha256 if previous else file_sha256(base_path), history, pool,
                      classifier.ood.bank)
    if pool is not None:
        taken = head.enrolled[len(enrolled):]
        counts = {c: len(_images(taken, c)) for c in head.classes if _images(taken, c)}
        record = {"from": str(Path(unlabelled)), "read": len(pool.records), "skipped": len(pool_skipped),
                  "taken": counts}
        head = dataclasses.replace(head, history=[*head.history[:-1], {**head.history[-1], "unlabelled": record}])
        log.info("unlabelled: %d of %d image(s) from %s enrolled under the head's answer %s", len(_images(taken)),
                 len(pool.records), unlabelled, counts)
    extra = {k: v for k, v in classifier.metadata.extra.items() if k not in ("adapted", "polarity")}
    meta = dataclasses.replace(classifier.metadata, labels=head.labels, extra={**extra, "adapted": head.to_dict()})
    try:
        write_model(out, base_path.read_bytes(), meta)
    except OSError as exc:
        raise AdaptError(f"cannot write '{out}': {exc.strerror or exc}; choose a writable --out") from exc
    log.info("wrote %s: %d classes %s from %d enrolled images (%d new, %d skipped; %d views each), unknown beyond "
             "cosine distance %.4f to the nearest enrolled image, in %.1f s", out, len(head.labels), head.labels,
             len(_images(enrolled)), len(_images(new.enrolled)), len(new.skipped), views, head.threshold,
             time.perf_counter() - started)
    return head


def _class_folders(root: Path) -> dict[str, list[Path]]:
    if not root.is_dir():
        raise AdaptError(f"--data '{root}' is not a folder; give a folder with one sub-folder of images per class")
    folders = {d.name: sorted(p for p in d.rglob("*") if p.is_file() and is_image_file(p))
               for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")}
    if not folders:
        raise AdaptError(f"'{root}' has no class folders; put each class's images in a sub-folder named after it")
    empty = [name for name, files in folders.items() if not files]
    if empty:
        raise AdaptError(f"class folder(s) {', '.join(str(root / n) for n in empty)} hold no image files "
                         f"({', '.join(sorted({'.jpg', '.png', '.bmp', '.tif'}))}, ...); add images or remove them")
    return folders


def feature_output(classifier: Classifier) -> str:
    """FEATURES when the graph has the backbone's pooled output beside class probabilities and embedding."""
    probe = np.zeros((1, *classifier.metadata.input_shape[1:]), dtype=classifier.backend.input_dtype)
    return FEATURES if FEATURES in classifier.device_outputs(probe) else EMBEDDING


def _images(enrolled: list[dict[str, str]], name: str | None = None) -> set[str]:
    """The distinct images (sha256) of enrolled rows (one row per view), of class ``name`` or all."""
    return {e["sha256"] for e in enrolled if name is None or e["class"] == name}


def _enrol(classifier: Classifier, folders: dict[str, list[Path]], feature: str,
           previous: AdaptedHead | None, views: int = DEFAULT_VIEWS) -> Enrolment:
    """Features of every readable image in ``views`` views; unreadable files and copies of images already
    labelled are skipped (logged). A frame the head once named from unlabelled images may be labelled now."""
    result = Enrolment()
    seen = {e["sha256"]: e["class"] for e in (previous.enrolled if previous else []) if is_labelled(e)}
    for name, files in folders.items():
        pending: list[tuple[Path, np.ndarray, str, str]] = []
        for path in files:
            if (read := _read_or_skip(path, result.skipped)) is None:
                continue
            image, digest = read
            if digest in seen:
                log.warning("skipped '%s': the same image is already enrolled as '%s'", path, seen[digest])
                continue
            seen[digest] = name
            pending.extend((path, pixels, digest, view)
                           for view, pixels in mirrored_views(classifier.prepare(image), views))
        if not pending:
            raise AdaptError(f"class folder '{path.parent}' has no readable new image; add readable images "
                             "(the skipped files are listed above)")
        outputs = _outputs(classifier, [x for _, x, _, _ in pending], feature)
        for (path, _, digest, view), (row, embedding) in zip(pending, outputs):
            result.rows.append(row)
            result.gate.append(embedding)
            result.labels.append(name)
            result.enrolled.append({"sha256": digest, "class": name, "file": path.name,
                                    "folder": str(path.parent), "view": view})
        log.info("%-30s %4d image(s) enrolled", name, len(_images(result.enrolled, name)))
    return result


def _read_or_skip(path: Path, skipped: list[str]) -> tuple[np.ndarray, str] | None:
    """The image and its sha256; None when it cannot be read (logged, and listed in ``skipped``)."""
    try:
        return read_image(path), file_sha256(path)
    except (ImageReadError, OSError) as exc:
        log.warning("skipped: %s", exc)
        skipped.append(str(path))
        return None


def _outputs(classifier: Classifier, prepared: list[np.ndarray],
             feature: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(:func:`transform`-ed ``feature`` row, row as the base unknown score's bank holds it) of each prepared
    image, run in batches."""
    base = classifier.ood
    for start in range(0, len(prepared), BATCH):
        outputs = classifier.device_outputs(np.stack(prepared[start:start + BATCH]))
        yield from zip(transform(outputs[feature]), base.embed(outputs[base.feature]))


def _read_unlabelled(classifier: Classifier, root: Path, feature: str, enrolled: set[str],
                     limit: int = UNLABELLED_LIMIT) -> tuple[Unlabelled, list[str]]:
    """Features of the readable images under ``root`` (as captured; at most ``limit``, evenly spaced in name
    order), except copies of enrolled images; the skipped unreadable files."""
    if not root.is_dir():
        raise AdaptError(f"--unlabelled '{root}' is not a folder; give a folder of the line's images")
    files = sorted(p for p in root.rglob("*") if p.is_file() and is_image_file(p) and not p.name.startswith("."))
    if len(files) > limit:
        log.info("unlabelled: %d image files under %s; reading %d of them, evenly spaced (--unlabelled-limit)",
                 len(files), root, limit)
        files = [files[i] for i in np.linspace(0, len(files) - 1, limit).round().astype(int)]
    rows, gate, records, skipped, seen = [], [], [], [], set(enrolled)
    for start in range(0, len(files), BATCH):  # a batch read at a time: a large folder is never held decoded
        pending = []
        for path in files[start:start + BATCH]:
            if (read := _read_or_skip(path, skipped)) is not None and read[1] not in seen:
                seen.add(read[1])
                pending.append((path, classifier.prepare(read[0]), read[1]))
        for (path, _, digest), (row, embedding) in zip(pending, _outputs(classifier, [x for _, x, _ in pending],
                                                                          feature)):
            rows.append(row)
            gate.append(embedding)
            records.append({"sha256": digest, "file": path.name, "folder": str(path.parent), "view": "as captured"})
    if not records:
        raise AdaptError(f"--unlabelled '{root}' holds no readable image that is not enrolled already "
                         f"({len(files)} image file(s), {len(skipped)} unreadable); give a folder of the line's "
                         "images")
    log.info("unlabelled: %d image(s) read from %s (%d skipped as unreadable)", len(records), root, len(skipped))
    return Unlabelled(np.stack(rows), np.stack(gate), records), skipped


def _merge(previous: AdaptedHead | None, new: Enrolment,
           only_new: bool) -> tuple[list[np.ndarray], list[np.ndarray], list[str], list[dict[str, str]]]:
    """Rows, embeddings, labels and provenance of the adapted model: the earlier enrolment (its classes in DIR
    only, with ``only_new``; frames named from unlabelled images that are labelled now, left out) followed by the
    new images."""
    rows, gate, labels, enrolled = [], [], [], []
    labelled_now = {e["sha256"] for e in new.enrolled}
    if previous is not None:
        for row, embedding, index, record in zip(previous.bank, previous.gate, previous.bank_labels,
                                                 previous.enrolled):
            name = previous.classes[int(index)]
            if (not only_new or name in new.labels) and (is_labelled(record) or record["sha256"] not in labelled_now):
                rows.append(row)
                gate.append(embedding)
                labels.append(name)
                enrolled.append(record)
    return rows + new.rows, gate + new.gate, labels + new.labels, enrolled + new.enrolled


def info(path: str | Path) -> dict[str, Any]:
    """What an adapted model knows: classes, their image counts and folders, base model, threshold, history."""
    meta = read_metadata(path)
    data = meta.extra.get("adapted")
    if data is None:
        return {"model": str(path), "adapted": False, "classes": meta.labels}
    head = AdaptedHead.from_dict(data)
    classes = {}
    for name in head.labels:
        records = [e for e in head.enrolled if e["class"] == name]
        classes[name] = {"images": len(_images(records)), "folders": sorted({e.get("folder", "") for e in records}),
                         "from_unlabelled": len(_images([e for e in records if not is_labelled(e)])),
                         "from_base_model": head.keep_base and name in head.base_labels}
    return {"model": str(path), "adapted": True, "classes": classes, "keep_base_classes": head.keep_base,
            "feature": head.feature, "unknown_distance": head.threshold, "quantile": head.quantile,
            "base_model_sha256": head.base_model_sha256, "history": head.history}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-adapt", formatter_class=HelpFormatter,
        description="Teach a model a new line from a few labelled images (one sub-folder per class), on the "
                    "device. Writes a model file that edge-classify --model takes. Needs a model with the "
                    "embedding output (every edge-export artifact and the shipped default model have it).")
    parser.add_argument("--data", help="folder with one sub-folder of images per class (a known class's name adds "
                        "examples to it; other names add classes)")
    parser.add_argument("--out", help="the adapted model to write (same suffix as the base model; may be --model "
                        "itself, replaced atomically)")
    parser.add_argument("--model", default=None, help="base model: an exported artifact or an adapted model to "
                        "extend (default: the shipped default model)")
    parser.add_argument("--unlabelled", metavar="DIR", default=None, help="a folder of the line's images nobody "
                        "labelled (searched recursively; e.g. edge-classify's --sort-into folder): those the head "
                        "fitted on --data names with confidence train it too (self-training); what is unknown is "
                        "still decided by the labelled images only")
    parser.add_argument("--unlabelled-limit", type=int, default=UNLABELLED_LIMIT, metavar="N", help="read at most "
                        "N images of --unlabelled, evenly spaced (they are stored in the model and fitted on)")
    parser.add_argument("--only-new", action="store_true", help="keep only the classes of --data (a new plant); "
                        "without it the model's own classes stay")
    parser.add_argument("--quantile", type=float, default=DEFAULT_QUANTILE, help="share of the labelled images "
                        "whose leave-one-out distance lies inside the unknown threshold")
    parser.add_argument("--views", type=int, choices=range(1, len(MIRRORS) + 1), default=DEFAULT_VIEWS,
                        help="views enrolled per image, in this order: " + ", ".join(MIRRORS) + " (mirror "
                        "images; 1: as captured only)")
    parser.add_argument("--threads", type=int, default=None, help="inference threads (default: all cores)")
    parser.add_argument("--info", metavar="MODEL", help="print what an adapted model knows (JSON) and exit")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def _main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    if args.info:
        json.dump(info(args.info), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if not args.data or not args.out:
        parser.error("--data and --out are required (or --info MODEL)")
    if not 0.0 < args.quantile <= 1.0:
        parser.error(f"--quantile must be in (0, 1], got {args.quantile}")
    if args.unlabelled_limit < 1:
        parser.error(f"--unlabelled-limit must be at least 1, got {args.unlabelled_limit}")
    adapt(args.data, args.out, args.model, args.only_new, args.quantile, args.threads, args.views,
          args.unlabelled, args.unlabelled_limit)
    return 0


def main(argv: list[str] | None = None) -> int:
    return dispatch(sys.argv[1:] if argv is None else argv, {}, _main, log)


if __name__ == "__main__":
    raise SystemExit(main())
