"""A camera unlike the training camera, taught to the model with a few of its own images (``edge-adapt``).

    python -m benchmarks.camera_enrolment --changes "motion blur 7 px" "sensor noise sigma 8" --shots 5 10 20 \\
        --draws 2 --xsdd ../shared/datasets/xsdd --gc10 ../shared/datasets/gc10 --json camera_enrolment.json

For each camera change of :mod:`benchmarks.nuisance` and each draw, ``--shots`` training images per class (the
model's split manifest, train split only) are taken "by that camera" (the change applied), written as PNG into one
folder per class, and enrolled with the real ``edge-adapt`` (:func:`edge_runtime.adapt_cli.adapt`; the model's
own classes kept, the folders named like them). ``--unlabelled N``: N more training images per class under the
change are handed over unlabelled (``edge-adapt --unlabelled``). The adapted model then answers the held-out
images (validation and test) as captured and under the same change, and, with ``--xsdd``/``--gc10``, the images of
defect classes the model never learnt, under the same change: they should stay ``unknown``. The base model's
answers to the same images are measured alongside.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from benchmarks.nuisance import (AS_CAPTURED, NUISANCES, Nuisance, add_data_arguments, held_out_images, manifest_of,
                                 measure, new_class_images, predict_all)
from edge_runtime.adapt import DEFAULT_QUANTILE
from edge_runtime.adapt_cli import adapt
from edge_runtime.classifier import Classifier
from edge_runtime.cli_support import setup_logging
from edge_runtime.preprocessing import read_image
from edge_runtime.shipped import default_model_path
from train.split import read_manifest, rows_of

log = logging.getLogger("camera_enrolment")


def write_camera_images(change: Nuisance, data_root: Path, manifest: Path, shots: int, unlabelled: int,
                        seed: int, folder: Path) -> None:
    """``shots`` (labelled, one folder per class under ``folder/labelled``) and ``unlabelled`` (flat, under
    ``folder/unlabelled``) training images per class, drawn with ``seed``, as the changed camera sees them."""
    train = rows_of(read_manifest(manifest), "train")
    rng = np.random.default_rng(seed)
    for label in sorted({r.label for r in train}):
        rows = [r for r in train if r.label == label]
        for n, i in enumerate(rng.permutation(len(rows))[: shots + unlabelled]):
            where = folder / "labelled" / label if n < shots else folder / "unlabelled"
            where.mkdir(parents=True, exist_ok=True)
            image = change.apply(read_image(Path(data_root) / rows[i].path))
            cv2.imwrite(str(where / f"{Path(rows[i].path).stem}.png"), image)


def unknown_share(classifier: Classifier, images: list[np.ndarray]) -> float:
    return float(np.mean([p.unknown for p in predict_all(classifier, images)]))


def run(model: Path, data_root: Path, manifest: Path, changes: list[Nuisance], shots: list[int], draws: int,
        unlabelled: int, new_images: list[np.ndarray], threads: int | None = None,
        quantile: float = DEFAULT_QUANTILE, engine: str | None = None) -> list[dict]:
    """One row per change, shots and draw (plus the base model's row per change, ``shots`` 0)."""
    held, labels = held_out_images(data_root, manifest)
    base = Classifier.load(model, engine=engine, threads=threads)
    rows = []
    for change in changes:
        changed_new = [change.apply(i) for i in new_images]
        base_rows = measure(base, held, labels, nuisances=(AS_CAPTURED, change))
        rows.append(_row(change, 0, -1, base_rows, unknown_share(base, changed_new) if new_images else None))
        for count in shots:
            for draw in range(draws):
                with tempfile.TemporaryDirectory() as tmp:
                    folder = Path(tmp)
                    write_camera_images(change, data_root, manifest, count, unlabelled, draw, folder)
                    adapt(folder / "labelled", folder / f"adapted{model.suffix}", model=model, threads=threads,
                          quantile=quantile, unlabelled=folder / "unlabelled" if unlabelled else None)
                    adapted = Classifier.load(folder / f"adapted{model.suffix}", engine=engine, threads=threads)
                    measured = measure(adapted, held, labels, nuisances=(AS_CAPTURED, change))
                    rows.append(_row(change, count, draw, measured,
                                     unknown_share(adapted, changed_new) if new_images else None))
                log.info("%s, %d per class, draw %d: right %.1f %%, unknown %.1f %%", change.name, count, draw,
                         100 * rows[-1]["right"], 100 * rows[-1]["unknown"])
    return rows


def _row(change: Nuisance, shots: int, draw: int, measured: list[dict], new_unknown: float | None) -> dict:
    captured, changed = measured
    return {"change": change.name, "group": change.group, "shots": shots, "draw": draw,
            "right": changed["right"], "unknown": changed["unknown"],
            "as_captured_right": captured["right"], "as_captured_unknown": captured["unknown"],
            "new_classes_unknown": new_unknown}


def summary(rows: list[dict]) -> str:
    """Markdown: per change and shots, the draws' mean (and worst) of each figure; shots 0 is the base model."""
    lines = ["| camera change | images per class | best class right | `unknown` | as captured: right / `unknown` "
             "| new classes `unknown` |", "|---|---:|---:|---:|---:|---:|"]
    keys = dict.fromkeys((r["change"], r["shots"]) for r in rows)
    for change, shots in keys:
        group = [r for r in rows if r["change"] == change and r["shots"] == shots]

        def pct(key, worst):
            values = [r[key] for r in group if r[key] is not None]
            if not values:
                return "–"
            text = f"{100 * np.mean(values):.1f} %"
            return text + (f" ({100 * worst(values):.1f})" if len(values) > 1 else "")

        lines.append(f"| {change} | {shots or 'base model'} | {pct('right', min)} | {pct('unknown', max)} | "
                     f"{pct('as_captured_right', min)} / {pct('as_captured_unknown', max)} | "
                     f"{pct('new_classes_unknown', min)} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.camera_enrolment", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_data_arguments(p)
    p.add_argument("--changes", nargs="+", default=None, metavar="NAME",
                   help="camera changes by name (default: every one of benchmarks.nuisance)")
    p.add_argument("--shots", nargs="+", type=int, default=[10], help="labelled images per class enrolled")
    p.add_argument("--draws", type=int, default=2, help="draws of those images per change and shots")
    p.add_argument("--quantile", type=float, default=DEFAULT_QUANTILE, help="edge-adapt --quantile")
    p.add_argument("--unlabelled", type=int, default=0, metavar="N",
                   help="also hand N more images per class over unlabelled (edge-adapt --unlabelled)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    by_name = {n.name: n for n in NUISANCES}
    unknown = [name for name in args.changes or [] if name not in by_name]
    if unknown:
        print(f"unknown camera change(s) {unknown}; choose from: {', '.join(by_name)}", file=sys.stderr)
        return 2
    model = Path(args.model) if args.model else default_model_path()
    manifest = manifest_of(args)
    preprocess = Classifier.load(model, engine=args.engine, threads=args.threads).metadata.preprocess
    new_images = new_class_images(args.xsdd and Path(args.xsdd), args.gc10 and Path(args.gc10), preprocess) \
        if (args.xsdd or args.gc10) else []
    changes = [by_name[n] for n in args.changes] if args.changes else list(NUISANCES)
    rows = run(model, Path(args.data), manifest, changes, args.shots, args.draws, args.unlabelled, new_images,
               args.threads, args.quantile, args.engine)
    print(summary(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"model": str(model), "unlabelled": args.unlabelled,
                                               "quantile": args.quantile, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
