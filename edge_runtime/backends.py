"""Inference engines behind one small interface: LiteRT for ``.tflite``; ONNX Runtime or OpenVINO for ``.onnx``.

Each suffix has a default engine (:func:`engine_for`); :func:`engines_for` lists every engine that can run
a file (``edge_runtime.engine_select`` measures them and picks the fastest). Engine packages are imported
only when a model of their kind is loaded, so ``import edge_runtime`` stays light and a device needs only
the engine it uses. Quantisation is handled here: a float32 batch fed to an
int8/uint8 input is quantised with the input tensor's scale and zero point, and integer outputs are
dequantised, so :meth:`Backend.run` always returns float32 probabilities.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from edge_runtime.errors import BackendUnavailableError, ModelLoadError
from edge_runtime.onnx_metadata import read_metadata_props

log = logging.getLogger(__name__)

SUFFIX_ENGINES = {".tflite": "litert", ".onnx": "onnxruntime"}
_TFLITE_IDENTIFIER = b"TFL3"  # flatbuffer file identifier, bytes 4..8 of every .tflite file
_ONNX_DTYPES = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8, "tensor(int8)": np.int8}


def default_threads() -> int:
    """CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def engine_for(path: str | Path) -> str:
    """The default engine of a model file, from its suffix (.tflite -> litert, .onnx -> onnxruntime)."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIX_ENGINES:
        raise ModelLoadError(
            path, f"unsupported model format '{suffix or '(no suffix)'}'; expected a .tflite or .onnx file"
        )
    return SUFFIX_ENGINES[suffix]


def engines_for(path: str | Path) -> list[str]:
    """Every registered engine that can run a model file (installed or not), the suffix's default first."""
    default = engine_for(path)
    suffix = Path(path).suffix.lower()
    able = [name for name, cls in ENGINES.items() if suffix in cls.suffixes]
    return sorted(able, key=lambda name: name != default)


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

    A model may have more outputs (the exported ones add an ``embedding`` for the unknown score):
    ``run_outputs(batch)`` returns them all, dequantised, in the engine's output order; the class
    probabilities are the narrowest output, which ``run`` returns. ``output_widths`` lists every output's width.
    ``input_shape`` is NHWC (batch -1 when dynamic), ``input_dtype`` the numpy dtype the graph takes,
    ``output_width`` the number of classes. ``custom_metadata`` holds the key/value metadata stored in the
    model file's own table (ONNX ``metadata_props``; empty for TFLite, whose metadata is an appended zip).
    Not thread-safe: use one backend per thread.

    Class attributes describe the engine: ``suffixes`` it runs, the pip ``package`` and the importable
    ``module`` it needs, the package ``extra`` that installs it, and ``silenced`` modules kept out of the process
    before it is imported (the engine falls back to its own stand-in without them).
    """

    name = "base"
    suffixes: tuple[str, ...] = ()
    package = ""
    module = ""
    extra = "edge"
    silenced: tuple[str, ...] = ()
    resizable = False  # True: the engine resizes a batch-1 graph input to larger batches (see max_batch)

    def __init__(
        self,
        path: Path,
        threads: int,
        input_shape: tuple[int, ...],
        input_dtype: np.dtype,
        output_widths: list[int],
        input_quantization: tuple[float, int] = (0.0, 0),
        output_quantizations: list[tuple[float, int]] | None = None,
    ) -> None:
        self.path = path
        self.threads = threads
        self.input_shape = tuple(int(d) for d in input_shape)
        self.input_dtype = np.dtype(input_dtype)
        self.output_widths = [int(w) for w in output_widths]
        self.primary_output = _narrowest(self.output_widths)
        self.output_width = self.output_widths[self.primary_output]
        self.input_quantization = input_quantization
        self.output_quantizations = list(output_quantizations or [(0.0, 0)] * len(self.output_widths))
        # images per engine call for a batch-1 graph of a ``resizable`` engine; 1 keeps one call per image
        self.max_batch = 1
        if len(self.input_shape) != 4 or self.input_shape[3] != 3:
            raise ModelLoadError(
                path, f"the model input has shape {list(self.input_shape)}; expected NHWC with 3 channels"
            )

    @cached_property
    def custom_metadata(self) -> dict[str, str]:
        """The ONNX file's ``metadata_props`` (read once, by :mod:`edge_runtime.onnx_metadata`); {} otherwise."""
        if self.path.suffix.lower() != ".onnx":
            return {}
        try:
            return read_metadata_props(self.path)
        except (OSError, ValueError) as exc:
            log.warning("cannot read the metadata_props of '%s': %s", self.path, exc)
            return {}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}('{self.path}', input={list(self.input_shape)} {self.input_dtype}, "
            f"classes={self.output_width}, threads={self.threads})"
        )

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities of a (N, H, W, 3) batch (float32 model input, or uint8 pixels for uint8 graphs)."""
        return self.run_outputs(batch)[self.primary_output]

    def run_outputs(self, batch: np.ndarray) -> list[np.ndarray]:
        """Every output of the model for a batch, dequantised to float32, in the engine's output order."""
        batch = np.asarray(batch)
        self._check_batch(batch)
        fixed = self.input_shape[0]
        inputs = self._to_input_dtype(batch)
        if fixed <= 0 or fixed == len(batch):
            outputs = self._invoke(inputs)
        elif fixed == 1:
            step = self.max_batch if self.resizable else 1
            per_call = [self._invoke(inputs[i : i + step]) for i in range(0, len(batch), step)]
            outputs = [np.concatenate(parts) for parts in zip(*per_call)]
        else:
            raise ValueError(f"model '{self.path}' takes batches of exactly {fixed} images, got {len(batch)}")
        return [dequantize(o, q) for o, q in zip(outputs, self.output_quantizations)]

    def _invoke(self, batch: np.ndarray) -> list[np.ndarray]:
        """Every output, raw (possibly quantised), in output order."""
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
        scale, _ = self.input_quantization
        if np.issubdtype(batch.dtype, np.floating) and scale > 0:
            return quantize(batch, target, self.input_quantization)
        raise ValueError(
            f"model '{self.path}' takes {target} input"
            + (" (raw pixels: pass prepare_pixels output)" if scale <= 0 else "")
            + f", got a {batch.dtype} batch"
        )


