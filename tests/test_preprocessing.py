"""Preprocessing is defined once (edge_runtime) and matches Keras' ResNet-50 preprocess_input."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import NEU, needs_neu
from edge_runtime.errors import ImageReadError
from edge_runtime.preprocessing import (
    CAFFE_MEAN_BGR,
    PreprocessConfig,
    correct_defective_pixels,
    load_image,
    normalize,
    prepare_pixels,
    preprocess,
    read_image,
    to_bgr8,
)

CFG = PreprocessConfig()


@pytest.mark.parametrize(
    "image",
    [
        np.full((10, 12), 77, np.uint8),
        np.full((10, 12, 1), 77, np.uint8),
        np.full((10, 12, 3), 77, np.uint8),
        np.dstack([np.full((10, 12, 3), 77, np.uint8), np.zeros((10, 12), np.uint8)]),
        np.full((10, 12), 77 * 257, np.uint16),
        np.full((10, 12), 77 / 255, np.float32),
    ],
    ids=["gray", "gray1", "bgr", "bgra", "gray16", "float01"],
)
def test_every_decoded_form_becomes_the_same_uint8_bgr(image):
    out = to_bgr8(image)
    assert out.shape == (10, 12, 3) and out.dtype == np.uint8
    assert np.all(out == 77)


def test_colour_channels_keep_bgr_order():
    image = np.zeros((4, 4, 3), np.uint8)
    image[..., 2] = 200  # red in BGR
    assert to_bgr8(image)[0, 0].tolist() == [0, 0, 200]


def test_unsupported_shapes_are_rejected_with_the_shape_named():
    with pytest.raises(ValueError, match="shape"):
        to_bgr8(np.zeros((4, 4, 2), np.uint8))


def test_preprocess_resizes_and_subtracts_the_caffe_mean():
    out = preprocess(np.full((200, 200), 100, np.uint8), CFG)
    assert out.shape == (224, 224, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0], [100 - m for m in CAFFE_MEAN_BGR], atol=1e-4)


@pytest.mark.parametrize("shape", [(224, 224, 3), (4, 224, 224, 3), (2, 3, 5, 7, 3)])
@pytest.mark.parametrize("order", ["BGR", "RGB"])
def test_normalising_gives_the_float32_mean_subtraction_bit_for_bit(shape, order):
    """The device's fast path (one OpenCV pass) and the plain float32 arithmetic give identical input."""
    config = PreprocessConfig(channel_order=order)
    pixels = np.random.default_rng(3).integers(0, 256, shape, dtype=np.uint8)
    reference = pixels.astype(np.float32)
    if order == "RGB":
        reference = reference[..., ::-1]
    reference = reference - np.asarray(config.mean, np.float32)
    out = normalize(pixels, config)
    assert out.dtype == np.float32 and out.shape == shape
    np.testing.assert_array_equal(out, reference)
    np.testing.assert_array_equal(normalize(pixels.astype(np.float32), config), reference)  # non-uint8 input


def test_large_frames_are_shrunk_to_the_model_size():
    assert prepare_pixels(np.zeros((1000, 2048), np.uint8), CFG).shape == (224, 224, 3)


def test_config_round_trips_through_a_dict():
    cfg = PreprocessConfig(input_size=(64, 96), interpolation="area")
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg


def test_invalid_config_is_refused():
    with pytest.raises(ValueError, match="interpolation"):
        PreprocessConfig(interpolation="bogus")


def textured_gray(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(60, 200, (60, 80)).astype(np.uint8), (0, 0), 1.5)


def test_hot_and_dead_pixels_take_a_neighbours_value_and_nothing_else_changes():
    clean = textured_gray()
    broken = clean.copy()
    broken[10, 10], broken[30, 40], broken[50, 70] = 255, 0, 255
    fixed = correct_defective_pixels(broken)
    changed = np.argwhere(fixed != broken).tolist()
    assert changed == [[10, 10], [30, 40], [50, 70]]
    assert np.abs(fixed.astype(int) - clean).max() <= 20  # the nearest neighbour value: near the scene


