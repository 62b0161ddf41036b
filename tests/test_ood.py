"""The unknown answer: a k-nearest-neighbour score on the embedding, its thresholds from in-distribution images
only (the training split and its camera-changed copies, or validation), the per-class rule, the operating point
(rate table, --unknown-rate), its storage in model metadata, and the ``unknown`` label in predictions."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.ood import OodSpec, auroc, build_spec, knn_cosine_score, threshold_from


def clusters(rng: np.random.Generator, n: int, dim: int = 16, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    centres = np.eye(classes, dim) * 10
    labels = rng.integers(0, classes, n)
    return centres[labels] + rng.normal(0, 1, (n, dim)), labels


def test_score_is_zero_for_a_training_embedding_and_grows_with_distance():
    rng = np.random.default_rng(0)
    train, _ = clusters(rng, 60)
    spec = build_spec(train, train[:10], k=1)
    near = spec.score(train[:3])
    far = spec.score(-train[:3])
    assert np.allclose(near, 0.0, atol=1e-3)
    assert np.all(far > 0.5)


def test_kth_neighbour_is_used():
    bank = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    query = np.array([[1.0, 0.0]])
    assert knn_cosine_score(query, bank, 1)[0] == pytest.approx(0.0)
    assert knn_cosine_score(query, bank, 2)[0] == pytest.approx(1.0)
    assert knn_cosine_score(query, bank, 3)[0] == pytest.approx(2.0)


def test_threshold_is_the_validation_quantile_and_uses_nothing_else():
    validation_scores = np.linspace(0.0, 1.0, 101)
    assert threshold_from(validation_scores, 0.95) == pytest.approx(0.955)  # between 0.95 and the next, 0.96
    assert threshold_from(validation_scores, 1.0) == pytest.approx(1.0)
    assert np.mean(validation_scores <= threshold_from(validation_scores, 0.95)) == pytest.approx(96 / 101)
    assert threshold_from(np.array([0.2, 0.2, 0.2]), 0.5) == pytest.approx(0.2)  # nothing above: the score itself
    rng = np.random.default_rng(1)
    train, _ = clusters(rng, 80)
    validation, _ = clusters(rng, 20)
    spec = build_spec(train, validation, k=3, quantile=0.9)
    # the threshold is a function of the training and validation embeddings only
    assert spec.threshold == pytest.approx(threshold_from(spec.score(validation), 0.9))
    assert np.mean(spec.score(validation) <= spec.threshold) >= 0.9


def test_threshold_refuses_empty_or_bad_input():
    with pytest.raises(ValueError, match="no validation scores"):
        threshold_from(np.array([]), 0.95)
    with pytest.raises(ValueError, match="quantile"):
        threshold_from(np.array([0.1]), 0.0)


def test_spec_round_trips_through_metadata_json():
    rng = np.random.default_rng(2)
    train, _ = clusters(rng, 40)
    spec = build_spec(train, train[:8], k=2, quantile=0.8)
    again = OodSpec.from_dict(spec.to_dict())
    assert again.k == 2 and again.quantile == 0.8 and again.threshold == spec.threshold
    np.testing.assert_allclose(again.score(train[:5]), spec.score(train[:5]), atol=1e-6)


def test_malformed_spec_is_refused():
    with pytest.raises(ValueError):
        OodSpec(np.zeros((2, 4)), k=3)
    with pytest.raises(ValueError, match="kind"):
        OodSpec(np.zeros((4, 4)), kind="mahalanobis")


def test_auroc_separates_and_handles_ties():
    assert auroc(np.array([0.1, 0.2]), np.array([0.8, 0.9])) == 1.0
    assert auroc(np.array([0.8, 0.9]), np.array([0.1, 0.2])) == 0.0
    assert auroc(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 0.5
    assert np.isnan(auroc(np.array([]), np.array([1.0])))


def test_far_clusters_get_high_auroc():
    rng = np.random.default_rng(3)
    train, _ = clusters(rng, 200)
    test, _ = clusters(rng, 50)
    spec = build_spec(train, train[:20])
    outliers = rng.normal(0, 1, (50, 16)) - 10.0
    assert auroc(spec.score(test), spec.score(outliers)) > 0.95


def test_export_threshold_reads_only_the_neu_validation_scores():
    from pathlib import Path

    from export.checks import EvalImage, unknown_threshold

    items = ([EvalImage(Path(f"v{i}"), "neu", "a", split="val") for i in range(20)]
             + [EvalImage(Path(f"t{i}"), "neu", "a", split="test") for i in range(5)]
             + [EvalImage(Path(f"x{i}"), "xsdd_other", None) for i in range(5)])
    scores = np.concatenate([np.linspace(0.0, 0.19, 20), np.full(5, 0.5), np.full(5, 0.9)])
    threshold = unknown_threshold(items, scores, 0.95)
    assert threshold == pytest.approx(threshold_from(scores[:20], 0.95))
    moved = scores.copy()
    moved[20:] = [-1.0] * 5 + [5.0] * 5  # test and other-plant scores changed: the threshold must not move
    assert unknown_threshold(items, moved, 0.95) == threshold


def test_artifact_threshold_is_the_float_threshold_moved_by_the_median_validation_shift():
    """Only NEU validation images are read; one far-off validation score cannot drag the threshold."""
    from pathlib import Path

    from export.checks import EvalImage, matched_threshold

    items = ([EvalImage(Path(f"v{i}"), "neu", "a", split="val") for i in range(9)]
             + [EvalImage(Path(f"t{i}"), "neu", "a", split="test") for i in range(3)]
             + [EvalImage(Path(f"x{i}"), "xsdd", "a") for i in range(3)])
    reference = np.linspace(0.01, 0.09, 15)
    artifact = reference + 0.002
    artifact[8] += 0.5  # the highest validation score jumps: a quantile would move, the median shift does not
    assert matched_threshold(items, reference, artifact, 0.08) == pytest.approx(0.082)
    moved = artifact.copy()
    moved[9:] = [-1.0, 3.0, 9.0, -5.0, 0.0, 7.0]  # test and other-plant scores are never read
    assert matched_threshold(items, reference, moved, 0.08) == pytest.approx(0.082)
    with pytest.raises(ValueError, match="validation"):
        matched_threshold(items[9:], reference[9:], artifact[9:], 0.08)


# --- camera-changed bank, leave-one-out calibration, per-class rule, operating point -------------------------

from edge_runtime.ood import RATES, build_calibrated_spec, calibration_scores  # noqa: E402


def test_calibration_leaves_out_every_copy_of_the_same_image():
    """A row's own copies would make it look seen before (score ~0); the calibration must not count them."""
    rng = np.random.default_rng(4)
    images = l2(rng.normal(0, 1, (30, 8)))
    copies = l2(images + rng.normal(0, 0.01, images.shape))
    bank = np.concatenate([images, copies])
    groups = np.tile(np.arange(30), 2)
    with_copies = calibration_scores(bank, np.arange(60), k=1)  # each row its own group: its copy is found
    leave_out = calibration_scores(bank, groups, k=1)
    assert with_copies.max() < 0.01 and leave_out.min() > 0.1
    reference = knn_cosine_score(images[:1], np.delete(bank, [0, 30], axis=0), 1)
    assert leave_out[0] == pytest.approx(reference[0], abs=1e-5)
    with pytest.raises(ValueError, match="groups"):
        calibration_scores(bank, groups[:5], k=1)


