"""Cross-dataset check of a trained run: what does the model call another plant's images?

The reference protocol for GC10-DET: run the 6-class model on every image of GC10's ``inclusion`` folder and
count how many are called ``inclusion`` (reference: 85/216 = 39.4 %).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edge_runtime.fileio import write_json_atomic
from edge_runtime.polarity import AS_IS, check_mode
from edge_runtime.preprocessing import is_image_file, prepare_pixels, read_image
from train import figures
from train.data import normalize_label
from train.embeddings import training_copies_ood_spec
from train.predict import predict_files, predict_files_with_polarity
from train.run_dir import TrainedRun
from train.training_run import run_feature_cache

log = logging.getLogger(__name__)


def find_images(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and is_image_file(p))


def default_name(folder: Path) -> str:
    folder = Path(folder).resolve()
    return normalize_label(f"{folder.parent.name}_{folder.name}")


def evaluate_folder(
    run_dir: str | Path,
    data: str | Path,
    expect: str | None = None,
    name: str | None = None,
    out_dir: str | Path | None = None,
    grid_size: int = 16,
    progress: bool = True,
    polarity: str = AS_IS,
) -> dict:
    """Classify every image under ``data``; write ``<name>.json`` and ``<name>_predictions.png``.

    ``polarity="auto"`` reads every image as captured and inverted and keeps the reading closer to the
    training images (edge_runtime.polarity), as ``edge-classify --polarity auto`` does; the training images'
    embeddings it compares with are computed from the run's manifest first (one pass over the train split).
    """
    check_mode(polarity)
    run = TrainedRun.open(run_dir)
    data = Path(data)
    if not data.is_dir():
        raise FileNotFoundError(f"evaluation folder '{data}' does not exist")
    if expect is not None and normalize_label(expect) not in run.classes:
        raise ValueError(f"--expect {expect!r} is not one of the model's classes {run.classes}")
    expect = normalize_label(expect) if expect else None
    name = name or default_name(data)
    out = Path(out_dir or run.directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = find_images(data)
    if not paths:
        raise FileNotFoundError(f"no images found under '{data}'")

    model = run.load_model()
    if polarity == AS_IS:
        result = predict_files(model, paths, run.preprocess, progress=progress, desc=name)
    else:
        data_root, rows = run.manifest(None)
        ood = training_copies_ood_spec(model, run_feature_cache(run.directory, model), data_root, rows,
                                       run.preprocess, classes=run.classes, progress=progress)
        result = predict_files_with_polarity(model, paths, run.preprocess, ood, polarity, progress)
    classes = run.classes
    predicted = result.probabilities.argmax(axis=1) if len(result.paths) else np.zeros(0, int)
    confidence = result.probabilities.max(axis=1) if len(result.paths) else np.zeros(0)
    histogram = {c: int((predicted == i).sum()) for i, c in enumerate(classes)}
    records = [
        {"file": str(p), "predicted": classes[k], "confidence": round(float(c), 4)}
        for p, k, c in zip(result.paths, predicted, confidence)
    ]
    report = {
        "name": name,
        "run_dir": str(run.directory),
        "data": str(data.resolve()),
        "expect": expect,
        "polarity": polarity,
        "inverted": None if result.inverted is None else int(result.inverted.sum()),
        "classified": len(result.paths),
        "errors": [{"file": str(p), "error": e} for p, e in result.errors],
        "predicted_histogram": histogram,
        "mean_confidence": float(confidence.mean()) if len(confidence) else None,
        "predictions": records,
    }
    if expect:
        hits = histogram[expect]
        report["expected_count"] = hits
        report["expected_share"] = hits / len(result.paths) if result.paths else 0.0
        wrong = [c for c, k in zip(confidence, predicted) if classes[k] != expect]
        report["mean_confidence_when_wrong"] = float(np.mean(wrong)) if wrong else None
    report_json = out / f"{name}.json"
    report["report_json"] = str(report_json)
    report["figure"] = str(out / f"{name}_predictions.png")
    write_json_atomic(report_json, report)
    _grid(result.paths, predicted, confidence, classes, expect, report, grid_size, run)
    return report


def _grid(paths, predicted, confidence, classes, expect, report, grid_size, run) -> None:
    """Up to ``grid_size`` thumbnails, correct and wrong examples mixed when both exist."""
    order = list(range(len(paths)))
    if expect:
        right = [i for i in order if classes[predicted[i]] == expect]
        wrong = [i for i in order if classes[predicted[i]] != expect]
        half = grid_size // 2
        take_right = right[: max(half, grid_size - len(wrong))]
        order = take_right + wrong[: grid_size - len(take_right)]
    order = order[:grid_size]
    thumbs = [prepare_pixels(read_image(paths[i]), run.preprocess) for i in order]
    captions = [f"{Path(paths[i]).name[:28]}\n{classes[predicted[i]]} {confidence[i]:.2f}" for i in order]
    ok = [expect is None or classes[predicted[i]] == expect for i in order]
    if expect:
        title = (f"{report['name']}: {report['expected_count']}/{report['classified']} called {expect} "
                 f"(green) — model {run.directory.name}")
    else:
        title = f"{report['name']}: predictions of {run.directory.name}"
    figures.prediction_grid(thumbs, captions, ok, title, Path(report["figure"]))
