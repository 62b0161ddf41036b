"""End to end on a tiny generated dataset: every run artifact, resume, cross-validation, evaluation."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import GC10, NEU, NEU_CLASSES, TINY_ARGS, WEIGHTS, needs_neu, synthetic_image, write_class_folders
from train.cli import main
from train.predict import predict_files
from train.run_dir import TrainedRun
from train.split import read_manifest, rows_of

ARTIFACTS = [
    "model.keras", "metadata.json", "config.json", "split_manifest.csv", "history.csv", "metrics.json",
    "training_curves.png", "confusion_val.png", "confusion_test.png",
]


def history(run: Path) -> list[dict]:
    with open(run / "history.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_run_writes_every_artifact(trained_run: Path):
    for name in ARTIFACTS:
        assert (trained_run / name).is_file(), name
        assert (trained_run / name).stat().st_size > 0, name


def test_history_covers_both_stages_with_wall_times(trained_run: Path):
    rows = history(trained_run)
    assert [(r["stage"], r["epoch"]) for r in rows] == [("1", "1"), ("2", "1")]
    assert all(float(r["seconds"]) > 0 and r["val_accuracy"] != "" for r in rows)


def test_metrics_hold_accuracy_per_class_scores_and_confusion(trained_run: Path):
    metrics = json.loads((trained_run / "metrics.json").read_text())
    for split in ("val", "test"):
        m = metrics[split]
        assert m["total"] == 6 and 0 <= m["accuracy"] <= 1
        assert set(m["per_class"]) == set(NEU_CLASSES)
        assert set(m["per_class"]["crazing"]) == {"precision", "recall", "f1", "support"}
        assert np.array(m["confusion_matrix"]).shape == (6, 6)
    assert metrics["fit"]["chosen_stage"] in (1, 2)
    assert metrics["epoch_seconds"]["stage1"]["epochs"] == 1


def test_metadata_describes_the_model_for_later_steps(trained_run: Path):
    run = TrainedRun.open(trained_run)
    assert run.classes == NEU_CLASSES
    assert run.preprocess.input_size == (32, 32)
    assert run.metadata["split_manifest_sha256"]
    assert run.metadata["versions"]["keras"].startswith("3.")


def test_saved_model_reproduces_the_reported_test_metrics(trained_run: Path):
    run = TrainedRun.open(trained_run)
    root, rows = run.manifest()
    test = rows_of(rows, "test")
    result = predict_files(run.load_model(), [root / r.path for r in test], run.preprocess, progress=False)
    matrix = np.zeros((6, 6), int)
    for row, k in zip(test, result.probabilities.argmax(1)):
        matrix[NEU_CLASSES.index(row.label), k] += 1
    reported = json.loads((trained_run / "metrics.json").read_text())["test"]["confusion_matrix"]
    assert matrix.tolist() == reported


def test_split_is_the_same_for_the_same_data_and_seed(trained_run: Path, tmp_path: Path):
    from train.data import check_images, discover
    from train.split import stratified_split

    ds = discover(TrainedRun.open(trained_run).metadata["data_root"])
    assert stratified_split(ds, check_images(ds, progress=False), 1, 1, 0) == read_manifest(
        trained_run / "split_manifest.csv"
    )


def test_the_seed_changes_training_not_the_split_unless_asked(trained_run: Path, tmp_path: Path):
    data = TrainedRun.open(trained_run).metadata["data_root"]
    common = ["--data", data, "--runs", str(tmp_path / "runs"), *TINY_ARGS, "--epochs-stage2", "0"]
    assert main([*common, "--name", "seed7", "--seed", "7"]) == 0
    assert main([*common, "--name", "split7", "--split-seed", "7"]) == 0
    split = read_manifest(trained_run / "split_manifest.csv")
    assert read_manifest(tmp_path / "runs" / "seed7" / "split_manifest.csv") == split
    assert read_manifest(tmp_path / "runs" / "split7" / "split_manifest.csv") != split
    for name, seeds in [("seed7", (7, 0)), ("split7", (0, 7))]:
        meta = json.loads((tmp_path / "runs" / name / "metadata.json").read_text())
        config = json.loads((tmp_path / "runs" / name / "config.json").read_text())
        assert (meta["seed"], meta["split_seed"]) == (config["seed"], config["split_seed"]) == seeds


def test_a_run_made_with_one_seed_for_everything_resumes_with_its_split():
    from train.training_run import TrainOptions

    assert TrainOptions.from_dict({"data": "d", "run_dir": "r", "seed": 5}).split_seed == 5
    assert TrainOptions.from_dict({"data": "d", "run_dir": "r", "seed": 5, "split_seed": 0}).split_seed == 0


def test_a_run_made_before_the_consistency_term_resumes_without_it():
    from train.training_run import TrainOptions

    assert TrainOptions.from_dict({"data": "d", "run_dir": "r"}).consistency == 0.0
    assert TrainOptions.from_dict({"data": "d", "run_dir": "r", "consistency": 0.3}).consistency == 0.3


def test_resume_finishes_an_interrupted_run_without_redoing_stage_1_even_one_made_before_newer_settings(trained_run: Path, tmp_path: Path):
    run = tmp_path / "runs" / "interrupted"
    shutil.copytree(trained_run, run)
    # As if killed during stage 2: no stage-2 result, no final model or metrics.
    for name in ("checkpoints/stage2_result.json", "model.keras", "metrics.json", "metadata.json"):
        (run / name).unlink()
    config = json.loads((run / "config.json").read_text())
    for newer in ("loss_tie_break", "average_tied_epochs"):  # as written before these settings existed
        config.pop(newer)
    (run / "config.json").write_text(json.dumps(config))
    stage1_rows = [r for r in history(run) if r["stage"] == "1"]
    assert main(["--resume", str(run), "--no-progress"]) == 0
    assert (run / "model.keras").is_file() and (run / "metrics.json").is_file()
    rows = history(run)
    assert [r for r in rows if r["stage"] == "1"] == stage1_rows
    assert [r["stage"] for r in rows] == ["1", "2"]


def test_resume_refuses_a_changed_dataset_file(trained_run: Path, tmp_path: Path, caplog):
    data = tmp_path / "data"
    shutil.copytree(TrainedRun.open(trained_run).metadata["data_root"], data)
    run = tmp_path / "runs" / "r"
    assert main(["--data", str(data), "--runs", str(tmp_path / "runs"), "--name", "r", *TINY_ARGS,
                 "--epochs-stage2", "0"]) == 0
    victim = data / rows_of(read_manifest(run / "split_manifest.csv"), "test")[0].path
    victim.write_bytes(victim.read_bytes() + b"x")
    (run / "metrics.json").unlink()
    assert main(["--resume", str(run), "--no-progress"]) == 2
    assert victim.name in caplog.text and "contents changed" in caplog.text


def test_same_run_name_with_other_settings_is_refused(trained_run: Path, caplog):
    args = ["--data", TrainedRun.open(trained_run).metadata["data_root"], "--runs", str(trained_run.parent),
            "--name", trained_run.name, *TINY_ARGS, "--seed", "7"]
    assert main(args) == 2
    assert "--resume" in caplog.text


def test_corrupt_image_stops_training_with_its_name_or_is_skipped(tmp_path: Path, caplog):
    data = write_class_folders(tmp_path / "data", per_class=4)
    (data / "scratches" / "scratches_bad.jpg").write_bytes(b"GIF89a not really")
    common = ["--data", str(data), "--runs", str(tmp_path / "runs"), *TINY_ARGS, "--epochs-stage2", "0"]
    assert main([*common, "--name", "strict"]) == 2
    assert "scratches_bad.jpg" in caplog.text and "--skip-bad" in caplog.text
    assert main([*common, "--name", "lenient", "--skip-bad"]) == 0
    skipped = json.loads((tmp_path / "runs" / "lenient" / "metadata.json").read_text())["skipped_bad_images"]
    assert [s[0] for s in skipped] == ["scratches/scratches_bad.jpg"]


def test_kfold_cross_validation_reports_mean_and_std(tmp_path: Path, capsys):
    data = write_class_folders(tmp_path / "data", per_class=4)
    assert main(["--data", str(data), "--runs", str(tmp_path / "runs"), "--name", "cv", *TINY_ARGS,
                 "--folds", "2"]) == 0
    summary = json.loads((tmp_path / "runs" / "cv" / "cv_metrics.json").read_text())
    assert summary["folds"] == 2 and len(summary["test_accuracy_per_fold"]) == 2
    assert summary["test_total"] == 24  # every image tested exactly once
    assert np.isclose(summary["test_accuracy_mean"], np.mean(summary["test_accuracy_per_fold"]))
    assert "2-fold cross-validation test accuracy" in capsys.readouterr().out


def test_evaluate_counts_what_another_plants_images_are_called(trained_run: Path, tmp_path: Path, capsys):
    folder = tmp_path / "gc10" / "inclusion"
    folder.mkdir(parents=True)
    import cv2

    for i in range(5):
        cv2.imwrite(str(folder / f"img_{i}.jpg"), np.tile(synthetic_image(1, i, 50), (1, 2)))
    (folder / "broken.jpg").write_bytes(b"")
    assert main(["evaluate", str(trained_run), "--data", str(folder), "--expect", "inclusion",
                 "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    report = json.loads((tmp_path / "out" / "gc10_inclusion.json").read_text())
    assert report["classified"] == 5 and sum(report["predicted_histogram"].values()) == 5
    assert report["expected_count"] == report["predicted_histogram"]["inclusion"]
    assert [Path(e["file"]).name for e in report["errors"]] == ["broken.jpg"]
    assert (tmp_path / "out" / "gc10_inclusion_predictions.png").stat().st_size > 0
    assert "called inclusion:" in capsys.readouterr().out


def test_evaluate_rejects_an_unknown_expected_class(trained_run: Path, tmp_path: Path):
    (tmp_path / "x").mkdir()
    assert main(["evaluate", str(trained_run), "--data", str(tmp_path / "x"), "--expect", "welding_line"]) == 2


@pytest.mark.parametrize("argv", [["--help"], ["evaluate", "--help"]])
def test_help_is_available(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    assert "usage: edge-train" in capsys.readouterr().out


def test_missing_data_argument_is_a_usage_error():
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2


@pytest.mark.slow
@pytest.mark.data
@needs_neu
def test_real_resnet50_on_a_neu_subset_learns_and_evaluates_gc10(tmp_path: Path):
    """The real pipeline (ImageNet weights, 224×224) on 10 NEU images per class, then a GC10 frame."""
    if not WEIGHTS.is_file():
        pytest.skip("ImageNet weights not in ../shared")
    data = tmp_path / "neu10"
    for name in NEU_CLASSES:
        (data / name).mkdir(parents=True)
        for i in range(1, 11):
            (data / name / f"{name}_{i}.jpg").symlink_to(NEU / name / f"{name}_{i}.jpg")
    args = ["--data", str(data), "--weights", str(WEIGHTS), "--runs", str(tmp_path / "runs"), "--name", "real",
            "--val-per-class", "1", "--test-per-class", "1", "--aug-copies", "1", "--epochs-stage1", "15",
            "--epochs-stage2", "1", "--batch-size", "16", "--no-progress"]
    assert main(args) == 0
    metrics = json.loads((tmp_path / "runs" / "real" / "metrics.json").read_text())
    assert metrics["val"]["accuracy"] >= 0.5  # chance is 1/6
    gc10 = GC10 / "inclusion"
    if gc10.is_dir():
        assert main(["evaluate", str(tmp_path / "runs" / "real"), "--data", str(gc10), "--expect", "inclusion",
                     "--no-progress"]) == 0
        report = json.loads((tmp_path / "runs" / "real" / "gc10_inclusion.json").read_text())
        assert report["classified"] == len(list(gc10.glob("*.jpg")))


def test_evaluate_with_polarity_auto_reports_the_readings_kept(trained_run: Path, tmp_path: Path, capsys):
    """The option end to end on a tiny run (which reading wins is the model's business: see the next test);
    unreadable files are still reported, not fatal."""
    import cv2

    from train.run_dir import TrainedRun

    folder = tmp_path / "other_plant"
    folder.mkdir()
    data_root, rows = TrainedRun.open(trained_run).manifest(None)
    for row in [r for r in rows if r.split == "train"][:6]:
        cv2.imwrite(str(folder / Path(row.path).name), 255 - cv2.imread(str(Path(data_root) / row.path)))
    (folder / "broken.jpg").write_bytes(b"")
    args = ["evaluate", str(trained_run), "--data", str(folder), "--out", str(tmp_path / "out"), "--no-progress"]
    assert main([*args, "--polarity", "auto", "--name", "auto"]) == 0
    auto = json.loads((tmp_path / "out" / "auto.json").read_text())
    assert auto["polarity"] == "auto" and auto["classified"] == 6 and 0 <= auto["inverted"] <= 6
    assert [Path(e["file"]).name for e in auto["errors"]] == ["broken.jpg"]
    assert "inverted reading kept for" in capsys.readouterr().out
    assert main([*args, "--name", "as_is"]) == 0
    as_is = json.loads((tmp_path / "out" / "as_is.json").read_text())
    assert as_is["polarity"] == "as-is" and as_is["inverted"] is None


def test_keras_files_with_polarity_auto_keep_the_reading_closer_to_the_training_images(tmp_path: Path, monkeypatch):
    """With a stand-in model whose embedding encodes brightness and a bank of bright training images, dark files
    are read inverted and bright ones as captured."""
    import cv2

    from edge_runtime.ood import OodSpec, l2_normalize
    from edge_runtime.preprocessing import PreprocessConfig
    from test_polarity import brightness_embedding, brightness_probabilities
    from train import embeddings
    from train.predict import predict_files_with_polarity

    def fake_keras(model, pixels, preprocess, batch=16, progress=True, desc="", cache=None, feature="embedding"):
        mean_gray = pixels.reshape(len(pixels), -1).mean(1).astype(np.float64)
        return brightness_probabilities(mean_gray), brightness_embedding(mean_gray)

    monkeypatch.setattr(embeddings, "keras_outputs", fake_keras)
    bank = OodSpec(l2_normalize(brightness_embedding(np.array([190.0, 200.0, 210.0, 220.0]))), k=2)
    paths = []
    for name, level in (("dark", 40), ("bright", 200)):
        paths.append(tmp_path / f"{name}.png")
        cv2.imwrite(str(paths[-1]), np.full((20, 20), level, np.uint8))
    result = predict_files_with_polarity(None, paths, PreprocessConfig(input_size=(16, 16)), bank, "auto", False)
    assert result.inverted.tolist() == [True, False]
    assert result.probabilities.argmax(1).tolist() == [0, 0]  # both read bright: the first class


def test_the_unknown_scores_bank_reuses_the_trainings_trunk_outputs_and_equals_the_whole_model(trained_run: Path,
                                                                                               monkeypatch):
    """The bank holds the training images, their augmented training copies and their camera copies; edge-train
    leaves the trunk outputs of every one of those rows in the run's cache, so the export runs only the trained
    top, and each row equals the whole model's embedding of the same pixels."""
    from edge_runtime.preprocessing import prepare_pixels, read_image
    from train import features
    from train.augment import BANK_CAMERA_KINDS, bank_camera_copy
    from train.embeddings import keras_outputs, training_copies_ood_spec
    from train.training_run import run_feature_cache
    from train.run_dir import TrainedRun

    through_trunk = []
    traced = features.traced
    def counting(model):  # counts the images that go through the frozen trunk (train.model.submodels names it)
        run = traced(model)
        return (lambda x: through_trunk.append(len(x)) or run(x)) if model.name == "trunk" else run

    monkeypatch.setattr(features, "traced", counting)
    run = TrainedRun.open(trained_run)
    data_root, rows = run.manifest()
    model = run.load_model()
    trunk = run_feature_cache(trained_run, model)
    trunk_files = lambda: {p.name for p in (trained_run.parent / ".feature-cache").glob("*/trunk/*.npy")}  # noqa: E731
    before = trunk_files()
    ood = training_copies_ood_spec(model, trunk, data_root, rows, run.preprocess, copies=2, classes=run.classes,
                                   progress=False)
    train = [r for r in rows if r.split == "train"]
    assert {f"{r.sha256}_{c}.npy" for r in train for c in (0, 1, 2, *BANK_CAMERA_KINDS)} <= before
    assert trunk_files() == before and sum(through_trunk) == 0  # nothing went through the trunk again
    assert len(ood.bank) == (3 + len(BANK_CAMERA_KINDS)) * len(train)
    assert ood.bank_info["copies"]["count"] == 2 and ood.bank_info["camera_copies"] == list(BANK_CAMERA_KINDS)
    unit = lambda e: e.astype(np.float32) / np.linalg.norm(e.astype(np.float32), axis=1, keepdims=True)  # noqa: E731
    images = [read_image(data_root / r.path) for r in train]
    motion = 3 + BANK_CAMERA_KINDS.index("motion")  # block: as captured, 2 copies, then the camera kinds
    for block, version in ((0, lambda image, row: image),
                           (motion, lambda image, row: bank_camera_copy(image, "motion", row.sha256))):
        pixels = np.stack([prepare_pixels(version(image, r), run.preprocess) for image, r in zip(images, train)])
        whole = ood.embed(keras_outputs(model, pixels, run.preprocess, progress=False, feature=ood.feature)[1])
        rows_of_block = unit(ood.bank[block * len(train) : (block + 1) * len(train)])
        assert np.min(np.sum(whole * rows_of_block, axis=1)) > 0.999

    after = trunk_files()
    training_copies_ood_spec(model, trunk, data_root, rows, run.preprocess, copies=3, classes=run.classes,
                             progress=False)
    added = trunk_files() - after  # a copy training never drew: computed once, kept
    assert {f"{r.sha256}_3.npy" for r in train} <= trunk_files() and all(name.endswith("_3.npy") for name in added)


def test_edge_train_leaves_the_default_bank_so_that_the_export_runs_no_layer_for_it(trained_run: Path, monkeypatch):
    """The default bank's embeddings are computed once, at the end of edge-train, into the run's Keras output
    cache; the export reads them (neither the trunk nor the trained top runs) and gets the same bank and
    thresholds as computing them afresh."""
    from train import features
    from train.embeddings import training_copies_ood_spec
    from train.run_dir import TrainedRun
    from train.training_run import run_feature_cache

    run = TrainedRun.open(trained_run)
    data_root, rows = run.manifest()
    model = run.load_model()
    trunk = run_feature_cache(trained_run, model)
    fresh = training_copies_ood_spec(model, trunk, data_root, rows, run.preprocess, classes=run.classes,
                                     progress=False)
    ran = []
    traced = features.traced
    monkeypatch.setattr(features, "traced", lambda m: ran.append(m.name) or traced(m))
    stored = training_copies_ood_spec(model, trunk, data_root, rows, run.preprocess, classes=run.classes,
                                      progress=False, cache=run.output_cache())
    assert ran == []
    np.testing.assert_allclose(stored.bank, fresh.bank, atol=1e-5)
    assert stored.threshold == pytest.approx(fresh.threshold, abs=1e-6)

    more = training_copies_ood_spec(model, trunk, data_root, rows, run.preprocess, copies=3,
                                    classes=run.classes, progress=False, cache=run.output_cache())
    assert len(more.bank) > len(stored.bank) and ran  # a block the training did not leave: computed
    first = slice(0, 3 * len(fresh.bank) // 6)  # as captured and the first two copies: read, in their places
    np.testing.assert_allclose(more.bank[first] @ more.bank[first].T, fresh.bank[first] @ fresh.bank[first].T,
                               atol=2e-2)  # the same rows (each bank projects them along its own rows' directions)