def test_thin_lines_and_edges_are_not_defects():
    scene = np.full((40, 40), 90, np.uint8)
    scene[:, 20] = 250  # a bright scratch one pixel wide
    scene[25, :] = 5  # a dark crack one pixel high
    scene[:, 30:] = 230  # a sharp edge
    assert np.array_equal(correct_defective_pixels(scene), scene)
    assert np.array_equal(correct_defective_pixels(textured_gray(1)), textured_gray(1))


def test_defect_pixels_are_corrected_before_resizing_for_gray_and_colour_frames_and_can_be_switched_off():
    clean = textured_gray()
    broken = clean.copy()
    broken[::7, ::9] = 255  # 1.6 % hot pixels, each alone
    on, off = PreprocessConfig(input_size=(30, 40)), PreprocessConfig(input_size=(30, 40), defect_pixel_threshold=0)
    for frame in (broken, np.dstack([broken] * 3)):
        np.testing.assert_allclose(prepare_pixels(frame, on).astype(int), prepare_pixels(clean, on), atol=3)
        assert np.abs(prepare_pixels(frame, off).astype(int) - prepare_pixels(clean, off)).max() > 20


def test_frames_shrunk_sixteen_times_or_more_average_stuck_pixels_away_and_are_not_corrected():
    clean = cv2.resize(textured_gray(), (1600, 1200), interpolation=cv2.INTER_LINEAR)
    stuck = clean.copy()
    stuck[::9, ::11] = 255  # 1 % hot pixels, each alone
    config = PreprocessConfig(input_size=(224, 224))
    difference = np.abs(prepare_pixels(stuck, config).astype(int) - prepare_pixels(clean, config))
    assert 0 < difference.max() <= 255 // 16 + 1  # uncorrected, but diluted to noise level


def test_models_written_before_the_correction_existed_read_it_as_on_and_new_ones_store_it():
    old = {k: v for k, v in PreprocessConfig().to_dict().items() if k != "defect_pixel_threshold"}
    assert PreprocessConfig.from_dict(old).defect_pixel_threshold == 40
    assert PreprocessConfig(defect_pixel_threshold=0).to_dict()["defect_pixel_threshold"] == 0
    with pytest.raises(ValueError, match="defect_pixel_threshold"):
        PreprocessConfig(defect_pixel_threshold=-1)


def test_sixteen_bit_png_reads_and_scales(tmp_path: Path):
    path = tmp_path / "deep.png"
    cv2.imwrite(str(path), np.full((8, 8), 65535, np.uint16))
    assert read_image(path).dtype == np.uint16
    assert to_bgr8(read_image(path)).max() == 255


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "empty"),
        (b"this is not an image", "not a decodable image"),
    ],
)
def test_bad_files_raise_an_error_naming_the_file(tmp_path: Path, content: bytes, reason: str):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=reason) as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_truncated_jpeg_is_detected(tmp_path: Path):
    ok, data = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    path = tmp_path / "cut.jpg"
    path.write_bytes(data.tobytes()[: len(data) // 2])
    with pytest.raises(ImageReadError, match="truncated"):
        read_image(path)


def test_missing_file_names_the_path(tmp_path: Path):
    with pytest.raises(ImageReadError, match="nothere.jpg"):
        read_image(tmp_path / "nothere.jpg")


@needs_neu
def test_matches_keras_preprocess_input_on_real_neu_images():
    """Parity with keras.applications.resnet50.preprocess_input (fed RGB, as Keras loaders do)."""
    from keras.applications.resnet50 import preprocess_input

    files = [NEU / c / f"{c}_{i}.jpg" for c in ("crazing", "inclusion", "scratches") for i in (1, 150, 300)]
    worst = 0.0
    for path in files:
        ours = load_image(path, CFG)
        rgb = cv2.cvtColor(prepare_pixels(read_image(path), CFG), cv2.COLOR_BGR2RGB).astype(np.float32)
        worst = max(worst, float(np.abs(ours - preprocess_input(rgb)).max()))
    assert worst <= 1e-3
