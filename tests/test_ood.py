"""The unknown answer: a k-nearest-neighbour score on the embedding, its threshold from validation only,
its storage in model metadata, and the ``unknown`` label in predictions and edge-classify records."""

from __future__ import annotations

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
