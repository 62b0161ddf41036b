"""Shared fixtures: tiny generated datasets, the optional ../shared data, one tiny trained run."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGE_SHARED_DIR", REPO.parent / "shared"))
NEU = SHARED / "datasets" / "neu"
GC10 = SHARED / "datasets" / "gc10"
WEIGHTS = SHARED / "weights" / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
NEU_CLASSES = ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]

needs_neu = pytest.mark.skipif(not NEU.is_dir(), reason=f"NEU data not found at {NEU}")


@pytest.fixture(autouse=True)
def _engine_choice_cache(monkeypatch, tmp_path) -> Path:
    """Every test gets its own engine-choice cache dir (--engine auto never writes to ~/.cache)."""
    cache = tmp_path / "engine-choice-cache"
    monkeypatch.setenv("EDGE_RUNTIME_CACHE_DIR", str(cache))
    return cache


def synthetic_image(class_index: int, i: int, size: int = 40) -> np.ndarray:
    """A grayscale texture whose brightness and stripe direction depend on the class."""
    rng = np.random.default_rng([class_index, i])
    yy, xx = np.mgrid[0:size, 0:size]
    stripes = np.sin((xx if class_index % 2 else yy) * (0.3 + 0.2 * class_index)) * 40
    noise = rng.normal(0, 8, (size, size))
    return np.clip(60 + 25 * class_index + stripes + noise, 0, 255).astype(np.uint8)


def write_class_folders(root: Path, per_class: int = 6, classes=NEU_CLASSES, size: int = 40) -> Path:
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            cv2.imwrite(str(root / name / f"{name}_{i + 1}.jpg"), synthetic_image(c, i, size))
    return root


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    return write_class_folders(tmp_path / "tiny")


TINY_ARGS = [
    "--weights", "none", "--input-size", "32", "--epochs-stage1", "1", "--epochs-stage2", "1",
    "--val-per-class", "1", "--test-per-class", "1", "--aug-copies", "2", "--batch-size", "8", "--no-progress",
]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """One tiny end-to-end training run (random init, 32×32, one epoch per stage), shared by the tests."""
    from train.cli import main

    base = tmp_path_factory.mktemp("trained")
    data = write_class_folders(base / "data")
    assert main(["--data", str(data), "--runs", str(base / "runs"), "--name", "tiny", *TINY_ARGS]) == 0
    return base / "runs" / "tiny"


@pytest.fixture(scope="session")
def tiny_edge_models(tmp_path_factory):
    """A tiny float TFLite and ONNX classifier (16×16×3 -> 3 NEU labels, metadata inside), built once.

    Same construction as test_runtime's models (its metadata and ONNX helpers are reused); TensorFlow runs
    only here, in the test process. Returns a namespace with ``tflite``, ``onnx`` (Paths) and ``labels``.
    """
    from types import SimpleNamespace

    import keras
    import tensorflow as tf

    from edge_runtime.metadata import embed_tflite_metadata
    from test_runtime import LABELS, SIZE, tiny_metadata, write_onnx

    base = tmp_path_factory.mktemp("edge_models")
    keras.utils.set_random_seed(1)
    inputs = keras.Input((SIZE, SIZE, 3))
    conv = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    outputs = keras.layers.Dense(len(LABELS), activation="softmax")(keras.layers.GlobalAveragePooling2D()(conv))
    model = keras.Model(inputs, outputs)
    model.export(str(base / "saved_model"), verbose=False)
    flatbuffer = tf.lite.TFLiteConverter.from_saved_model(str(base / "saved_model")).convert()
    tflite = base / "tiny.tflite"
    tflite.write_bytes(embed_tflite_metadata(flatbuffer, tiny_metadata("tflite_fp32")))
    onnx_path = write_onnx(model, base / "tiny.onnx", tiny_metadata("onnx_fp32"))
    return SimpleNamespace(tflite=tflite, onnx=onnx_path, labels=list(LABELS))


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON Lines file."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def classify(args: list, model: Path, tmp_path: Path) -> tuple[int, list[dict], dict | None]:
    """Run edge-classify in-process with ``args`` into records and a summary: (exit code, records, summary)."""
    from edge_runtime.cli import main

    out, summary = tmp_path / "records.jsonl", tmp_path / "summary.json"
    code = main([*map(str, args), "--model", str(model), "--output", str(out), "--summary", str(summary)])
    records = read_jsonl(out) if out.exists() else []
    return code, records, json.loads(summary.read_text()) if summary.exists() else None


def write_split_run(base: Path, per_class: int):
    """Synthetic class folders in ``base/data`` and a run folder ``base/run`` holding their split manifest (2
    validation and 2 test images per class), as edge-train starts one: (data, dataset, rows, run)."""
    from train.data import check_images, discover
    from train.split import stratified_split, write_manifest

    data = write_class_folders(base / "data", per_class=per_class)
    dataset = discover(data)
    rows = stratified_split(dataset, check_images(dataset, progress=False), 2, 2)
    run = base / "run"
    run.mkdir()
    write_manifest(run / "split_manifest.csv", rows)
    return data, dataset, rows, run


def write_run_metadata(run: Path, data: Path, classes: list[str], config, **extra) -> None:
    """metadata.json as edge-train writes it, for a model of ``classes`` with preprocessing ``config``."""
    from edge_runtime.fileio import file_sha256, write_json_atomic

    write_json_atomic(run / "metadata.json", {
        "classes": classes, "input_size": list(config.input_size), "preprocessing": config.to_dict(), "seed": 0,
        "data_root": str(data), "split_manifest_sha256": file_sha256(run / "split_manifest.csv"), **extra,
    })
