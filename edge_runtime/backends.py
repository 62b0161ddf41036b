"""Inference engines behind one small interface: LiteRT for ``.tflite``, ONNX Runtime for ``.onnx``.

Engine packages are imported only when a model of their kind is loaded, so ``import edge_runtime`` stays
light and a device needs only the engine it uses. Quantisation is handled here: a float32 batch fed to an
int8/uint8 input is quantised with the input tensor's scale and zero point, and integer outputs are
dequantised, so :meth:`Backend.run` always returns float32 probabilities.
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from edge_runtime.errors import EdgeRuntimeError

log = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "steel-edge-inspect[edge]"'
SUFFIX_ENGINES = {".tflite": "litert", ".onnx": "onnxruntime"}
_TFLITE_IDENTIFIER = b"TFL3"  # flatbuffer file identifier, bytes 4..8 of every .tflite file
_ONNX_DTYPES = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8, "tensor(int8)": np.int8}


class ModelLoadError(EdgeRuntimeError):
    """A model file is missing, of an unsupported kind, or not loadable by its engine."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot load model '{self.path}': {reason}")


class BackendUnavailableError(EdgeRuntimeError):
    """The engine package a model needs is not installed."""

    def __init__(self, engine: str, package: str) -> None:
        self.engine = engine
        self.package = package
        super().__init__(
            f"the {engine} engine needs the '{package}' package, which is not installed; "
            f"install the device extras with {INSTALL_HINT} (or just: pip install {package})"
        )


def default_threads() -> int:
    """CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def engine_for(path: str | Path) -> str:
    """The engine that runs a model file, from its suffix (.tflite -> litert, .onnx -> onnxruntime)."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIX_ENGINES:
        raise ModelLoadError(
            path, f"unsupported model format '{suffix or '(no suffix)'}'; expected a .tflite or .onnx file"
        )
    return SUFFIX_ENGINES[suffix]


def check_model_file(path: str | Path) -> Path:
    """Return ``path`` as a Path after checking that it names an existing model file of a known kind."""
    path = Path(path)
    engine_for(path)
    if not path.is_file():
        what = "is a directory, not a model file" if path.is_dir() else "no such file"
        raise ModelLoadError(path, f"{what}; check the path (export a model with edge-export)")
    return path