def quantize(values: np.ndarray, dtype: Any, quantization: tuple[float, int]) -> np.ndarray:
    """Float ``values`` as a quantised tensor of integer ``dtype`` with its (scale, zero point), clipped to the
    type's range: how the device feeds a float input to an integer model."""
    scale, zero_point = quantization
    info = np.iinfo(dtype)
    return np.clip(np.round(values.astype(np.float32) / scale + zero_point), info.min, info.max).astype(dtype)


def dequantize(values: np.ndarray, quantization: tuple[float, int]) -> np.ndarray:
    """An integer tensor's real values (float32) from its (scale, zero point); float tensors pass unchanged."""
    scale, zero_point = quantization
    if np.issubdtype(values.dtype, np.integer) and scale > 0:
        return ((values.astype(np.float32) - zero_point) * scale).astype(np.float32)
    return values.astype(np.float32, copy=False)


class LiteRTBackend(Backend):
    """A ``.tflite`` model run by the LiteRT interpreter (ai-edge-litert)."""

    name = "litert"
    suffixes = (".tflite",)
    package = "ai-edge-litert"
    module = "ai_edge_litert.interpreter"
    resizable = True

    def __init__(self, path: Path, threads: int) -> None:
        interpreter_class = _import_engine(type(self)).Interpreter
        _check_tflite_identifier(path)
        try:
            self._interpreter = interpreter_class(model_path=str(path), num_threads=threads)
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(path, f"LiteRT rejected it ({exc}); re-export it with edge-export") from exc
        inputs = self._interpreter.get_input_details()
        self._outputs = self._interpreter.get_output_details()
        if len(inputs) != 1 or not self._outputs:
            raise ModelLoadError(path, f"expected one input and at least one output, found {len(inputs)} and "
                                 f"{len(self._outputs)}")
        self._input = inputs[0]
        self._batch = int(self._input["shape"][0])
        super().__init__(
            path,
            threads,
            input_shape=tuple(self._input["shape"]),
            input_dtype=self._input["dtype"],
            output_widths=[int(o["shape"][-1]) for o in self._outputs],
            input_quantization=_quantization(self._input),
            output_quantizations=[_quantization(o) for o in self._outputs],
        )

    def _invoke(self, batch: np.ndarray) -> list[np.ndarray]:
        if len(batch) != self._batch:  # batches of the same size follow each other: resize only on a change
            self._interpreter.resize_tensor_input(self._input["index"], [len(batch), *self.input_shape[1:]])
            self._interpreter.allocate_tensors()
            self._batch = len(batch)
        self._interpreter.set_tensor(self._input["index"], batch)
        self._interpreter.invoke()
        return [self._interpreter.get_tensor(o["index"]).copy() for o in self._outputs]


