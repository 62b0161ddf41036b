"""Activation ranges of a full-int8 TFLite model from quantiles instead of extremes.

TFLite's calibration records each activation tensor's smallest and largest value over the calibration images,
and its int8 scale is that range over 255 levels. A handful of extreme activations thus sets the rounding step
of every other value: in ResNet-50 most tensors' extremes lie far beyond where nearly all values are, and the
rounding noise that follows moves the unknown score of another plant's images (docs/quantisation.md). Here
each tensor's range is instead the ``quantile`` and ``1 - quantile`` of its values, per calibration image, the
extremes of those over the images: the rare values beyond are clipped, every other value is rounded finer.

The graph input and the arithmetic between it and the first convolution (the in-graph normalisation) keep
their recorded ranges: they hold every pixel value, which must not clip. The quantiser then derives every
scale, the biases' and the constraints between tensors from the edited ranges, as it does from recorded ones.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_QUANTILE = 1e-4


def quantile_ranges(calibrated: bytes, calibration: Callable[[], Iterable[np.ndarray]],
                    quantile: float = DEFAULT_QUANTILE) -> tuple[bytes, dict]:
    """``calibrated`` (a TFLite converter's calibrate-only output: float graph with recorded min/max) with the
    per-tensor ranges set from quantiles of the activations on ``calibration()`` images (model inputs without
    the batch axis). Returns the edited flatbuffer and a summary (tensors edited, median range kept)."""
    import tensorflow as tf
    from tensorflow.lite.tools import flatbuffer_utils

    if not 0 < quantile < 0.5:
        raise ValueError(f"the activation range quantile must be in (0, 0.5), not {quantile}")
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated))
    graph = model.subgraphs[0]
    kept = set(_input_path(model))
    ranged = [i for i, t in enumerate(graph.tensors)
              if i not in kept and t.quantization is not None and t.quantization.min is not None
              and len(t.quantization.min) == 1 and t.buffer is not None and not _has_data(model, t)]
    interpreter = tf.lite.Interpreter(model_content=calibrated, experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    feed = interpreter.get_input_details()[0]
    low = {i: np.inf for i in ranged}
    high = {i: -np.inf for i in ranged}
    for x in calibration():
        interpreter.set_tensor(feed["index"], np.asarray(x)[None].astype(feed["dtype"]))
        interpreter.invoke()
        for i in ranged:
            values = interpreter.get_tensor(i).ravel()
            lo, hi = _tails(values, quantile)
            low[i], high[i] = min(low[i], lo), max(high[i], hi)
    kept_share = []
    for i in ranged:
        q = graph.tensors[i].quantization
        recorded_lo, recorded_hi = float(q.min[0]), float(q.max[0])
        lo = 0.0 if recorded_lo >= 0 else max(recorded_lo, min(low[i], 0.0))
        hi = max(min(recorded_hi, high[i]), 0.0)
        if hi - lo <= 0 or not np.isfinite([lo, hi]).all():
            continue
        kept_share.append((hi - lo) / max(recorded_hi - recorded_lo, 1e-12))
        q.min, q.max = [lo], [hi]
    summary = {"quantile": quantile, "tensors": len(kept_share),
               "median_range_kept": round(float(np.median(kept_share)), 3) if kept_share else None}
    log.info("full-int8 TFLite: %d activation ranges from the %g quantiles (median %.0f %% of the recorded range)",
             len(kept_share), quantile, 100 * (summary["median_range_kept"] or 0))
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), summary


def _tails(values: np.ndarray, quantile: float) -> tuple[float, float]:
    """The ``quantile`` and ``1 - quantile`` order statistics of ``values`` (nearest rank), exactly. Large tensors
    first keep only the values beyond bounds taken from every 16th value; when enough remain on each side the
    order statistics lie among them, else the whole tensor is partitioned."""
    n = values.size
    k = min(int(quantile * (n - 1)), n - 1)
    if n > 65536:
        sample = values[::16]
        m = sample.size
        j = min(m // 2, 4 * (k // 16) + 64)
        bounds = np.partition(sample, (j, m - 1 - j))
        low, high = values[values <= bounds[j]], values[values >= bounds[m - 1 - j]]
        if low.size > k and high.size > k:
            return float(np.partition(low, k)[k]), float(np.partition(high, high.size - 1 - k)[high.size - 1 - k])
    part = np.partition(values, (k, n - 1 - k))
    return float(part[k]), float(part[n - 1 - k])


def _has_data(model, tensor) -> bool:
    """Whether ``tensor`` is a constant (weights, biases): its buffer holds data."""
    buffer = model.buffers[tensor.buffer]
    return buffer is not None and buffer.data is not None and len(buffer.data) > 0


def first_conv_and_input_ops(model) -> tuple[object | None, list]:
    """The first convolution of a TFLite model (flatbuffer object) and the operators on the path from the graph
    input to it (the normalisation, the padding), nearest to the convolution first; (None, []) without one."""
    from tensorflow.lite.python import schema_py_generated as schema

    from export.bias_correction import builtin_code

    graph = model.subgraphs[0]
    conv = next((op for op in graph.operators if builtin_code(model, op) == schema.BuiltinOperator.CONV_2D), None)
    producer = {out: op for op in graph.operators for out in op.outputs}
    ops, tensor = [], conv.inputs[0] if conv is not None else None
    while tensor in producer and producer[tensor] not in ops:
        ops.append(producer[tensor])
        tensor = ops[-1].inputs[0]
    return conv, ops


def _input_path(model) -> list[int]:
    """The graph input and every tensor between it and the first convolution: the tensors that carry pixel
    values, normalised or not."""
    conv, ops = first_conv_and_input_ops(model)
    inputs = [conv.inputs[0], *(op.inputs[0] for op in ops)] if conv is not None else []
    return list(dict.fromkeys([*model.subgraphs[0].inputs, *inputs]))
