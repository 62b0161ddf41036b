"""--tiles: cutting whole line-scan frames into windows and combining the windows' answers into one."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.tiles import TileSpec, aggregate, combine, split, split_tiles, tile_boxes


def covered(boxes, height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    for x0, y0, x1, y1 in boxes:
        mask[y0:y1, x0:x1] = True
    return mask


def starts(boxes, axis: int) -> list[int]:
    return sorted({box[axis] for box in boxes})


# --- where the windows go ------------------------------------------------------------------------------------


def test_a_line_scan_frame_gets_squares_of_its_height_spread_from_edge_to_edge():
    # n = 1 + ceil((2048 - 1000) / 1000) = 3 windows, x = round(i * 1048 / 2)
    assert tile_boxes(1000, 2048) == [(0, 0, 1000, 1000), (524, 0, 1524, 1000), (1048, 0, 2048, 1000)]
    assert TileSpec.parse("auto").boxes(1000, 2048) == tile_boxes(1000, 2048)


def test_the_default_tile_is_the_short_side_also_for_portrait_frames():
    assert tile_boxes(2048, 1000) == [(0, 0, 1000, 1000), (0, 524, 1000, 1524), (0, 1048, 1000, 2048)]


def test_overlap_adds_windows_only_when_the_even_spread_overlaps_too_little():
    assert starts(tile_boxes(1000, 2048, overlap=0.25), 0) == [0, 524, 1048]  # already overlap 476 >= 250
    assert starts(tile_boxes(1000, 2048, overlap=0.5), 0) == [0, 349, 699, 1048]


@pytest.mark.parametrize("height, width", [(1000, 2048), (200, 200), (37, 301), (480, 640), (1, 50)])
@pytest.mark.parametrize("tile", [None, 8, 64, 100, 333])
@pytest.mark.parametrize("overlap", [0.0, 0.1, 0.5, 0.9])
def test_square_windows_are_full_size_inside_the_frame_cover_it_and_overlap_as_asked(height, width, tile, overlap):
    boxes = tile_boxes(height, width, tile=tile, overlap=overlap)
    assert covered(boxes, height, width).all()
    assert all(0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height for x0, y0, x1, y1 in boxes)
    sizes = {(x1 - x0, y1 - y0) for x0, y0, x1, y1 in boxes}
    assert len(sizes) == 1
    side_w, side_h = sizes.pop()
    if tile is None or height > tile or width > tile:  # otherwise the whole frame, see below
        assert side_w == side_h == min(tile or min(height, width), height, width)
    for axis, side in ((0, side_w), (1, side_h)):
        offsets = starts(boxes, axis)
        assert all(b - a <= side * (1 - overlap) + 1 for a, b in zip(offsets, offsets[1:]))


@pytest.mark.parametrize("height, width, tile", [(200, 200, 300), (100, 150, 512), (200, 200, 200), (5, 5, None)])
def test_a_frame_that_fits_in_one_tile_is_one_window_the_whole_frame(height, width, tile):
    assert tile_boxes(height, width, tile=tile) == [(0, 0, width, height)]


def test_a_tile_larger_than_the_short_side_only_shrinks_to_it():
    boxes = tile_boxes(1000, 2048, tile=1500)
    assert {(x1 - x0, y1 - y0) for x0, y0, x1, y1 in boxes} == {(1000, 1000)} and len(boxes) == 3


@pytest.mark.parametrize("grid, height, width", [((1, 3), 1000, 2048), ((2, 3), 1000, 2048), ((3, 3), 10, 10),
                                                  ((1, 1), 50, 70), ((4, 1), 1000, 2048)])
@pytest.mark.parametrize("overlap", [0.0, 0.2])
def test_a_grid_has_rows_times_cols_equal_windows_covering_the_frame(grid, height, width, overlap):
    boxes = tile_boxes(height, width, rows_cols=grid, overlap=overlap)
    assert len(boxes) == grid[0] * grid[1]
    assert covered(boxes, height, width).all()
    (w, h), = {(x1 - x0, y1 - y0) for x0, y0, x1, y1 in boxes}
    for axis, side in ((0, w), (1, h)):
        offsets = starts(boxes, axis)
        assert all(b - a <= side * (1 - overlap) + 1 for a, b in zip(offsets, offsets[1:]))


def test_grid_windows_follow_the_documented_size():
    # 3 columns overlapping by 0.2 on 2048 pixels: ceil(2048 / (1 + 2 * 0.8)) = 788
    assert tile_boxes(1000, 2048, rows_cols=(1, 3), overlap=0.2) == [
        (0, 0, 788, 1000), (630, 0, 1418, 1000), (1260, 0, 2048, 1000)]


@pytest.mark.parametrize("kwargs, message", [
    ({"tile": 100, "rows_cols": (1, 2)}, "not both"), ({"overlap": 1.0}, "overlap"), ({"overlap": -0.1}, "overlap"),
    ({"rows_cols": (0, 2)}, "at least 1 row"), ({"tile": 0}, "positive"),
])
def test_impossible_tilings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tile_boxes(100, 200, **kwargs)
    with pytest.raises(ValueError, match="1×1"):
        tile_boxes(0, 10)


def test_split_returns_views_of_the_windows_in_order():
    image = np.arange(100 * 300, dtype=np.int32).reshape(100, 300)
    windows = split_tiles(image, tile_boxes(100, 300))
    assert [w.shape for w in windows] == [(100, 100)] * 3
    assert windows[1][0, 0] == image[0, 100] and np.shares_memory(windows[2], image)
    assert split is split_tiles
    color = np.zeros((40, 120, 3), np.uint8)
    assert [w.shape for w in split_tiles(color, tile_boxes(40, 120))] == [(40, 40, 3)] * 3


# --- combining the windows' answers --------------------------------------------------------------------------


def test_max_takes_each_class_highest_probability_renormalised():
    probabilities = np.array([[0.9, 0.1, 0.0], [0.2, 0.1, 0.7], [0.1, 0.8, 0.1]])
    result = aggregate(probabilities, "max")
    np.testing.assert_allclose(result.probabilities, np.array([0.9, 0.8, 0.7]) / 2.4, rtol=1e-6)
    assert (result.tile_index, result.used, result.tiles, result.fallback) == (0, 3, 3, False)


def test_mean_averages_the_windows_and_names_the_one_that_supports_the_answer_most():
    probabilities = np.array([[0.6, 0.4], [0.1, 0.9], [0.5, 0.5]])
    result = aggregate(probabilities, "mean")
    np.testing.assert_allclose(result.probabilities, [0.4, 0.6], rtol=1e-6)
    assert result.tile_index == 1


def test_only_valid_windows_count():
    probabilities = np.array([[0.9, 0.1], [0.3, 0.7], [0.4, 0.6]])
    valid = np.array([False, True, True])
    mean = aggregate(probabilities, "mean", valid)
    np.testing.assert_allclose(mean.probabilities, [0.35, 0.65], rtol=1e-6)
    assert (mean.used, mean.tile_index, mean.fallback) == (2, 1, False)
    high = aggregate(probabilities, "max", valid)
    np.testing.assert_allclose(high.probabilities, np.array([0.4, 0.7]) / 1.1, rtol=1e-6)
    assert high.tile_index == 1  # window 0 would be more confident, but it is not valid


def test_no_valid_window_falls_back_to_all_windows_and_says_so():
    probabilities = np.array([[0.9, 0.1], [0.3, 0.7]])
    result = aggregate(probabilities, "max", np.array([False, False]))
    assert result.fallback and result.used == 2
    np.testing.assert_allclose(result.probabilities, aggregate(probabilities, "max").probabilities)
    np.testing.assert_allclose(result.probabilities.sum(), 1.0, rtol=1e-6)


def test_ties_pick_the_first_window_every_time():
    probabilities = np.array([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]])
    results = {aggregate(probabilities, method).tile_index for method in ("max", "mean") for _ in range(3)}
    assert results == {0}


@pytest.mark.parametrize("probabilities, method, valid, message", [
    (np.zeros((0, 3)), "max", None, "at least one tile"), (np.ones(3), "max", None, "shape"),
    (np.ones((2, 3)), "median", None, "aggregation"), (np.ones((2, 3)), "max", np.ones(3, bool), "one entry per tile"),
])
def test_bad_inputs_to_aggregate_are_refused(probabilities, method, valid, message):
    with pytest.raises(ValueError, match=message):
        aggregate(probabilities, method, valid)


def test_combine_leaves_out_unknown_windows_and_scores_the_frame_by_its_lowest_window():
    probabilities = np.array([[0.9, 0.1], [0.3, 0.7], [0.4, 0.6]])
    result = combine(probabilities, "mean", np.array([0.9, 0.1, 0.2]), threshold=0.5)
    np.testing.assert_allclose(result.probabilities, [0.35, 0.65], rtol=1e-6)
    assert result.known == 2 and result.ood_score == pytest.approx(0.1) and result.best_tile == 1


def test_combine_with_no_known_window_is_unknown_and_still_has_probabilities():
    result = combine(np.array([[0.9, 0.1], [0.3, 0.7]]), "max", np.array([0.8, 0.9]), threshold=0.5)
    assert result.known == 0 and result.ood_score == pytest.approx(0.8)
    np.testing.assert_allclose(result.probabilities.sum(), 1.0, rtol=1e-6)


def test_a_window_with_a_nan_score_is_not_known():
    result = combine(np.array([[0.9, 0.1], [0.3, 0.7]]), "max", np.array([np.nan, 0.1]), threshold=0.5)
    assert result.known == 1 and result.best_tile == 1
    np.testing.assert_allclose(result.probabilities, [0.3, 0.7], rtol=1e-6)


# --- the --tiles option --------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, grid, side", [("auto", None, None), (" AUTO ", None, None), ("3x1", (3, 1), None),
                                              ("2X3", (2, 3), None), ("512", None, 512)])
def test_tile_specs_parse_and_print_back(text, grid, side):
    spec = TileSpec.parse(text, method="mean", overlap=0.25)
    assert (spec.grid, spec.side, spec.method, spec.overlap) == (grid, side, "mean", 0.25)
    assert TileSpec.parse(str(spec), "mean", 0.25) == spec


def test_a_spec_cuts_frames_like_tile_boxes():
    assert TileSpec.parse("3x1").boxes(900, 300) == tile_boxes(900, 300, rows_cols=(3, 1))
    assert TileSpec.parse("512", overlap=0.5).boxes(1000, 2048) == tile_boxes(1000, 2048, tile=512, overlap=0.5)


@pytest.mark.parametrize("text, message", [("3by2", "auto"), ("", "auto"), ("-5", "auto"), ("0x2", "at least 1 row"),
                                           ("4", "at least 8 pixels"), ("1.5", "auto")])
def test_bad_specs_are_refused_naming_the_accepted_forms(text, message):
    with pytest.raises(ValueError, match=message):
        TileSpec.parse(text)


def test_bad_method_or_overlap_is_refused():
    with pytest.raises(ValueError, match="aggregation"):
        TileSpec.parse("auto", method="median")
    with pytest.raises(ValueError, match="overlap"):
        TileSpec.parse("auto", overlap=1.0)


def test_classifier_tiles_large_frames(tiny_edge_models):
    from edge_runtime.classifier import Classifier

    classifier = Classifier.load(tiny_edge_models.onnx, engine="onnxruntime")
    frame = np.random.default_rng(0).integers(0, 256, (40, 120), dtype=np.uint8)
    whole = classifier.predict(frame)
    classifier.tiles = TileSpec.parse("auto")
    tiled = classifier.predict(frame)
    windows = classifier.predict_batch(split_tiles(frame, classifier.tiles.boxes(40, 120)))
    expected = np.max([w.probabilities for w in windows], axis=0)
    np.testing.assert_allclose(tiled.probabilities, expected / expected.sum(), rtol=1e-5)
    assert tiled.inference_ms > 0 and whole.label in tiny_edge_models.labels
