"""edge-train refine: every layer of a finished run trained on fresh camera copies, its pooled features anchored."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from train.cli import main
from train.model import POOL_LAYER
from train.refine import CopyPixels, RefineBatches
from train.run_dir import TrainedRun
from train.split import rows_of
from train.training_run import TrainOptions

ARTIFACTS = ["model.keras", "metadata.json", "config.json", "split_manifest.csv", "metrics.json",
             "confusion_val.png", "confusion_test.png"]


def refine(run: Path, runs: Path, name: str, *args: str) -> int:
    return main(["refine", str(run), "--runs", str(runs), "--name", name, "--epochs", "2", "--batch-size", "8",
                 "--no-progress", *args])  # a later --epochs wins


def pooled_features(run: Path) -> np.ndarray:
    """Pooled features of the run's training images as captured."""
    import keras

    trained = TrainedRun.open(run)
    model = trained.load_model()
    root, rows = trained.manifest()
    options = TrainOptions.from_dict(json.loads((run / "config.json").read_text()))
    pixels = CopyPixels(rows_of(rows, "train"), root, options.preprocess, options.augment_spec, options.seed, 1)
    from edge_runtime.preprocessing import normalize

    x = normalize(pixels.batch(np.arange(len(pixels.items)), 0), options.preprocess)
    return np.asarray(keras.Model(model.input, model.get_layer(POOL_LAYER).output).predict_on_batch(x))


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / (np.linalg.norm(a, axis=1, keepdims=True) + 1e-12)
    b = b / (np.linalg.norm(b, axis=1, keepdims=True) + 1e-12)
    return float(np.mean(np.sum(a * b, axis=1)))


@pytest.fixture(scope="module")
def permissive_run(trained_run: Path, tmp_path_factory) -> Path:
    """The tiny run, recorded as right on none of its validation images, so that any refined model is kept."""
    run = tmp_path_factory.mktemp("refine") / "start"
    shutil.copytree(trained_run, run)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["val"]["accuracy"] = 0.0
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


@pytest.fixture(scope="module")
def anchored_run(permissive_run: Path) -> Path:
    """The tiny run refined for 2 epochs with a strong anchor (and a learning rate that moves a tiny model)."""
    runs = permissive_run.parent / "runs"
    assert refine(permissive_run, runs, "anchored", "--lr", "3e-3", "--anchor", "100") == 0
    return runs / "anchored"


def test_refine_trains_every_layer_into_a_new_run_that_export_reads_whole(permissive_run: Path, anchored_run: Path):
    out = anchored_run
    assert all((out / name).is_file() for name in ARTIFACTS)
    start = TrainedRun.open(permissive_run).load_model()
    refined = TrainedRun.open(out).load_model()
    first_conv = next(layer.name for layer in start.layers if layer.name.startswith("conv1_conv"))
    assert not np.allclose(start.get_layer(first_conv).get_weights()[0], refined.get_layer(first_conv).get_weights()[0])
    first_bn = next(layer.name for layer in start.layers if layer.name.endswith("_bn"))
    for before, after in zip(start.get_layer(first_bn).get_weights(), refined.get_layer(first_bn).get_weights()):
        np.testing.assert_array_equal(before, after)  # BatchNorm statistics and scales are kept
    config = json.loads((out / "config.json").read_text())
    assert config["unfreeze"] == "all"  # the unknown score's bank then runs the whole refined model
    assert config["refine_of"] == str(permissive_run.resolve()) and config["refine"]["epochs"] == 2
    metrics = json.loads((out / "metrics.json").read_text())
    assert [row["epoch"] for row in metrics["refine_history"]] == [1, 2]
    assert any((out / "cache").iterdir()), "the unknown score's bank is left for edge-export"


def test_the_anchor_holds_the_pooled_features_where_the_run_had_them(permissive_run: Path, anchored_run: Path,
                                                                    tmp_path: Path, capsys):
    start = pooled_features(permissive_run)
    assert refine(permissive_run, tmp_path / "runs", "free", "--lr", "3e-3", "--anchor", "0") == 0
    assert "val accuracy" in capsys.readouterr().out
    free = mean_cosine(start, pooled_features(tmp_path / "runs" / "free"))
    anchored = mean_cosine(start, pooled_features(anchored_run))
    assert anchored > free


def test_a_refined_model_less_right_than_its_run_is_refused_and_nothing_written(trained_run: Path,
                                                                                 tmp_path: Path, caplog):
    run = tmp_path / "start"
    shutil.copytree(trained_run, run)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["val"]["accuracy"] = 1.01  # no model reaches it
    (run / "metrics.json").write_text(json.dumps(metrics))
    assert refine(run, tmp_path / "runs", "refined", "--epochs", "1") == 2
    assert "nothing was written" in caplog.text and str(run) in caplog.text
    assert not (tmp_path / "runs" / "refined").exists()


def test_each_epoch_draws_a_new_copy_of_every_image_whatever_order_batches_are_asked_in(trained_run: Path):
    trained = TrainedRun.open(trained_run)
    root, rows = trained.manifest()
    options = TrainOptions.from_dict(json.loads((trained_run / "config.json").read_text()))
    train_rows = rows_of(rows, "train")
    pixels = CopyPixels(train_rows, root, options.preprocess, options.augment_spec, options.seed, 2)
    labels = np.arange(len(train_rows))
    anchors = np.zeros((3, len(train_rows), 4), np.float32)
    batches = RefineBatches(pixels, labels, anchors, batch_size=5, seed=options.seed)
    assert len(batches) == 3 * batches.steps
    for epoch in range(3):
        seen = np.concatenate([batches.indices(epoch * batches.steps + s)[1] for s in range(batches.steps)])
        assert sorted(seen.tolist()) == list(range(len(train_rows)))
    last = len(batches) - 1
    x_late, (y_late, _) = batches[last]
    x_first, _ = batches[0]
    again, (y_again, _) = batches[last]  # asked again, out of order: the same copy
    np.testing.assert_array_equal(x_late, again)
    np.testing.assert_array_equal(y_late, y_again)
    epoch, idx = batches.indices(last)
    assert epoch == 2
    np.testing.assert_array_equal(x_late, np.asarray(batches[last][0]))
    clean = pixels.batch(idx, 0)
    assert not np.array_equal(pixels.batch(idx, epoch + 1), clean)  # an augmented copy, not the image as captured


def test_the_anchor_input_is_the_same_copy_without_the_camera_look(trained_run: Path):
    from train.augment import augment
    from train.features import augmentation_rng
    from edge_runtime.preprocessing import read_image, resize_pixels
    from dataclasses import replace

    trained = TrainedRun.open(trained_run)
    root, rows = trained.manifest()
    options = TrainOptions.from_dict(json.loads((trained_run / "config.json").read_text()))
    assert options.augment_spec.camera, "the tiny run draws camera copies (the default recipe)"
    row = rows_of(rows, "train")[0]
    pixels = CopyPixels([row], root, options.preprocess, options.augment_spec, options.seed, 1)
    geometry_only = pixels.batch(np.array([0]), 4, camera=False)[0]
    image = resize_pixels(read_image(root / row.path), options.preprocess)
    expected = augment(image, augmentation_rng(options.seed, row.sha256, 4),
                       replace(options.augment_spec, camera=False, polarity=False))
    np.testing.assert_array_equal(geometry_only, expected)
    assert not np.array_equal(geometry_only, pixels.batch(np.array([0]), 4)[0])