class Backend:
    """A loaded model: ``run(batch)`` -> float32 probabilities of shape (N, classes).

    ``input_shape`` is NHWC (batch -1 when dynamic), ``input_dtype`` the numpy dtype the graph takes,
    ``output_width`` the number of classes. ``custom_metadata`` holds the key/value metadata stored in the
    model file's own table (ONNX ``metadata_props``; empty for TFLite, whose metadata is an appended zip).
    Not thread-safe: use one backend per thread.
    """

    name = "base"

    def __init__(
        self,
        path: Path,
        threads: int,
        input_shape: tuple[int, ...],
        input_dtype: np.dtype,
        output_width: int,
        input_quantization: tuple[float, int] = (0.0, 0),
        output_quantization: tuple[float, int] = (0.0, 0),
        custom_metadata: dict[str, str] | None = None,
    ) -> None:
        self.path = path
        self.threads = threads
        self.input_shape = tuple(int(d) for d in input_shape)
        self.input_dtype = np.dtype(input_dtype)
        self.output_width = int(output_width)
        self.input_quantization = input_quantization
        self.output_quantization = output_quantization
        self.custom_metadata = dict(custom_metadata or {})
        if len(self.input_shape) != 4 or self.input_shape[3] != 3:
            raise ModelLoadError(
                path, f"the model input has shape {list(self.input_shape)}; expected NHWC with 3 channels"
            )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}('{self.path}', input={list(self.input_shape)} {self.input_dtype}, "
            f"classes={self.output_width}, threads={self.threads})"
        )

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run a (N, H, W, 3) batch (float32 model input, or uint8 pixels for uint8 graphs)."""
        batch = np.asarray(batch)
        self._check_batch(batch)
        fixed = self.input_shape[0]
        inputs = self._to_input_dtype(batch)
        if fixed <= 0 or fixed == len(batch):
            outputs = self._invoke(inputs)
        elif fixed == 1:
            outputs = np.concatenate([self._invoke(inputs[i : i + 1]) for i in range(len(batch))])
        else:
            raise ValueError(f"model '{self.path}' takes batches of exactly {fixed} images, got {len(batch)}")
        return self._dequantize(outputs)

    def _invoke(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _check_batch(self, batch: np.ndarray) -> None:
        expected = self.input_shape[1:]
        if batch.ndim != 4 or batch.shape[1:] != expected or len(batch) == 0:
            raise ValueError(
                f"model '{self.path}' expects a non-empty batch of shape (N, {', '.join(map(str, expected))}), "
                f"got {batch.shape}"
            )

    def _to_input_dtype(self, batch: np.ndarray) -> np.ndarray:
        target = self.input_dtype
        if batch.dtype == target:
            return np.ascontiguousarray(batch)
        if target == np.float32:
            return batch.astype(np.float32)
        scale, zero_point = self.input_quantization
        if np.issubdtype(batch.dtype, np.floating) and scale > 0:
            info = np.iinfo(target)
            quantised = np.round(batch.astype(np.float32) / scale + zero_point)
            return np.clip(quantised, info.min, info.max).astype(target)
        raise ValueError(
            f"model '{self.path}' takes {target} input"
            + (" (raw pixels: pass prepare_pixels output)" if scale <= 0 else "")
            + f", got a {batch.dtype} batch"
        )

    def _dequantize(self, outputs: np.ndarray) -> np.ndarray:
        scale, zero_point = self.output_quantization
        if np.issubdtype(outputs.dtype, np.integer) and scale > 0:
            return ((outputs.astype(np.float32) - zero_point) * scale).astype(np.float32)
        return outputs.astype(np.float32, copy=False)


class LiteRTBackend(Backend):
    """A ``.tflite`` model run by the LiteRT interpreter (ai-edge-litert)."""

    name = "litert"

    def __init__(self, path: Path, threads: int) -> None:
        interpreter_class = _import("litert", "ai-edge-litert", "ai_edge_litert.interpreter").Interpreter
        _check_tflite_identifier(path)
        try:
            self._interpreter = interpreter_class(model_path=str(path), num_threads=threads)
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(path, f"LiteRT rejected it ({exc}); re-export it with edge-export") from exc
        inputs = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelLoadError(path, f"expected one input and one output, found {len(inputs)} and {len(outputs)}")
        self._input, self._output = inputs[0], outputs[0]
        super().__init__(
            path,
            threads,
            input_shape=tuple(self._input["shape"]),
            input_dtype=self._input["dtype"],
            output_width=int(self._output["shape"][-1]),
            input_quantization=_quantization(self._input),
            output_quantization=_quantization(self._output),
        )

    def _invoke(self, batch: np.ndarray) -> np.ndarray:
        self._interpreter.set_tensor(self._input["index"], batch)
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output["index"]).copy()


class OnnxRuntimeBackend(Backend):
    """An ``.onnx`` model run by ONNX Runtime on the CPU."""

    name = "onnxruntime"

    def __init__(self, path: Path, threads: int) -> None:
        ort = _import("onnxruntime", "onnxruntime", "onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types (InvalidProtobuf, Fail, ...)
            raise ModelLoadError(path, f"ONNX Runtime rejected it ({exc}); re-export it with edge-export") from exc
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelLoadError(path, f"expected one input and one output, found {len(inputs)} and {len(outputs)}")
        if inputs[0].type not in _ONNX_DTYPES:
            raise ModelLoadError(path, f"unsupported input type {inputs[0].type}; expected float32, uint8 or int8")
        self._input_name = inputs[0].name
        super().__init__(
            path,
            threads,
            input_shape=tuple(_dim(d) for d in inputs[0].shape),
            input_dtype=_ONNX_DTYPES[inputs[0].type],
            output_width=_dim(outputs[0].shape[-1]),
            custom_metadata=self._session.get_modelmeta().custom_metadata_map,
        )

    def _invoke(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self._session.run(None, {self._input_name: batch})[0])


ENGINES: dict[str, type[Backend]] = {"litert": LiteRTBackend, "onnxruntime": OnnxRuntimeBackend}


def load_backend(path: str | Path, engine: str | None = None, threads: int | None = None) -> Backend:
    """Load a model file with ``engine`` (default: from the suffix) on ``threads`` CPU threads (default: all)."""
    path = check_model_file(path)
    engine = engine or engine_for(path)
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {sorted(ENGINES)}")
    threads = default_threads() if threads is None else int(threads)
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    backend = ENGINES[engine](path, threads)
    log.debug("loaded %r", backend)
    return backend


def _import(engine: str, package: str, module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendUnavailableError(engine, package) from exc


def _check_tflite_identifier(path: Path) -> None:
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head[4:8] != _TFLITE_IDENTIFIER:
        raise ModelLoadError(path, "not a TFLite flatbuffer (no 'TFL3' identifier); the file is corrupt or mislabelled")


def _quantization(detail: dict) -> tuple[float, int]:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return float(scale), int(zero_point)


def _dim(value: Any) -> int:
    """An ONNX dimension: an int, or -1 for a symbolic/unknown one."""
    return int(value) if isinstance(value, (int, np.integer)) and value > 0 else -1
