"""Full-int8 TFLite activation ranges from quantiles: a few extreme activations no longer set every value's
rounding step, while the pixels and their normalisation keep their whole range."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

SIDE = 16


def _pixel_model(directory: Path) -> Path:
    """uint8 pixels -> normalisation -> padding -> conv (relu) -> pooled -> softmax, as a SavedModel."""
    import keras

    keras.utils.set_random_seed(0)
    pixels = keras.Input((SIDE, SIDE, 3), dtype="uint8")
    x = keras.ops.cast(pixels, "float32")
    x = keras.layers.Normalization(mean=[104.0, 117.0, 124.0], variance=[1.0, 1.0, 1.0])(x)
    x = keras.layers.ZeroPadding2D(1)(x)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax")(x)
    keras.Model(pixels, outputs).export(str(directory), verbose=False)
    return directory


def _calibration() -> list[np.ndarray]:
    """Smooth gray images, one with a small saturated patch (the rare extreme activations), each with one pixel
    at 0 and one at 255 as the export's calibration images have."""
    rng = np.random.default_rng(0)
    images = []
    for k in range(24):
        image = np.clip(rng.normal(120, 12, (SIDE, SIDE, 1)), 0, 255).repeat(3, axis=2).astype(np.uint8)
        image[0, 0], image[-1, -1] = 0, 255
        if k == 5:
            image[4:7, 4:7] = 255
        images.append(image)
    return images


def _ranges(flatbuffer: bytes) -> dict[str, tuple[float, float]]:
    from tensorflow.lite.tools import flatbuffer_utils

    graph = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer)).subgraphs[0]
    return {t.name.decode(): (float(t.quantization.min[0]), float(t.quantization.max[0])) for t in graph.tensors
            if t.quantization is not None and t.quantization.min is not None and len(t.quantization.min) == 1}


def _calibrated(saved: Path, images: list[np.ndarray]) -> bytes:
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[None]] for x in images)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.experimental_mlir_quantizer = True
    converter._experimental_calibrate_only = True
    return converter.convert()


def test_activation_ranges_shrink_to_their_quantiles_but_the_pixels_keep_their_whole_range(tmp_path):
    from export.activation_ranges import _input_path, quantile_ranges
    from tensorflow.lite.tools import flatbuffer_utils

    images = _calibration()
    calibrated = _calibrated(_pixel_model(tmp_path / "saved"), images)
    edited, summary = quantile_ranges(calibrated, lambda: iter(images), quantile=0.01)
    before, after = _ranges(calibrated), _ranges(edited)
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated))
    pixel_path = {model.subgraphs[0].tensors[i].name.decode() for i in _input_path(model)}
    assert pixel_path and summary["tensors"] > 0
    for name, (low, high) in before.items():
        new_low, new_high = after[name]
        if name in pixel_path:
            assert (new_low, new_high) == (low, high)  # every pixel value, normalised or not, still fits
        else:
            assert min(low, 0) <= new_low <= 0 <= new_high <= max(high, 0)  # never wider; zero stays exact
    assert any(after[n][1] < 0.9 * before[n][1] for n in before if n not in pixel_path)


def test_the_full_int8_model_with_quantile_ranges_classifies_like_the_float_model(tmp_path):
    from export.convert import tflite_fp32, tflite_int8

    images = _calibration()
    saved = _pixel_model(tmp_path / "saved")
    payload, notes = tflite_int8(saved, lambda: iter(images), "uint8", range_quantile=0.01)
    assert notes["activation_ranges"]["quantile"] == 0.01
    plain, plain_notes = tflite_int8(saved, lambda: iter(images), "uint8", range_quantile=None)
    assert plain_notes == {} and plain != payload
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))  # the converter's own full int8
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[None]] for x in images)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    own = converter.convert()

    def run(flatbuffer: bytes, image: np.ndarray) -> np.ndarray:
        interpreter = tf.lite.Interpreter(model_content=flatbuffer)
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image[None])
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0]

    fp32 = tflite_fp32(saved)
    rng = np.random.default_rng(1)
    for _ in range(5):
        image = np.clip(rng.normal(120, 12, (SIDE, SIDE, 1)), 0, 255).repeat(3, axis=2).astype(np.uint8)
        assert np.abs(run(payload, image) - run(fp32, image)).max() < 0.05
        assert np.array_equal(run(plain, image), run(own, image))  # without quantile ranges: the converter's own


@pytest.mark.parametrize("size", [1000, 70_000, 800_000])
def test_the_tail_order_statistics_are_exact_for_any_tensor_size(size):
    """Large tensors take a shortcut through a subsample's bounds; the result is the exact nearest-rank value."""
    from export.activation_ranges import _tails

    rng = np.random.default_rng(size)
    for values in (rng.standard_t(2, size).astype(np.float32),  # heavy tails
                   np.maximum(rng.normal(0, 1, size), 0).astype(np.float32),  # a ReLU output: many exact zeros
                   np.sort(rng.normal(0, 1, size)).astype(np.float32)):  # sorted: the subsample sees only a stride
        for quantile in (1e-5, 1e-4, 1e-2):
            k = int(quantile * (size - 1))
            ordered = np.sort(values)
            assert _tails(values, quantile) == (float(ordered[k]), float(ordered[size - 1 - k]))
