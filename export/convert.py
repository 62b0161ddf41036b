"""Converters from the trained Keras model to each format (TensorFlow, tf2onnx and ORT quantisation).

Known traps avoided here: ``TFLiteConverter.from_concrete_functions`` silently produces broken models with
this stack, so every TFLite comes ``from_saved_model`` after ``model.export``; ONNX int8 is static QDQ with
uint8 activations and int8 per-channel weights, reduced to 7 bits (S8S8 and dynamic quantisation were
4-10x slower; see ``onnx_int8`` for the 7 bits and the choice of quantiser).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from edge_runtime.preprocessing import PreprocessConfig
from export.activation_ranges import DEFAULT_QUANTILE, first_conv_and_input_ops, quantile_ranges
from export.qdq_graph import activations_to_uint8, subsample_strided_pointwise_inputs
from train.embeddings import pooled_output, with_embedding

log = logging.getLogger(__name__)

ONNX_OPSET = 17


def with_device_outputs(model):
    """The model with every output the device reads, told apart by width: class probabilities, ``embedding``
    and, when the model has the recipe's pooling layer, the backbone's pooled ``features`` (what the unknown
    score reads by default and edge-adapt fits a new line's classes on; more general than the embedding trained
    for NEU's six)."""
    import keras

    outputs = with_embedding(model).outputs
    pooled = pooled_output(model)
    if pooled is None:
        return keras.Model(model.input, outputs)
    return keras.Model(model.input, [*outputs, pooled], name=f"{model.name}_device_outputs")


def export_saved_model(model, directory: Path) -> Path:
    """The float model with its device outputs as a SavedModel (normalised float input): source of
    fp32/fp16/dynamic/ONNX."""
    with_device_outputs(model).export(str(directory), verbose=False)
    return directory


def export_pixel_saved_model(model, directory: Path, preprocess: PreprocessConfig) -> Path:
    """The model with preprocessing inside the graph: input BGR pixel values 0..255 at the model size.

    The input is float32 holding pixel values, not uint8: the full-int8 converter then gives the file a uint8
    input of scale 1 (every pixel level kept) and one requantising step to int8. A uint8 Keras input instead
    becomes a cast to float and a quantisation whose range is widened to cover the normalised values too
    (scale 1.485: pixel levels rounded to 172 steps before the normalisation rounds them again), two
    elementwise operators more on the whole image (docs/quantisation.md)."""
    import keras

    height, width = preprocess.input_size
    x = pixels = keras.Input((height, width, 3), dtype="float32", name="pixels_bgr")
    if preprocess.channel_order == "RGB":
        x = keras.ops.flip(x, axis=-1)
    x = keras.layers.Normalization(
        mean=list(preprocess.mean), variance=[s * s for s in preprocess.std], name="caffe_normalize"
    )(x)
    outputs = with_device_outputs(model)(x)
    keras.Model(pixels, outputs, name="pixels_to_probabilities").export(str(directory), verbose=False)
    return directory


def _converter(saved_model: Path):
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_saved_model(str(saved_model))


def tflite_fp32(saved_model: Path) -> bytes:
    return _converter(saved_model).convert()


def tflite_fp16(saved_model: Path) -> bytes:
    import tensorflow as tf

    converter = _converter(saved_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


def tflite_dynamic(saved_model: Path) -> bytes:
    import tensorflow as tf

    converter = _converter(saved_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


def tflite_int8(saved_model: Path, calibration: Callable[[], Iterable[np.ndarray]], io_type: str,
                float_first_conv: bool = False, range_quantile: float | None = DEFAULT_QUANTILE) -> tuple[bytes, dict]:
    """Full-integer TFLite; ``io_type`` is the input tensor type ("uint8" pixels or "int8"); output float32.
    Returns the flatbuffer and notes for its metadata.

    The converter calibrates on ``calibration()``, then quantises. ``range_quantile``: each activation's range
    is its quantiles instead of its extremes over the calibration images (export/activation_ranges.py; None:
    the extremes, the converter's own rule).

    ``float_first_conv``: everything between the input and the first convolution (the in-graph normalisation
    and its padding) and that convolution stay float, as in the ONNX recipe: one int8 scale cannot hold the three
    channels' mean-subtracted pixel ranges on the pixels' own grid (docs/quantisation.md). The quantiser leaves
    named layers in float: quantised fully once to find the layers' names, then again without them.
    """
    import tensorflow as tf
    from tensorflow.lite.python import convert as lite_convert

    converter = _converter(saved_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    dtype = saved_model_input_dtype(saved_model)  # uint8 pixels feed a float input of pixel values
    converter.representative_dataset = lambda: ([np.asarray(x, dtype)[None]] for x in calibration())
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if float_first_conv:
        converter.target_spec.supported_ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
    converter.inference_input_type = getattr(tf, io_type)
    converter.experimental_mlir_quantizer = True
    converter._experimental_calibrate_only = True  # the recorded ranges, to quantise below
    calibrated = converter.convert()
    notes: dict = {}
    if range_quantile:
        calibrated, notes["activation_ranges"] = quantile_ranges(calibrated, calibration, range_quantile)
    quantize = functools.partial(lite_convert.mlir_quantize, calibrated, input_data_type=getattr(tf, io_type),
                                 output_data_type=tf.float32)  # what converter.convert() does after calibrating
    payload = quantize()
    if float_first_conv:
        names = first_layers(payload)
        log.info("full-int8 TFLite: %d layers left in float (%s)", len(names), ", ".join(n.split(";")[0] for n in names))
        payload = quantize(denylisted_nodes=names)
    return payload, notes


def saved_model_input_dtype(saved_model: Path) -> np.dtype:
    """The numpy dtype of a SavedModel's (single) serving input, read from its graph definition."""
    import tensorflow as tf
    from tensorflow.python.tools import saved_model_utils

    signature = saved_model_utils.get_meta_graph_def(str(saved_model), "serve").signature_def["serving_default"]
    (spec,) = signature.inputs.values()
    return np.dtype(tf.dtypes.as_dtype(spec.dtype).as_numpy_dtype)


def first_layers(flatbuffer: bytes) -> list[str]:
    """Output tensor names of the first convolution of a TFLite model and of the arithmetic (add, subtract,
    multiply, divide) and padding on the path from the input to it: the input normalisation."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    from export.bias_correction import builtin_code

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    conv, path = first_conv_and_input_ops(model)
    if conv is None:
        raise ValueError("the model has no convolution to keep in float")
    ops = schema.BuiltinOperator
    in_float = [op for op in path if builtin_code(model, op) in (ops.ADD, ops.SUB, ops.MUL, ops.DIV, ops.PAD)]
    tensors = model.subgraphs[0].tensors
    return [tensors[op.outputs[0]].name.decode() for op in reversed([conv, *in_float])]


def onnx_fp32(saved_model: Path, output: Path) -> Path:
    """tf2onnx from the SavedModel (its command line is the most robust entry point with Keras 3)."""
    cmd = [sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(saved_model), "--output", str(output),
           "--opset", str(ONNX_OPSET)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0 or not output.is_file():
        raise RuntimeError(f"tf2onnx failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return output


class OnnxJob:
    """The ONNX formats made in a process of their own: :func:`onnx_fp32`, then (with ``int8``) :func:`onnx_int8`
    calibrated on ``calibration``'s inputs, the same calls as in this process. Started before the TFLite
    conversions, it runs beside them: the TFLite converter and its int8 calibration use one core, tf2onnx one
    core, NNCF's statistics ONNX Runtime's threads; on a 2-core CPU they overlap (docs/export.md, "Where the
    time goes"). :meth:`result` waits for it."""

    def __init__(self, saved_model: Path, fp32: Path, work: Path, int8: Path | None = None,
                 calibration: Callable[[], Iterable[np.ndarray]] | None = None, quantizer: str = "nncf",
                 float_first_conv: bool = True) -> None:
        self._result_file = Path(work) / "onnx_job.json"
        cmd = [sys.executable, "-m", "export.convert", "--saved-model", str(saved_model), "--fp32", str(fp32),
               "--result", str(self._result_file)]
        if int8 is not None:
            if quantizer not in ONNX_QUANTIZERS:
                raise ValueError(f"quantizer must be one of {ONNX_QUANTIZERS}, got {quantizer!r}")
            inputs = Path(work) / "onnx_calibration.npy"
            np.save(inputs, np.stack([np.asarray(x, np.float32) for x in calibration()]))
            cmd += ["--int8", str(int8), "--calibration", str(inputs), "--quantizer", quantizer]
            if not float_first_conv:
                cmd.append("--quantize-first-conv")
        package_root = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH"))
                                                           if p)}
        self.seconds: float | None = None  # the job's own wall time, once finished
        self._result: dict | None = None
        self._started = time.perf_counter()
        self._stderr = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: tf2onnx and NNCF log a lot
        self._process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self._stderr, text=True, env=env)

    def result(self) -> dict:
        """``{"fp32": path, "int8": path or None, "float_nodes": [...]}`` once the job has finished; RuntimeError
        with the end of its log if it failed."""
        if self._result is not None:
            return self._result
        code = self._process.wait()
        if self.seconds is None:
            self.seconds = time.perf_counter() - self._started
        if code != 0 or not self._result_file.is_file():
            self._stderr.seek(0)
            raise RuntimeError(f"the ONNX conversion failed (exit {code}):\n{self._stderr.read()[-3000:]}")
        self._result = json.loads(self._result_file.read_text())
        return self._result

    def close(self) -> None:
        """Stop it if it still runs (an export that failed elsewhere) and release its log."""
        if self._process.poll() is None:
            self._process.terminate()
            self._process.wait()
        self._stderr.close()


def _onnx_job_main(argv: list[str] | None = None) -> int:
    """Entry point of :class:`OnnxJob`'s process."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m export.convert", description="ONNX formats of a SavedModel")
    parser.add_argument("--saved-model", required=True)
    parser.add_argument("--fp32", required=True)
    parser.add_argument("--result", required=True)
    parser.add_argument("--int8")
    parser.add_argument("--calibration", help=".npy of float model inputs (N, H, W, 3)")
    parser.add_argument("--quantizer", default="nncf", choices=ONNX_QUANTIZERS)
    parser.add_argument("--quantize-first-conv", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.perf_counter()
    fp32 = onnx_fp32(Path(args.saved_model), Path(args.fp32))
    result = {"fp32": str(fp32), "int8": None, "float_nodes": None,
              "seconds": {"onnx_fp32": round(time.perf_counter() - started, 3)}}
    if args.int8:
        started = time.perf_counter()
        inputs = np.load(args.calibration)
        result["float_nodes"] = onnx_int8(fp32, Path(args.int8), lambda: iter(inputs), args.quantizer,
                                          not args.quantize_first_conv)
        result["int8"] = args.int8
        result["seconds"]["onnx_int8"] = round(time.perf_counter() - started, 3)
    Path(args.result).write_text(json.dumps(result))
    return 0


ONNX_QUANTIZERS = ("nncf", "ort")


def onnx_int8(fp32_model: Path, output: Path, calibration: Callable[[], Iterable[np.ndarray]],
              quantizer: str = "nncf", float_first_conv: bool = True) -> list[str]:
    """Static QDQ int8 of an fp32 ONNX model, calibrated on the given float inputs: uint8 activations, int8
    per-channel weights reduced to 7 bits (x86 CPUs without VNNI sum u8*s8 pairs in saturating 16 bits, which
    full 8-bit weights overflow).

    ``quantizer="nncf"`` (default): NNCF post-training quantisation, which also corrects each layer's bias for
    the quantisation error; its signed activations are then stored as uint8 (:func:`activations_to_uint8`,
    exact) because ONNX Runtime's fast kernels are u8*s8. ``"ort"``: ONNX Runtime's ``quantize_static``.
    Either way, 1×1 stride-2 convolutions then take a subsampled input, exact, which OpenVINO runs in int8
    (:func:`subsample_strided_pointwise_inputs`).

    ``float_first_conv`` (default) keeps the first convolution in float: quantising it rounds the normalised
    input to a grid that is not the pixels' own and the 7×7×3 filters to 7 bits, the largest single source of
    the unknown score's error against float. The measurements behind these choices: docs/quantisation.md.
    Returns the names of the nodes left in float.
    """
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if quantizer not in ONNX_QUANTIZERS:
        raise ValueError(f"quantizer must be one of {ONNX_QUANTIZERS}, got {quantizer!r}")
    prepared = output.with_name(output.stem + ".pre.onnx")
    try:
        quant_pre_process(str(fp32_model), str(prepared), skip_symbolic_shape=False)
        model = onnx.load(str(prepared))  # loaded once; both quantisers take the in-memory model
    finally:
        prepared.unlink(missing_ok=True)
    constants = {t.name for t in model.graph.initializer}
    input_name = next(i.name for i in model.graph.input if i.name not in constants)
    samples = [x[None].astype(np.float32) for x in calibration()]
    float_nodes = [first_conv_name(model)] if float_first_conv else []
    quantize = _nncf_int8 if quantizer == "nncf" else _ort_int8
    quantized = quantize(model, output, input_name, samples, float_nodes)
    rewritten = subsample_strided_pointwise_inputs(quantized)
    log.debug("%d strided 1x1 convolutions take a subsampled input", rewritten)
    onnx.save(quantized, str(output))
    return float_nodes


def first_conv_name(model) -> str:
    """Name of the first Conv node of an ONNX ``ModelProto`` (graphs are stored in topological order: the one
    fed by the input). A nameless one (ONNX allows it) is named ``first_conv`` in ``model``, so quantisers can
    be told to skip it."""
    node = next((n for n in model.graph.node if n.op_type == "Conv"), None)
    if node is None:
        raise ValueError("the model has no Conv node to keep in float (use float_first_conv=False)")
    if not node.name:
        taken = {n.name for n in model.graph.node}
        node.name = next(f"first_conv{i or ''}" for i in range(len(taken) + 1) if f"first_conv{i or ''}" not in taken)
    return node.name


def _ort_int8(model, output: Path, input_name: str, samples: list[np.ndarray], float_nodes: list[str]):
    """ONNX Runtime's ``quantize_static``; it writes ``output``, which is read back for the rewrites."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(samples)

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {input_name: x}

    quantize_static(model, str(output), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                    reduce_range=True, nodes_to_exclude=float_nodes)
    return onnx.load(str(output))


def _nncf_int8(model, output: Path, input_name: str, samples: list[np.ndarray], float_nodes: list[str]):
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    quantized = nncf.quantize(
        model, nncf.Dataset(samples, lambda x: {input_name: x}),
        preset=nncf.QuantizationPreset.MIXED, subset_size=len(samples),
        advanced_parameters=AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE),  # 7-bit weights
        ignored_scope=nncf.IgnoredScope(names=float_nodes) if float_nodes else None,
    )
    return activations_to_uint8(quantized)


if __name__ == "__main__":
    sys.exit(_onnx_job_main())