class OnnxRuntimeBackend(Backend):
    """An ``.onnx`` model run by ONNX Runtime on the CPU."""

    name = "onnxruntime"
    suffixes = (".onnx",)
    package = "onnxruntime"
    module = "onnxruntime"

    def __init__(self, path: Path, threads: int) -> None:
        ort = _import_engine(type(self))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types (InvalidProtobuf, Fail, ...)
            raise ModelLoadError(path, f"ONNX Runtime rejected it ({exc}); re-export it with edge-export") from exc
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or not outputs:
            raise ModelLoadError(path, f"expected one input and at least one output, found {len(inputs)} and "
                                 f"{len(outputs)}")
        if inputs[0].type not in _ONNX_DTYPES:
            raise ModelLoadError(path, f"unsupported input type {inputs[0].type}; expected float32, uint8 or int8")
        self._input_name = inputs[0].name
        super().__init__(
            path,
            threads,
            input_shape=tuple(_dim(d) for d in inputs[0].shape),
            input_dtype=_ONNX_DTYPES[inputs[0].type],
            output_widths=[_dim(o.shape[-1]) for o in outputs],
        )

    def _invoke(self, batch: np.ndarray) -> list[np.ndarray]:
        return [np.asarray(o) for o in self._session.run(None, {self._input_name: batch})]


class OpenVINOBackend(Backend):
    """An ``.onnx`` model (fp32 or QDQ int8) compiled by OpenVINO for the CPU, tuned for batch-1 latency.

    A float model runs in float32 (``INFERENCE_PRECISION_HINT``), as in ONNX Runtime: it is the reference the
    int8 artifacts are gated against, and OpenVINO would otherwise pick bf16/fp16 on CPUs that have it. A
    quantised model (QDQ, read as ``FakeQuantize``) keeps the CPU plugin's own choice for the layers left in
    float (bf16 where the CPU has it): 1.7x faster on an AMX CPU, and its export gates are measured that way
    (see :func:`_openvino_config`). A model with a dynamic batch is compiled for a batch of one
    (:func:`_fixed_batch`) and a batch runs image by image through it: every image gets the same numbers
    alone or in a batch (the export checks send batches, the device one frame at a time). With ``max_batch``
    above one (the throughput mode's replicas), full chunks of ``max_batch`` images run through a second copy
    compiled for that batch, once its outputs for the first such chunk have matched the batch-1 copy's bit for
    bit on this CPU; where they do not, chunks keep running image by image. Outputs come in the ONNX graph's
    output order, as ONNX Runtime returns them.
    """

    name = "openvino"
    suffixes = (".onnx",)
    package = "openvino"
    module = "openvino"
    # importing openvino sends a usage event to an analytics server from a forked process (openvino.tools.ovc
    # imports openvino_telemetry); a line box sends nothing, so that module is kept out and ovc uses its stub
    silenced = ("openvino_telemetry",)

    def __init__(self, path: Path, threads: int) -> None:
        _import_engine(type(self))  # a missing package is reported as such, not as a rejected model
        try:
            model, compiled, one_at_a_time = openvino_compile(path, threads)
        except Exception as exc:  # OpenVINO raises RuntimeError and its own exception types
            raise ModelLoadError(path, f"OpenVINO rejected it ({exc}); re-export it with edge-export") from exc
        self._model = model
        self._batched: Any = None  # the request of the copy compiled for max_batch, once it has matched
        self._batched_size = 0  # the batch size self._batched was tried for (0: not tried)
        inputs, outputs = model.inputs, compiled.outputs
        if len(inputs) != 1 or not outputs:
            raise ModelLoadError(path, f"expected one input and at least one output, found {len(inputs)} and "
                                 f"{len(outputs)}")
        dtype = inputs[0].get_element_type().to_dtype()
        if dtype not in (np.float32, np.uint8, np.int8):
            raise ModelLoadError(path, f"unsupported input type {dtype}; expected float32, uint8 or int8")
        self._request = compiled.create_infer_request()
        self._one_at_a_time = one_at_a_time
        self._output_count = len(outputs)
        super().__init__(
            path,
            threads,
            input_shape=_openvino_shape(inputs[0], path),
            input_dtype=dtype,
            output_widths=[_openvino_width(o) for o in outputs],
        )

    def _invoke(self, batch: np.ndarray) -> list[np.ndarray]:
        if not self._one_at_a_time or len(batch) == 1:
            return self._infer(self._request, batch)
        size = self.max_batch
        if size <= 1:
            return self._one_by_one(batch)
        parts = [self._chunk(batch[start:start + size], size) for start in range(0, len(batch), size)]
        return [np.concatenate(outputs) for outputs in zip(*parts)]

    def _one_by_one(self, batch: np.ndarray) -> list[np.ndarray]:
        rows = [self._infer(self._request, batch[i:i + 1]) for i in range(len(batch))]
        return [np.concatenate(outputs) for outputs in zip(*rows)]

    def _chunk(self, chunk: np.ndarray, size: int) -> list[np.ndarray]:
        """One chunk of at most ``size`` images: a full one through the copy compiled for ``size`` once that copy
        has matched the batch-1 copy, anything else image by image."""
        if len(chunk) < size:
            return self._one_by_one(chunk)
        if self._batched_size != size:
            return self._try_batched(chunk)
        return self._infer(self._batched, chunk) if self._batched is not None else self._one_by_one(chunk)

    def _try_batched(self, chunk: np.ndarray) -> list[np.ndarray]:
        """Compile a copy for ``len(chunk)`` images and keep it if its outputs for this chunk equal the batch-1
        copy's in every output (kernels for another batch size may round differently); the batch-1 outputs are
        returned either way."""
        self._batched_size, self._batched = len(chunk), None
        single = self._one_by_one(chunk)
        try:
            request = openvino_compile_model(self._model, self.threads, batch=len(chunk)).create_infer_request()
        except Exception as exc:  # noqa: BLE001 - OpenVINO's exception types; image by image still works
            log.info("OpenVINO could not compile '%s' for batches of %d (%s); running image by image",
                     self.path, len(chunk), exc)
            return single
        if all(np.array_equal(a, b) for a, b in zip(self._infer(request, chunk), single)):
            self._batched = request
            log.debug("'%s' runs full chunks of %d images in one OpenVINO call", self.path, len(chunk))
        else:
            log.info("OpenVINO's batch-%d kernels for '%s' round differently from batch 1 on this CPU; "
                     "running image by image so that every image gets the same numbers", len(chunk), self.path)
        return single

    def _infer(self, request: Any, batch: np.ndarray) -> list[np.ndarray]:
        request.infer({0: batch})
        # the request's output buffers are reused by the next call: copy them out
        return [request.get_output_tensor(i).data.copy() for i in range(self._output_count)]


