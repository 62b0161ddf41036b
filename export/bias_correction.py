"""Bias correction of a full-int8 TFLite model: remove the mean error that weight rounding adds to each layer.

Rounding a layer's weights to int8 changes its output by ``conv(x, W_float - W_int8)``. Per input image this
is noise, but its mean over images is not zero: activations after ReLU are positive, so the rounding errors of
a channel's weights add up to a constant shift of that channel's output, and 53 layers of shifts compound
(Nagel et al. 2019, "Data-Free Quantization Through Weight Equalization and Bias Correction", sec. 4.2). ONNX
int8 from NNCF gets this correction from NNCF; the TFLite converter has none, so it is done here:

    bias_int32[c] += round(mean over calibration images and positions of conv(x_q, W_float - W_int8)[c] / bias_scale[c])

``x_q`` is the int8 model's own input to that layer (read from the interpreter), ``W_float`` the same layer in
an fp32 TFLite conversion of the same SavedModel (identical graph, BatchNorm folded the same way: every weight
is checked to lie within half a quantisation step of its int8 value). Only int32 bias buffers change (a bias
buffer the converter shared between equal constants is first given to each layer as its own copy).

What it changes in agreement with the float model is recorded in docs/quantisation.md.
"""

from __future__ import annotations

import copy
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np

from edge_runtime.backends import dequantize, quantize

log = logging.getLogger(__name__)


@dataclass
class BiasCorrection:
    """What :func:`correct_int8_biases` did (stored in the artifact's metadata)."""

    layers: int
    images: int
    mean_abs_shift: float  # mean |bias change| in output units, over every corrected channel
    skipped: list[str]

    def to_dict(self) -> dict:
        return asdict(self)


def _schema():
    from tensorflow.lite.python import schema_py_generated as schema

    return schema


def builtin_code(model, op) -> int:
    """The ``BuiltinOperator`` of ``op`` in a TFLite flatbuffer object (old files keep it in a deprecated field)."""
    code = model.operatorCodes[op.opcodeIndex]
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def _weight_ops(model) -> list:
    schema = _schema()
    kinds = (schema.BuiltinOperator.CONV_2D, schema.BuiltinOperator.FULLY_CONNECTED)
    return [op for op in model.subgraphs[0].operators if builtin_code(model, op) in kinds]


def _array(model, tensor, dtype) -> np.ndarray:
    return np.frombuffer(bytes(model.buffers[tensor.buffer].data), dtype=dtype).reshape(tensor.shape)


def _mean_shift(op, x: np.ndarray, delta_w: np.ndarray) -> np.ndarray:
    """Per output channel, the mean over positions of conv(x, delta_w) (or x @ delta_w.T for a dense layer)."""
    import tensorflow as tf

    schema = _schema()
    if delta_w.ndim == 2:  # FULLY_CONNECTED: weights (out, in)
        return x.reshape(len(x), -1).mean(0) @ delta_w.T
    options = op.builtinOptions
    padding = "SAME" if options.padding == schema.Padding.SAME else "VALID"
    y = tf.nn.conv2d(x, delta_w.transpose(1, 2, 3, 0), strides=[1, options.strideH, options.strideW, 1],
                     padding=padding)
    return tf.reduce_mean(y, axis=[0, 1, 2]).numpy()


