"""Which graph output the unknown score reads: the head's embedding (models exported before) or the backbone's
pooled features projected to the bank's width (the default since), told apart by width and named in the
model's metadata, so that a new kind of defect the head folds onto a known class is still caught."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_runtime.backends import Backend
from edge_runtime.classifier import Classifier
from edge_runtime.errors import MetadataError
from edge_runtime.ood import EMBEDDING, FEATURES, OodSpec, build_calibrated_spec, fit_projection, l2_normalize
from test_runtime import LABELS, SIZE, tiny_metadata

FEATURE_WIDTH, EMBEDDING_WIDTH = 16, 4
KNOWN, KNOWN_DARKER, NEW = 100, 96, 200  # the fake scene is told by the image's gray level


def features_of(level: float, rng: np.random.Generator | None = None) -> np.ndarray:
    """The backbone's pooled values: a known defect (gray 90-110) along one direction, slightly moved by the
    exposure; a new kind of defect (gray 200) along another."""
    known = np.zeros(FEATURE_WIDTH)
    known[:4] = [4.0, 3.0, 2.0, 1.0]
    new = np.zeros(FEATURE_WIDTH)
    new[8:12] = [1.0, 2.0, 3.0, 4.0]
    row = new if level > 150 else known + (level - KNOWN) * 0.01 * np.arange(FEATURE_WIDTH) / FEATURE_WIDTH
    if rng is not None:
        row = row + rng.normal(0, 0.05, FEATURE_WIDTH)
    return np.abs(row).astype(np.float32)


class TwoOutputsBackend(Backend):
    """A fake engine whose head folds everything onto class 0: its embedding is the same for a known defect and
    a new one, while the pooled features tell them apart. Outputs come in ``order`` (the device tells them apart
    by width, not position)."""

    name = "fake"

    def __init__(self, order: tuple[str, ...] = ("probabilities", EMBEDDING, FEATURES)) -> None:
        widths = {"probabilities": len(LABELS), EMBEDDING: EMBEDDING_WIDTH, FEATURES: FEATURE_WIDTH}
        super().__init__(Path("fake.tflite"), 1, (-1, SIZE, SIZE, 3), np.uint8, [widths[o] for o in order])
        self.order = order

    def _invoke(self, batch: np.ndarray) -> list[np.ndarray]:
        levels = batch.reshape(len(batch), -1).mean(1)
        named = {"probabilities": np.tile(np.array([[0.9, 0.05, 0.05]], np.float32), (len(batch), 1)),
                 EMBEDDING: np.tile(np.array([[1.0, 0.5, 0.2, 0.1]], np.float32), (len(batch), 1)),
                 FEATURES: np.stack([features_of(level) for level in levels])}
        return [named[o] for o in self.order]


def gray(level: int) -> np.ndarray:
    return np.full((24, 24), level, np.uint8)


def spec_reading(feature: str, width: int | None = None) -> OodSpec:
    """A calibrated score whose bank holds 40 training shots of the known class (10 images, 4 exposures each)."""
    rng = np.random.default_rng(0)
    levels = np.repeat(np.linspace(90, 110, 10), 4)
    rows = np.stack([features_of(level, rng) for level in levels])
    if feature == EMBEDDING:
        rows = np.tile(np.array([[1.0, 0.5, 0.2, 0.1]], np.float32), (len(levels), 1)) + rng.normal(0, 0.01, (40, 4))
    groups, labels = np.repeat(np.arange(10), 4), np.zeros(40, np.int64)
    return build_calibrated_spec(rows, groups, labels, 1, k=2, quantile=0.95, per_class=False, feature=feature,
                                 width=width)


def classifier(spec: OodSpec, order: tuple[str, ...] = ("probabilities", EMBEDDING, FEATURES)) -> Classifier:
    metadata = tiny_metadata("tflite_int8", dtype="uint8", in_graph=True)
    metadata.extra["ood"] = spec.to_dict()
    return Classifier(TwoOutputsBackend(order), metadata)


def test_the_score_on_the_pooled_features_catches_a_new_defect_the_head_folds_onto_a_known_class():
    model = classifier(spec_reading(FEATURES, width=8))
    known, darker, new = model.predict_batch([gray(KNOWN), gray(KNOWN_DARKER), gray(NEW)])
    assert not known.unknown and not darker.unknown  # a darker shot of the known defect stays known
    assert new.unknown and new.predicted == known.predicted  # the head names the same class; the score does not
    blind = classifier(spec_reading(EMBEDDING)).predict(gray(NEW))
    assert not blind.unknown  # the same new defect, scored on the head's embedding, passes as known


def test_outputs_are_named_by_width_whatever_their_order():
    spec = spec_reading(FEATURES, width=8)
    image = np.full((1, SIZE, SIZE, 3), NEW, np.uint8)
    for order in [("probabilities", EMBEDDING, FEATURES), (FEATURES, "probabilities", EMBEDDING)]:
        outputs = classifier(spec, order).device_outputs(image)
        assert outputs[FEATURES].shape == (1, FEATURE_WIDTH) and outputs[EMBEDDING].shape == (1, EMBEDDING_WIDTH)
    old = spec_reading(EMBEDDING)
    assert classifier(old).predict(gray(KNOWN)).ood_score == pytest.approx(
        float(old.score(np.array([[1.0, 0.5, 0.2, 0.1]]), np.array([0]))[0]), abs=1e-6)


def test_a_score_whose_width_matches_no_output_names_the_file_and_the_fix():
    spec = spec_reading(FEATURES)  # no projection: the bank is 16 wide
    narrow = OodSpec(spec.bank[:, :12], k=2, threshold=spec.threshold, feature=FEATURES)
    with pytest.raises(MetadataError, match="fake.tflite.*re-export"):
        classifier(narrow).predict(gray(KNOWN))


def test_the_projection_and_the_feature_are_stored_in_the_metadata_and_old_metadata_reads_the_embedding():
    spec = spec_reading(FEATURES, width=8)
    assert spec.feature == FEATURES and spec.projection.shape == (FEATURE_WIDTH, 8) and spec.bank.shape[1] == 8
    assert spec.width == FEATURE_WIDTH  # the width of the output it reads, not of its bank
    again = OodSpec.from_dict(spec.to_dict())
    assert again.feature == FEATURES
    np.testing.assert_array_equal(again.projection, spec.projection)  # stored as float16: computed with that
    rows = np.stack([features_of(level) for level in (KNOWN, KNOWN_DARKER, NEW)])
    np.testing.assert_allclose(again.score(rows, np.zeros(3, int)), spec.score(rows, np.zeros(3, int)), atol=1e-6)
    legacy = {k: v for k, v in spec_reading(EMBEDDING).to_dict().items() if k not in ("feature", "projection_npy_base64")}
    assert OodSpec.from_dict(legacy).feature == EMBEDDING and OodSpec.from_dict(legacy).projection is None
    with pytest.raises(ValueError, match="knows"):
        OodSpec(spec.bank, k=2, feature="logits")
    with pytest.raises(ValueError, match="projection"):
        OodSpec(spec.bank, k=2, feature=FEATURES, projection=np.zeros((FEATURE_WIDTH, 3), np.float32))


def test_a_projection_onto_the_rows_own_directions_keeps_their_cosines():
    rng = np.random.default_rng(3)
    rows = l2_normalize(np.abs(rng.normal(size=(50, 3))) @ rng.normal(size=(3, 32)))  # rank 3 in 32 dimensions
    projection = fit_projection(rows, 3)
    assert projection.shape == (32, 3)
    np.testing.assert_allclose(rows @ rows.T, l2_normalize(rows @ projection) @ l2_normalize(rows @ projection).T,
                               atol=1e-5)
    with pytest.raises(ValueError, match="width 40"):
        fit_projection(rows, 40)


def test_the_export_and_the_bank_rebuild_offer_the_choice():
    from export.cli import build_export_parser as export_parser
    from export.unknown_bank import build_parser as rebuild_parser

    from train.embeddings import DEFAULT_OOD_QUANTILE

    args = export_parser().parse_args(["runs/x"])
    assert args.unknown_feature == FEATURES
    assert args.unknown_rate == pytest.approx(1.0 - DEFAULT_OOD_QUANTILE)  # the documented default operating point
    assert export_parser().parse_args(["runs/x", "--unknown-feature", EMBEDDING]).unknown_feature == EMBEDDING
    rebuild = rebuild_parser().parse_args(["m.onnx", "--data", "d", "--out", "o.onnx"])
    assert rebuild.feature is None  # keeps the output the model's score reads


def test_a_bank_with_fewer_rows_than_the_width_is_projected_onto_its_own_span():
    rng = np.random.default_rng(5)
    rows = np.abs(rng.normal(size=(12, FEATURE_WIDTH))).astype(np.float32)
    spec = build_calibrated_spec(rows, np.arange(12) // 2, np.zeros(12, np.int64), 1, k=1, quantile=0.9,
                                 per_class=False, feature=FEATURES, width=14)
    assert spec.projection.shape == (FEATURE_WIDTH, 12) and spec.bank.shape == (12, 12)
    np.testing.assert_allclose(spec.score(rows[:4]), 0.0, atol=2e-3)  # each row is its own nearest neighbour