def openvino_compile(path: str | Path, threads: int, performance_counters: bool = False) -> tuple[Any, Any, bool]:
    """Read and compile ``path`` for the CPU as :class:`OpenVINOBackend` runs it: (model as read, compiled
    model, whether batches run image by image). ``performance_counters`` turns on OpenVINO's per-layer timing
    (``benchmarks.profile``)."""
    ov = _import_engine(OpenVINOBackend)
    model = ov.Core().read_model(str(path))
    compiled = openvino_compile_model(model, threads, performance_counters=performance_counters)
    return model, compiled, _static_rest(model) is not None


def openvino_compile_model(model: Any, threads: int, batch: int = 1, performance_counters: bool = False) -> Any:
    """Compile a model as read by OpenVINO for the CPU with the device's settings (:func:`_openvino_config`),
    its dynamic batch fixed to ``batch`` where it has one."""
    ov = _import_engine(OpenVINOBackend)
    core = ov.Core()
    quantized = any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())
    config = _openvino_config(core, threads, quantized)
    if performance_counters:
        config["PERF_COUNT"] = True
    return core.compile_model(_fixed_batch(ov, model, batch) or model, "CPU", config)


def _fixed_batch(ov: ModuleType, model: Any, batch: int) -> Any | None:
    """A copy of ``model`` with its dynamic batch fixed to ``batch``, or None when the batch is already fixed
    or other dimensions are dynamic too. OpenVINO compiles a static shape to faster code (the shipped ONNX
    int8: 5.60 against 5.00 ms at 2 threads, Intel Xeon with AMX), but to other kernels than the dynamic one:
    with bf16 in the float layers, the same image differed by up to 0.004 in probability between the two, so
    the batch-1 copy serves every batch size unless a copy for a larger batch matches it
    (``OpenVINOBackend._try_batched``)."""
    rest = _static_rest(model)
    if rest is None:
        return None
    fixed = model.clone()
    fixed.reshape({fixed.inputs[0]: ov.PartialShape([batch, *rest])})
    return fixed


def _static_rest(model: Any) -> list[int] | None:
    """The input's dimensions after a dynamic batch, when the model has one input whose batch alone is dynamic."""
    shape = model.inputs[0].get_partial_shape() if len(model.inputs) == 1 else None
    if shape is None or shape.rank.is_dynamic or not shape[0].is_dynamic:
        return None
    rest = list(shape)[1:]
    return None if any(dim.is_dynamic for dim in rest) else [dim.get_length() for dim in rest]


