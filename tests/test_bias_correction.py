"""Bias correction of full-int8 TFLite: the int8 model's mean error against fp32 shrinks; only biases change."""

from __future__ import annotations

import numpy as np
import pytest

from export.bias_correction import correct_int8_biases

SIZE = 16


def _convert(model, directory, calibration: list[np.ndarray] | None) -> bytes:
    import tensorflow as tf

    model.export(str(directory), verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(directory))
    if calibration is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x[None]] for x in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
    return converter.convert()


def _linear_model(seed: int):
    """Conv -> strided conv -> GAP -> Dense, no activations: the output's mean error is the biases' doing."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(6, 3, padding="same")(inputs)  # zero biases: the converter shares their buffer
    x = keras.layers.Conv2D(6, 3, strides=2)(x)
    dense = keras.layers.Dense(4, bias_initializer=keras.initializers.RandomNormal(stddev=0.1, seed=seed))
    return keras.Model(inputs, dense(keras.layers.GlobalAveragePooling2D()(x)))


@pytest.fixture(scope="module")
def linear(tmp_path_factory):
    base = tmp_path_factory.mktemp("bias")
    rng = np.random.default_rng(0)
    images = [rng.uniform(0.5, 1.5, (SIZE, SIZE, 3)).astype(np.float32) for _ in range(24)]  # positive, like ReLU outputs
    model = _linear_model(3)
    return model, images, _convert(model, base / "int8", images), _convert(model, base / "fp32", None), base


def _int8_outputs(flatbuffer: bytes, images: list[np.ndarray]) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    entry, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero_point = entry["quantization"]
    outputs = []
    for image in images:
        q = np.clip(np.round(image / scale) + zero_point, -128, 127).astype(np.int8)
        interpreter.set_tensor(entry["index"], q[None])
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"])[0].astype(np.float32)
        if out["dtype"] != np.float32:
            y = (y - out["quantization"][1]) * out["quantization"][0]
        outputs.append(y)
    return np.stack(outputs)


def _quantized_inputs(flatbuffer: bytes, images: list[np.ndarray]):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    scale, zero_point = interpreter.get_input_details()[0]["quantization"]
    return [np.clip(np.round(x / scale) + zero_point, -128, 127).astype(np.int8) for x in images]


def test_correction_removes_most_of_the_mean_error_against_float(linear):
    model, images, int8, fp32, _ = linear
    reference = np.stack([np.asarray(model(x[None]))[0] for x in images])
    before = _int8_outputs(int8, images) - reference
    corrected, summary = correct_int8_biases(int8, fp32, _quantized_inputs(int8, images))
    after = _int8_outputs(corrected, images) - reference
    assert summary.layers == 3 and summary.images == 24 and summary.skipped == []
    assert np.abs(after.mean(0)).mean() < 0.5 * np.abs(before.mean(0)).mean()


def test_float_inputs_are_quantised_like_the_device_does(linear):
    _, images, int8, fp32, _ = linear
    from_float, _ = correct_int8_biases(int8, fp32, images)
    from_int8, _ = correct_int8_biases(int8, fp32, _quantized_inputs(int8, images))
    assert from_float == from_int8


def test_only_the_bias_buffers_change(linear):
    from tensorflow.lite.tools import flatbuffer_utils

    _, images, int8, fp32, _ = linear
    corrected, _ = correct_int8_biases(int8, fp32, _quantized_inputs(int8, images))
    old = flatbuffer_utils.convert_bytearray_to_object(bytearray(int8))
    new = flatbuffer_utils.convert_bytearray_to_object(bytearray(corrected))
    graph = old.subgraphs[0]
    new_graph = new.subgraphs[0]
    biases = [k for op in graph.operators if len(op.inputs) > 2 and (k := op.inputs[2]) >= 0]
    assert len(biases) == 3
    for k, (a, b) in enumerate(zip(graph.tensors, new_graph.tensors)):
        before = np.asarray(old.buffers[a.buffer].data if old.buffers[a.buffer].data is not None else [])
        after = np.asarray(new.buffers[b.buffer].data if new.buffers[b.buffer].data is not None else [])
        if k not in biases:
            assert a.buffer == b.buffer and np.array_equal(before, after), a.name
        else:
            assert before.shape == after.shape


def test_an_fp32_model_of_another_network_is_refused(linear):
    _, images, int8, _, base = linear
    other = _convert(_linear_model(4), base / "other", None)
    with pytest.raises(ValueError, match="not the int8 weights before rounding"):
        correct_int8_biases(int8, other, _quantized_inputs(int8, images))


def test_without_calibration_images_it_refuses(linear):
    _, _, int8, fp32, _ = linear
    with pytest.raises(ValueError, match="no calibration images"):
        correct_int8_biases(int8, fp32, [])


def test_layers_left_in_float_are_skipped_and_the_others_corrected(linear):
    import tensorflow as tf

    model, images, _, fp32, base = linear
    converter = tf.lite.TFLiteConverter.from_saved_model(str(base / "int8"))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[None]] for x in images)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=lambda: ([x[None]] for x in images[:2]),
        debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=["CONV_2D"]))
    mixed = debugger.get_nondebug_quantized_model()  # both convolutions in float, the dense layer in int8
    corrected, summary = correct_int8_biases(mixed, fp32, images)
    assert summary.layers == 1 and len(summary.skipped) == 2
    assert all(reason.endswith("not int8") for reason in summary.skipped)
    assert corrected != mixed