def correct_int8_biases(int8_flatbuffer: bytes, fp32_flatbuffer: bytes, inputs: Iterable[np.ndarray],
                        max_images: int = 32) -> tuple[bytes, BiasCorrection]:
    """The int8 model with every conv/dense bias corrected for its weights' rounding, and a summary.

    ``fp32_flatbuffer``: the same SavedModel converted without quantisation; ``inputs``: calibration inputs
    (one image each: in the int8 model's input dtype, e.g. uint8 pixels, or float, then quantised with the
    input's scale and zero point) from the training split only, of
    which ``max_images`` evenly spread ones are used (calibration sets come ordered by class).
    Raises ValueError when the two models' layers do not correspond.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    from tensorflow.lite.tools import flatbuffer_utils

    int8 = flatbuffer_utils.convert_bytearray_to_object(bytearray(int8_flatbuffer))
    fp32 = flatbuffer_utils.convert_bytearray_to_object(bytearray(fp32_flatbuffer))
    int8_ops, fp32_ops = _weight_ops(int8), _weight_ops(fp32)
    if len(int8_ops) != len(fp32_ops):
        raise ValueError(f"the int8 model has {len(int8_ops)} conv/dense layers, the fp32 one {len(fp32_ops)}: "
                         "they are not conversions of the same SavedModel")
    tensors, fp32_tensors = int8.subgraphs[0].tensors, fp32.subgraphs[0].tensors
    users = Counter(t.buffer for g in int8.subgraphs for t in g.tensors)
    layers, skipped = [], []
    for k, (op, ref) in enumerate(zip(int8_ops, fp32_ops)):
        name = tensors[op.outputs[0]].name.decode(errors="replace").split(";")[0]  # fused ops: the first name
        if len(op.inputs) < 3 or op.inputs[2] < 0:
            skipped.append(f"{name}: no bias")
            continue
        weights, bias = tensors[op.inputs[1]], tensors[op.inputs[2]]
        if weights.type != _schema().TensorType.INT8:  # a layer left in float: nothing rounded
            skipped.append(f"{name}: not int8")
            continue
        if users[bias.buffer] > 1:  # the converter shares equal constants (e.g. zero biases): give it its own
            users[bias.buffer] -= 1
            int8.buffers.append(copy.deepcopy(int8.buffers[bias.buffer]))
            bias.buffer = len(int8.buffers) - 1
        quantized = _array(int8, weights, np.int8)
        step = np.asarray(weights.quantization.scale, np.float32).reshape(-1, *([1] * (quantized.ndim - 1)))
        dequantized = quantized.astype(np.float32) * step  # per output channel, zero point 0
        float_weights = _array(fp32, fp32_tensors[ref.inputs[1]], np.float32)
        if float_weights.shape != dequantized.shape:
            raise ValueError(f"layer {k} ({name}): int8 weights {dequantized.shape} but fp32 {float_weights.shape}")
        if np.any(np.abs(float_weights - dequantized) > 0.51 * step + 1e-7):
            raise ValueError(f"layer {k} ({name}): the fp32 weights are not the int8 weights before rounding")
        layers.append((op, float_weights - dequantized, bias))

    interpreter = Interpreter(model_content=bytes(int8_flatbuffer), experimental_preserve_all_tensors=True,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    entry = interpreter.get_input_details()[0]
    sums = [0.0] * len(layers)
    images = 0
    for image in _spread(list(inputs), max_images):
        interpreter.set_tensor(entry["index"], _model_input(np.asarray(image), entry))
        interpreter.invoke()
        for i, (op, delta_w, _) in enumerate(layers):
            quantization = tensors[op.inputs[0]].quantization
            x = dequantize(interpreter.get_tensor(op.inputs[0]), (quantization.scale[0], quantization.zeroPoint[0]))
            sums[i] = sums[i] + _mean_shift(op, x, delta_w)
        images += 1
    if images == 0:
        raise ValueError("no calibration images for bias correction")

    shifts = []
    for (_, _, bias), total in zip(layers, sums):
        shift = np.asarray(total, np.float64) / images
        values = _array(int8, bias, np.int32).astype(np.int64)
        corrected = values + np.round(shift / np.asarray(bias.quantization.scale, np.float64)).astype(np.int64)
        corrected = np.clip(corrected, np.iinfo(np.int32).min, np.iinfo(np.int32).max).astype(np.int32)
        int8.buffers[bias.buffer].data = np.frombuffer(corrected.tobytes(), np.uint8)
        shifts.append(np.abs(shift))
    summary = BiasCorrection(len(layers), images, float(np.concatenate(shifts).mean()) if shifts else 0.0, skipped)
    log.info("bias correction: %d conv/dense layers from %d calibration images (mean |shift| %.2g)%s",
             summary.layers, images, summary.mean_abs_shift, f"; skipped {skipped}" if skipped else "")
    return bytes(flatbuffer_utils.convert_object_to_bytearray(int8)), summary


def _model_input(image: np.ndarray, entry: dict) -> np.ndarray:
    """One image as the int8 model's input batch: float images are quantised with the input's scale."""
    dtype = np.dtype(entry["dtype"])
    if np.issubdtype(image.dtype, np.floating) and np.issubdtype(dtype, np.integer):
        return quantize(image[None], dtype, entry["quantization"])
    return image[None].astype(dtype)


def _spread(items: list, count: int) -> list:
    """``count`` items evenly spread over ``items`` (all of them if there are fewer)."""
    if len(items) <= count:
        return items
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, count).round()]