ENGINES: dict[str, type[Backend]] = {
    "litert": LiteRTBackend,
    "onnxruntime": OnnxRuntimeBackend,
    "openvino": OpenVINOBackend,
}


def load_backend(path: str | Path, engine: str | None = None, threads: int | None = None) -> Backend:
    """Load a model file with ``engine`` (default: from the suffix) on ``threads`` CPU threads (default: all).

    An engine that cannot run the file's kind (e.g. litert for an ``.onnx``) raises :class:`ModelLoadError`.
    """
    path = check_model_file(path)
    engine = engine or engine_for(path)
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {sorted(ENGINES)}")
    _check_engine_runs(engine, path)
    threads = default_threads() if threads is None else int(threads)
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    backend = ENGINES[engine](path, threads)
    log.debug("loaded %r", backend)
    return backend


def _check_engine_runs(engine: str, path: Path) -> None:
    suffix = path.suffix.lower()
    if suffix not in ENGINES[engine].suffixes:
        able = engines_for(path)
        raise ModelLoadError(
            path, f"the {engine} engine cannot run {suffix} files (it runs {', '.join(ENGINES[engine].suffixes)}); "
            f"use --engine {' or --engine '.join(able)}, or --engine auto"
        )


def _import_engine(backend_class: type[Backend]) -> ModuleType:
    if backend_class.module not in sys.modules:
        for name in backend_class.silenced:
            sys.modules.setdefault(name, None)  # type: ignore[assignment]  # None: "import name" raises ImportError
    return _import(backend_class.name, backend_class.package, backend_class.module, backend_class.extra)


def _import(engine: str, package: str, module: str, extra: str = "edge") -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendUnavailableError(engine, package, extra) from exc


def _openvino_config(core: Any, threads: int, quantized: bool = False) -> dict[str, Any]:
    """Compile settings for batch-1 latency; those this OpenVINO's CPU plugin lacks are left out.

    Float models are held to float32. Quantised models leave the precision of their float layers to the plugin
    (bf16 on CPUs with AMX or AVX-512 BF16, float32 elsewhere): the shipped ONNX int8 ran at 5.4 ms against
    9.3 ms with float32 forced (2 threads, Intel Xeon with AMX, docs/decisions.md).

    Threads are pinned to cores only when the model gets every core: OpenVINO pins a model's threads starting
    at the first core, so two single-thread copies side by side (the throughput mode, the export checks)
    would share core 0 and run one after the other (measured: 1.0x the images/s of one copy, 2.0x unpinned,
    on 2 cores)."""
    wanted = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
              "ENABLE_CPU_PINNING": threads >= default_threads()}
    if not quantized:
        wanted["INFERENCE_PRECISION_HINT"] = "f32"
    supported = core.get_property("CPU", "SUPPORTED_PROPERTIES")
    left_out = [key for key in wanted if key not in supported]
    if left_out:
        log.debug("this OpenVINO CPU plugin does not support %s; left at their defaults", left_out)
    return {key: value for key, value in wanted.items() if key in supported}


def _openvino_shape(port: Any, path: Path) -> tuple[int, ...]:
    shape = port.get_partial_shape()
    if shape.rank.is_dynamic:
        raise ModelLoadError(path, "the model input has no fixed rank; expected NHWC with 3 channels")
    return tuple(d.get_length() if d.is_static else -1 for d in shape)


def _openvino_width(port: Any) -> int:
    shape = port.get_partial_shape()
    if shape.rank.is_dynamic or shape.rank.get_length() == 0:
        return -1
    last = shape[shape.rank.get_length() - 1]
    return last.get_length() if last.is_static else -1


def _check_tflite_identifier(path: Path) -> None:
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head[4:8] != _TFLITE_IDENTIFIER:
        raise ModelLoadError(path, "not a TFLite flatbuffer (no 'TFL3' identifier); the file is corrupt or mislabelled")


def _quantization(detail: dict) -> tuple[float, int]:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return float(scale), int(zero_point)


def _narrowest(widths: list[int]) -> int:
    """Index of the class-probability output: the narrowest (unknown widths, -1, count as widest)."""
    return min(range(len(widths)), key=lambda i: (widths[i] if widths[i] > 0 else 1 << 30, i))


def _dim(value: Any) -> int:
    """An ONNX dimension: an int, or -1 for a symbolic/unknown one."""
    return int(value) if isinstance(value, (int, np.integer)) and value > 0 else -1