def l2(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def two_classes(rng: np.random.Generator, n: int = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class 0 tight, class 1 spread out (like NEU's patches and pitted_surface); one group per row."""
    tight = np.eye(1, 16)[0] * 10 + rng.normal(0, 0.3, (n, 16))
    wide = np.eye(1, 16, 1)[0] * 10 + rng.normal(0, 2.0, (n, 16))
    return np.concatenate([tight, wide]), np.repeat([0, 1], n), np.arange(2 * n)


def test_calibrated_thresholds_come_from_the_bank_alone_per_class():
    rng = np.random.default_rng(5)
    embeddings, labels, groups = two_classes(rng)
    spec = build_calibrated_spec(embeddings, groups, labels, 2, k=2, quantile=0.9)
    # inputs: the thresholds are the quantiles of the bank's own leave-one-out scores, nothing else is read
    scores = calibration_scores(spec.bank, groups, 2, labels)
    np.testing.assert_array_equal(spec.bank_labels, labels)
    assert spec.threshold == pytest.approx(threshold_from(scores, 0.9))
    for c in (0, 1):
        assert spec.threshold + spec.class_offsets[c] == pytest.approx(threshold_from(scores[labels == c], 0.9))
    assert spec.class_offsets[1] > 0 > spec.class_offsets[0]  # the spread-out class gets the higher threshold
    # each class keeps (at least) its quantile of calibration images known under its own threshold
    for c in (0, 1):
        relative = scores[labels == c] - spec.class_offsets[c]
        assert np.mean(relative <= spec.threshold) >= 0.9
    assert spec.rate == pytest.approx(0.1) and spec.bank_info is None


def test_per_class_rule_decides_by_the_predicted_class():
    rng = np.random.default_rng(6)
    embeddings, labels, groups = two_classes(rng)
    spec = build_calibrated_spec(embeddings, groups, labels, 2, k=2, quantile=0.95, class_neighbours=False)
    raw_threshold_1 = spec.threshold + spec.class_offsets[1]
    raw_threshold_0 = spec.threshold + spec.class_offsets[0]
    # a query whose raw score lies between the two class thresholds
    direction = l2(rng.normal(0, 1, (200, 16)))
    base = l2(embeddings[labels == 1][:1])
    for step in np.linspace(0.01, 1.0, 200):
        query = base + step * direction[:1]
        raw = spec.score(query)[0]
        if raw_threshold_0 < raw < raw_threshold_1:
            break
    else:
        pytest.fail("no query between the two class thresholds")
    assert spec.score(query, np.array([1]))[0] <= spec.threshold  # known as the spread-out class
    assert spec.score(query, np.array([0]))[0] > spec.threshold  # unknown as the tight class
    assert spec.score(query, np.array([7]))[0] == pytest.approx(raw)  # a class the rule does not know: plain score
    one_rule = build_calibrated_spec(embeddings, groups, labels, 2, k=2, quantile=0.95, per_class=False,
                                     class_neighbours=False)
    assert one_rule.class_offsets is None and "classes" not in one_rule.rate_table
    assert one_rule.score(query, np.array([0]))[0] == pytest.approx(raw)


def test_neighbours_of_the_predicted_class_flag_an_image_pushed_to_a_wrong_class():
    """An image of class 1 that a camera change made the classifier call class 0: near class 1's training
    images (plain score low), far from class 0's: unknown instead of confidently wrong."""
    rng = np.random.default_rng(9)
    embeddings, labels, groups = two_classes(rng)
    spec = build_calibrated_spec(embeddings, groups, labels, 2, k=2, quantile=0.95)
    plain = build_calibrated_spec(embeddings, groups, labels, 2, k=2, quantile=0.95, per_class=False,
                                  class_neighbours=False)
    image = embeddings[labels == 1][:1] + rng.normal(0, 0.1, (1, 16))
    assert spec.score(image, np.array([1]))[0] <= spec.threshold  # called its own class: known
    assert spec.score(image, np.array([0]))[0] > spec.threshold  # called the wrong class: unknown
    assert plain.score(image, np.array([0]))[0] <= plain.threshold  # the plain neighbours do not see it
    assert knn_cosine_score(image, spec.bank, 2, spec.bank_labels, np.array([5]))[0] == pytest.approx(
        knn_cosine_score(image, spec.bank, 2)[0])  # a class without bank rows: all rows
    with pytest.raises(ValueError, match="bank labels"):
        OodSpec(spec.bank, bank_labels=np.zeros(3))


def test_operating_point_moves_with_the_stored_rate_table():
    rng = np.random.default_rng(7)
    embeddings, labels, groups = two_classes(rng, 100)
    spec = build_calibrated_spec(embeddings, groups, labels, 2, k=2, quantile=0.98)
    assert spec.at_rate(0.02).threshold == pytest.approx(spec.threshold)
    assert spec.at_rate(0.02).class_offsets == pytest.approx(spec.class_offsets, abs=1e-6)
    strict, loose = spec.at_rate(0.1), spec.at_rate(0.005)
    assert strict.threshold < spec.threshold < loose.threshold and strict.rate == pytest.approx(0.1)
    scores = calibration_scores(spec.bank, groups, 2, labels)
    for c in (0, 1):
        relative = scores[labels == c] - strict.class_offsets[c]
        assert np.mean(relative > strict.threshold) == pytest.approx(0.1, abs=0.02)
    # an artifact whose threshold was moved from float's (edge-export's matched shift) keeps that shift
    from dataclasses import replace

    shifted = replace(spec, threshold=spec.threshold + 0.01)
    assert shifted.at_rate(0.1).threshold == pytest.approx(strict.threshold + 0.01)
    with pytest.raises(ValueError, match="range"):
        spec.at_rate(0.5)
    with pytest.raises(ValueError, match="rate table"):
        OodSpec(spec.bank, k=2, threshold=0.1).at_rate(0.02)
    assert min(RATES) <= 0.002 and max(RATES) >= 0.2


def test_new_fields_round_trip_and_old_metadata_still_loads():
    rng = np.random.default_rng(8)
    embeddings, labels, groups = two_classes(rng, 30)
    spec = build_calibrated_spec(embeddings, groups, labels, 2, k=2, quantile=0.98, bank_info={"images": 60})
    again = OodSpec.from_dict(spec.to_dict())
    assert again.class_offsets == pytest.approx(spec.class_offsets) and again.bank_info == {"images": 60}
    assert again.at_rate(0.05).threshold == pytest.approx(spec.at_rate(0.05).threshold, abs=1e-5)
    np.testing.assert_array_equal(again.bank_labels, spec.bank_labels)
    np.testing.assert_allclose(again.score(embeddings[:5], labels[:5]), spec.score(embeddings[:5], labels[:5]), atol=1e-6)
    new_fields = ("class_offsets", "rate_table", "bank_info", "bank_labels")
    legacy = OodSpec.from_dict({key: value for key, value in spec.to_dict().items() if key not in new_fields})
    assert legacy.class_offsets is None and legacy.rate_table is None and legacy.bank_labels is None
    assert legacy.threshold == spec.threshold  # metadata written before these fields existed still loads
    np.testing.assert_allclose(legacy.score(embeddings[:3], labels[:3]), spec.score(embeddings[:3]), atol=1e-6)
    with pytest.raises(ValueError, match="rate table"):
        OodSpec(spec.bank, class_offsets=(0.0, 0.0), rate_table={"rates": [0.01, 0.02], "all": [0.1, 0.2],
                                                                 "classes": [[0.1, 0.2]]})
    dropped = spec.with_threshold(np.linspace(0, 1, 11), 0.9)  # a new calibration drops the old per-class rule
    assert dropped.class_offsets is None and dropped.rate_table is None


# A synthetic camera: images of stripes (class 0) and spots (class 1); the fake "network" sees the texture
# and, like the real one, also the exposure. A darker, noisier shot of stripes must stay known once the bank
# holds camera-changed copies; a new texture (a checkerboard) must stay unknown.

SIDE = 32


def stripes(phase: int) -> np.ndarray:
    rows = 120 + 60 * (np.sin((np.arange(SIDE) + phase) * 2 * np.pi / 8) > 0)
    return np.repeat(rows[:, None], SIDE, axis=1).astype(np.uint8)


def spots(phase: int) -> np.ndarray:
    yy, xx = np.mgrid[0:SIDE, 0:SIDE]
    return (120 + 80 * (((yy + phase) % 10 < 3) & ((xx + 2 * phase) % 10 < 3))).astype(np.uint8)


def checkerboard(phase: int) -> np.ndarray:
    yy, xx = np.mgrid[0:SIDE, 0:SIDE]
    return (120 + 60 * (((yy + phase) // 4 + xx // 4) % 2)).astype(np.uint8)


def texture_embedding(pixels: np.ndarray) -> np.ndarray:
    """Row-, column- and diagonal-gradient energy, and the mean gray level (what a camera change moves)."""
    x = np.asarray(pixels, np.float64)
    x = x.mean(axis=-1) if x.ndim == 4 else x
    rows = np.abs(np.diff(x, axis=1)).mean(axis=(1, 2))
    cols = np.abs(np.diff(x, axis=2)).mean(axis=(1, 2))
    diag = np.abs(x[:, 1:, 1:] - x[:, :-1, :-1]).mean(axis=(1, 2))
    level = x.mean(axis=(1, 2))
    return np.stack([rows, cols, diag, level / 4.0, np.full_like(level, 20.0)], 1).astype(np.float32)


def test_a_darker_noisier_shot_of_a_known_class_stays_known_and_a_new_class_is_unknown():
    from edge_runtime.preprocessing import PreprocessConfig
    from train.embeddings import BankCameras, camera_bank_spec

    preprocess = PreprocessConfig(input_size=(SIDE, SIDE))
    images = [stripes(p) for p in range(8)] + [spots(p) for p in range(8)]
    labels = ["crazing"] * 8 + ["inclusion"] * 8
    classes = ["crazing", "inclusion"]

    def embed(pixels: np.ndarray) -> np.ndarray:
        return texture_embedding(pixels)

    clean = camera_bank_spec(embed, images, labels, classes, preprocess, BankCameras(copies=0), k=2, quantile=0.95,
                             progress=False)
    cameras = BankCameras(copies=6, gain_range=(0.6, 1.5), blur_sigma_max=1.0, noise_std_max=6.0, seed=3)
    banked = camera_bank_spec(embed, images, labels, classes, preprocess, cameras, k=2, quantile=0.95, progress=False)
    assert len(banked.bank) == 7 * len(images) and banked.bank_info["cameras"]["copies"] == 6

    rng = np.random.default_rng(11)
    darker = np.clip(stripes(3).astype(np.float64) * 0.7 + rng.normal(0, 4, (SIDE, SIDE)), 0, 255).astype(np.uint8)
    new = checkerboard(1)
    query = embed(np.stack([darker, new]))
    classes_of = np.array([0, 0])  # the fake classifier's best class for both
    assert clean.score(query, classes_of)[0] > clean.threshold  # without camera copies: the darker shot is unknown
    known, unknown = banked.score(query, classes_of) > banked.threshold
    assert not known and unknown


def test_bank_camera_copies_are_seeded_and_change_the_image():
    from train.embeddings import BankCameras

    cameras = BankCameras(copies=2, seed=0)
    image = stripes(0)
    first, again, other = cameras.copy(image, 5, 0), cameras.copy(image, 5, 0), cameras.copy(image, 5, 1)
    assert first.dtype == np.uint8 and first.shape == image.shape
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, image) and not np.array_equal(first, other)
    color = cameras.copy(np.dstack([image] * 3), 5, 0)
    assert color.shape == (SIDE, SIDE, 3)


def test_classifier_and_edge_classify_move_the_operating_point():
    import inspect

    from edge_runtime.classifier import Classifier
    from edge_runtime.cli import build_parser, run
    from edge_runtime.errors import MetadataError
    from test_polarity import BrightnessBackend, brightness_embedding, gray
    from test_runtime import tiny_metadata

    bank = l2(brightness_embedding(np.array([190.0, 200.0, 210.0, 220.0, 230.0])))
    table = {"rates": [0.01, 0.05, 0.2], "all": [0.5, 0.3, 1e-4]}
    metadata = tiny_metadata("tflite_int8", dtype="uint8", in_graph=True)
    metadata.extra["ood"] = OodSpec(bank, k=1, threshold=0.3, quantile=0.95, rate_table=table).to_dict()
    model = Classifier(BrightnessBackend(), metadata)
    image = gray(140)  # darker than every training image
    score = model.predict(image).ood_score
    assert 1e-4 < score < 0.3 and model.unknown_rate == pytest.approx(0.05)
    assert not model.predict(image).unknown
    model.unknown_rate = 0.2
    assert model.ood.threshold == pytest.approx(1e-4) and model.predict(image).unknown
    with pytest.raises(ValueError, match="range"):
        model.unknown_rate = 0.5

    old = tiny_metadata("tflite_int8", dtype="uint8", in_graph=True)
    old.extra["ood"] = OodSpec(bank, k=1, threshold=0.3).to_dict()
    with pytest.raises(MetadataError, match="re-export"):
        Classifier(BrightnessBackend(), old).unknown_rate = 0.02

    assert build_parser().parse_args(["a.png", "--unknown-rate", "0.01"]).unknown_rate == 0.01
    assert inspect.signature(run).parameters["unknown_rate"].default is None


def test_the_exported_bank_and_thresholds_read_only_the_training_split(monkeypatch, tmp_path):
    from edge_runtime.preprocessing import PreprocessConfig
    from train import embeddings, features
    from train.split import ManifestRow

    rows = ([ManifestRow(f"a/train{i}.png", "crazing", "train", "0" * 64) for i in range(6)]
            + [ManifestRow(f"b/train{i}.png", "inclusion", "train", "0" * 64) for i in range(6)]
            + [ManifestRow(f"a/val{i}.png", "crazing", "val", "0" * 64) for i in range(3)]
            + [ManifestRow(f"b/test{i}.png", "inclusion", "test", "0" * 64) for i in range(3)])
    read = []

    def fake_read(path):
        read.append(str(path))
        name = str(path)
        return stripes(len(read)) if "/a/" in name else spots(len(read))

    def fake_outputs(model, pixels, preprocess, **kwargs):
        return np.zeros((len(pixels), 2), np.float32), texture_embedding(pixels)

    monkeypatch.setattr(features, "read_image", fake_read)
    monkeypatch.setattr(embeddings, "keras_outputs", fake_outputs)
    spec = embeddings.training_copies_ood_spec(None, None, Path("/data"), rows,
                                               PreprocessConfig(input_size=(SIDE, SIDE)), copies=2, k=2, quantile=0.9,
                                               progress=False, classes=["crazing", "inclusion"], camera_kinds=())
    assert sorted(set(read)) == sorted(f"/data/{r.path}" for r in rows if r.split == "train") and len(read) == 12 * 3
    assert len(spec.bank) == 12 * 3 and spec.k == 2 and len(spec.class_offsets) == 2
    assert spec.bank_info["images"] == 12 and spec.bank_info["split"] == "train"
    assert spec.bank_info["copies"]["count"] == 2 and spec.bank_info["copies"]["augment"]["camera"]


def stripes_and_spots_bank(monkeypatch, tmp_path, copies: int = 0, camera_kinds: tuple[str, ...] = ()):
    """The exported bank's rule on 8 training images of stripes (crazing) and 8 of spots (inclusion), with the
    texture embedding standing in for the network."""
    from edge_runtime.preprocessing import PreprocessConfig
    from train import embeddings, features
    from train.split import ManifestRow

    rows = ([ManifestRow(f"stripes/{i}.png", "crazing", "train", f"{i:064x}") for i in range(8)]
            + [ManifestRow(f"spots/{i}.png", "inclusion", "train", f"{i + 8:064x}") for i in range(8)])
    monkeypatch.setattr(features, "read_image", lambda path: (stripes if "stripes" in str(path) else spots)(
        int(Path(path).stem)))
    monkeypatch.setattr(embeddings, "keras_outputs", lambda model, pixels, preprocess, **kwargs: (
        np.zeros((len(pixels), 2), np.float32), texture_embedding(pixels)))
    return embeddings.training_copies_ood_spec(None, None, Path("/data"), rows,
                                               PreprocessConfig(input_size=(SIDE, SIDE)), copies=copies, k=2,
                                               quantile=0.95, classes=["crazing", "inclusion"], progress=False,
                                               camera_kinds=camera_kinds)


def test_with_augmented_training_copies_in_the_bank_a_lower_contrast_shot_stays_known_and_a_new_class_does_not(
        monkeypatch, tmp_path):
    """The exported bank's copies are the training recipe's own augmentations (train/augment.py)."""
    clean, augmented = (stripes_and_spots_bank(monkeypatch, tmp_path, copies) for copies in (0, 6))
    assert len(augmented.bank) == 7 * 16
    image = stripes(3).astype(np.float64)
    flatter = ((image - image.mean()) * 0.6 + image.mean()).astype(np.uint8)  # contrast -40 %, as with glare
    query = texture_embedding(np.stack([flatter, checkerboard(1)]))
    best = np.array([0, 0])  # the fake classifier's best class for both
    assert clean.score(query, best)[0] > clean.threshold  # clean bank only: the flatter shot is unknown
    known, unknown = augmented.score(query, best) > augmented.threshold
    assert not known and unknown


def test_bank_camera_copies_are_seeded_and_do_what_their_names_say():
    from train.augment import BANK_CAMERA_KINDS, bank_camera_copy

    flat = np.full((40, 48), 128, np.uint8)
    sha = [hashlib.sha256(bytes([i])).hexdigest() for i in range(20)]  # an image's content hash seeds its copies
    textured = np.random.default_rng(0).integers(0, 256, (40, 48)).astype(np.uint8)
    for kind in BANK_CAMERA_KINDS:
        assert np.array_equal(bank_camera_copy(textured, kind, sha[5]), bank_camera_copy(textured, kind, sha[5]))
        assert not np.array_equal(bank_camera_copy(textured, kind, sha[5]), bank_camera_copy(textured, kind, sha[6]))
        assert bank_camera_copy(np.dstack([flat] * 3), kind, sha[5]).shape == (40, 48, 3)
    noisy = [bank_camera_copy(flat, "noise", h).std() for h in sha]
    assert max(noisy) > 6 and min(noisy) < 3  # sigma drawn from 0 to 10 gray levels
    banded = bank_camera_copy(flat, "banding", sha[4]).astype(float) - 128
    assert banded.std(axis=1).mean() < banded.std(axis=0).mean()  # offsets constant along each row, mostly
    dot = np.zeros((41, 41), np.uint8)
    dot[20, 20] = 255
    for h in sha[:10]:
        extent = sorted(np.ptp(np.nonzero(bank_camera_copy(dot, "motion", h) > 8), axis=1))
        assert extent[0] <= 2  # a horizontal or vertical streak (or a dot)
    with pytest.raises(ValueError, match="glare"):
        bank_camera_copy(flat, "glare", sha[0])


def test_a_noise_copy_in_the_bank_keeps_a_noisy_shot_known_and_a_new_class_unknown(monkeypatch, tmp_path):
    plain, with_noise = (stripes_and_spots_bank(monkeypatch, tmp_path, camera_kinds=kinds)
                         for kinds in ((), ("noise",)))
    assert len(with_noise.bank) == 2 * 16 and with_noise.bank_info["camera_copies"] == ["noise"]
    image = stripes(3).astype(np.float64)
    noisy = np.clip(image + np.random.default_rng(1).normal(0, 6, image.shape), 0, 255).astype(np.uint8)
    query = texture_embedding(np.stack([noisy, checkerboard(1)]))
    best = np.array([0, 0])
    assert plain.score(query, best)[0] > plain.threshold  # without the copy the noisy shot is unknown
    known, unknown = with_noise.score(query, best) > with_noise.threshold
    assert not known and unknown
