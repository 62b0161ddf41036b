"""--tiles: cutting large frames into windows and combining the windows' answers."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.tiles import TileSpec, combine, split


def covered(boxes, height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    for x0, y0, x1, y1 in boxes:
        mask[y0:y1, x0:x1] = True
    return mask


def test_auto_cuts_a_line_scan_frame_into_squares_of_its_short_edge():
    boxes = TileSpec.parse("auto").boxes(1000, 2048)
    assert boxes == [(0, 0, 1000, 1000), (524, 0, 1524, 1000), (1048, 0, 2048, 1000)]
    assert covered(boxes, 1000, 2048).all()


@pytest.mark.parametrize("spec, height, width, count", [
    ("1x4", 1000, 2048, 4), ("2x3", 1000, 2048, 6), ("512", 1000, 2048, 2 * 4), ("300", 200, 200, 1),
    ("auto", 200, 200, 1), ("3x3", 10, 10, 9),
])
def test_every_spec_covers_the_whole_frame_with_equal_windows(spec: str, height: int, width: int, count: int):
    boxes = TileSpec.parse(spec).boxes(height, width)
    assert len(boxes) == count
    assert covered(boxes, height, width).all()
    assert len({(x1 - x0, y1 - y0) for x0, y0, x1, y1 in boxes}) == 1
    assert all(0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height for x0, y0, x1, y1 in boxes)


def test_split_returns_the_windows_of_the_image():
    image = np.arange(100 * 300, dtype=np.int32).reshape(100, 300)
    windows = split(image, TileSpec.parse("auto").boxes(100, 300))
    assert [w.shape for w in windows] == [(100, 100)] * 3
    assert windows[1][0, 0] == image[0, 100]


def test_bad_specs_are_refused_with_the_accepted_forms():
    for text in ("3by2", "", "-5", "0x2"):
        with pytest.raises(ValueError):
            TileSpec.parse(text)
    with pytest.raises(ValueError, match="aggregation"):
        TileSpec.parse("auto", method="median")


def test_max_names_the_frame_after_its_most_confident_known_window():
    probabilities = np.array([[0.9, 0.1, 0.0], [0.2, 0.1, 0.7], [0.1, 0.8, 0.1]])
    result = combine(probabilities, "max")
    np.testing.assert_allclose(result.probabilities, np.array([0.9, 0.8, 0.7]) / 2.4, rtol=1e-6)
    assert result.known == 3 and result.best_tile == 0


def test_unknown_windows_are_left_out_and_the_frame_score_is_the_lowest():
    probabilities = np.array([[0.9, 0.1], [0.3, 0.7], [0.4, 0.6]])
    scores = np.array([0.9, 0.1, 0.2])
    result = combine(probabilities, "mean", scores, threshold=0.5)
    np.testing.assert_allclose(result.probabilities, [0.35, 0.65], rtol=1e-6)
    assert result.known == 2 and result.ood_score == pytest.approx(0.1) and result.best_tile == 1


def test_a_frame_with_no_known_window_is_unknown_and_still_has_probabilities():
    probabilities = np.array([[0.9, 0.1], [0.3, 0.7]])
    result = combine(probabilities, "max", np.array([0.8, 0.9]), threshold=0.5)
    assert result.known == 0 and result.ood_score == pytest.approx(0.8)
    np.testing.assert_allclose(result.probabilities.sum(), 1.0, rtol=1e-6)


def test_classifier_tiles_large_frames(tiny_edge_models):
    from edge_runtime.classifier import Classifier

    classifier = Classifier.load(tiny_edge_models.onnx, engine="onnxruntime")
    frame = np.random.default_rng(0).integers(0, 256, (40, 120), dtype=np.uint8)
    whole = classifier.predict(frame)
    classifier.tiles = TileSpec.parse("auto")
    tiled = classifier.predict(frame)
    windows = classifier.predict_batch(split(frame, classifier.tiles.boxes(40, 120)))
    expected = np.max([w.probabilities for w in windows], axis=0)
    np.testing.assert_allclose(tiled.probabilities, expected / expected.sum(), rtol=1e-5)
    assert tiled.inference_ms > 0 and whole.label in tiny_edge_models.labels
