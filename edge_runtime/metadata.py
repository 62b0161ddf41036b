"""Metadata that travels inside every exported model: class names, input contract, preprocessing, provenance.

Storage:

* TFLite: like TFLite model metadata's "associated files", the ``.tflite`` file is the flatbuffer followed by
  a ZIP archive holding ``edge_metadata.json`` and ``labels.txt``. Interpreters ignore the trailing archive.
* ONNX: the JSON string in the model's ``metadata_props`` under ``edge_metadata`` (written by ``export/``
  with the onnx package; read here by :mod:`edge_runtime.onnx_metadata`, without loading the model).
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge_runtime.backends import Backend, check_model_file
from edge_runtime.errors import MetadataError, ModelLoadError
from edge_runtime.onnx_metadata import read_metadata_props
from edge_runtime.preprocessing import PreprocessConfig

METADATA_SCHEMA = "steel-edge-inspect/model-metadata/1"
METADATA_ENTRY = "edge_metadata.json"
LABELS_ENTRY = "labels.txt"
ONNX_METADATA_KEY = "edge_metadata"
INPUT_DTYPES = ("float32", "uint8", "int8")
FIX_HINT = "re-export the model with edge-export, or pass the class names explicitly (labels=[...] / --labels)"


@dataclass
class ModelMetadata:
    """What the runtime needs to use a model, plus where it came from.

    ``preprocessing_in_graph``: the graph takes raw uint8 BGR pixels at the model size and normalises inside,
    so the runtime only decodes, converts and resizes (``prepare_pixels``) instead of ``preprocess``.
    """

    labels: list[str]
    input_shape: list[int]  # NHWC, e.g. [1, 224, 224, 3]
    input_dtype: str  # "float32", "uint8" or "int8"
    preprocessing: dict[str, Any]  # PreprocessConfig.to_dict()
    preprocessing_in_graph: bool
    format: str  # e.g. "tflite_int8"
    source_model_sha256: str
    split_manifest_sha256: str
    versions: dict[str, str]
    created: str
    extra: dict[str, Any] = field(default_factory=dict)
    graph_sha256: str = ""  # digest of the model's own bytes (edge_runtime.model_file); checked at load
    schema: str = METADATA_SCHEMA

    @property
    def preprocess(self) -> PreprocessConfig:
        return PreprocessConfig.from_dict(self.preprocessing)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str | bytes, source: str | Path) -> "ModelMetadata":
        """Parse and validate; any problem raises :class:`MetadataError` naming ``source``."""
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise MetadataError(source, f"the edge metadata is not valid JSON ({exc}); {FIX_HINT}") from exc
        if not isinstance(data, dict):
            raise MetadataError(source, f"the edge metadata is not a JSON object; {FIX_HINT}")
        try:
            return cls._from_dict(data)
        except (TypeError, ValueError, KeyError) as exc:
            raise MetadataError(source, f"invalid edge metadata: {exc}; {FIX_HINT}") from exc

    @classmethod
    def _from_dict(cls, data: dict[str, Any]) -> "ModelMetadata":
        schema = data.get("schema")
        if schema != METADATA_SCHEMA:
            raise ValueError(f"schema {schema!r} is not the one this runtime reads ({METADATA_SCHEMA!r})")
        for key in ("labels", "input_shape", "input_dtype", "preprocessing", "preprocessing_in_graph"):
            if key not in data:
                raise ValueError(f"'{key}' is missing")
        meta = cls(
            labels=_labels(data["labels"]),
            input_shape=_input_shape(data["input_shape"]),
            input_dtype=_input_dtype(data["input_dtype"]),
            preprocessing=_preprocessing(data["preprocessing"]),
            preprocessing_in_graph=_boolean(data["preprocessing_in_graph"], "preprocessing_in_graph"),
            format=str(data.get("format", "unknown")),
            source_model_sha256=str(data.get("source_model_sha256", "")),
            split_manifest_sha256=str(data.get("split_manifest_sha256", "")),
            versions={str(k): str(v) for k, v in dict(data.get("versions", {})).items()},
            created=str(data.get("created", "")),
            extra=dict(data.get("extra", {})),
            graph_sha256=str(data.get("graph_sha256", "")),
        )
        meta._check_consistent()
        return meta

    def _check_consistent(self) -> None:
        size = tuple(self.preprocess.input_size)
        if size != tuple(self.input_shape[1:3]):
            raise ValueError(f"preprocessing input_size {list(size)} differs from input_shape {self.input_shape}")
        if self.preprocessing_in_graph and self.input_dtype == "int8":
            raise ValueError("preprocessing_in_graph needs a uint8 (or float32) pixel input, not int8")


def _labels(value: Any) -> list[str]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"'labels' must be a non-empty list of class names, got {value!r}")
    if not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f"'labels' must all be non-empty strings, got {value!r}")
    duplicates = sorted({v for v in value if value.count(v) > 1})
    if duplicates:
        raise ValueError(f"'labels' must be unique; repeated: {duplicates}")
    return list(value)


def _input_shape(value: Any) -> list[int]:
    ok = isinstance(value, list) and len(value) == 4 and all(type(v) is int for v in value)
    if not ok or value[3] != 3 or min(value[1:3]) < 1 or value[0] == 0:
        raise ValueError(f"'input_shape' must be 4 ints NHWC with 3 channels, e.g. [1, 224, 224, 3]; got {value!r}")
    return list(value)


def _input_dtype(value: Any) -> str:
    if value not in INPUT_DTYPES:
        raise ValueError(f"'input_dtype' must be one of {list(INPUT_DTYPES)}, got {value!r}")
    return value


def _preprocessing(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"'preprocessing' must be an object, got {value!r}")
    return PreprocessConfig.from_dict(value).to_dict()  # raises ValueError/TypeError when invalid


def _boolean(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"'{key}' must be true or false, got {value!r}")
    return value


def metadata_from_labels(
    labels: list[str],
    input_shape: list[int] | tuple[int, ...],
    input_dtype: str,
    source: str | Path = "(explicit labels)",
) -> ModelMetadata:
    """Metadata for an artifact that has none, from explicit class names and the model's input contract.

    Assumes the default (caffe) preprocessing, done in the graph exactly when the input is uint8.
    ``source`` names the model in error messages.
    """
    try:
        meta = ModelMetadata(
            labels=_labels(list(labels)),
            input_shape=_input_shape([int(d) for d in input_shape]),
            input_dtype=_input_dtype(str(input_dtype)),
            preprocessing=PreprocessConfig(input_size=(int(input_shape[1]), int(input_shape[2]))).to_dict(),
            preprocessing_in_graph=str(input_dtype) == "uint8",
            format="unknown",
            source_model_sha256="",
            split_manifest_sha256="",
            versions={},
            created="",
        )
    except (TypeError, ValueError, IndexError) as exc:
        raise MetadataError(source, f"cannot use the explicit labels: {exc}") from exc
    return meta


def embed_tflite_metadata(flatbuffer: bytes, meta: ModelMetadata) -> bytes:
    """Append the metadata as a ZIP archive (``edge_metadata.json`` + ``labels.txt``) to a TFLite flatbuffer.

    Pass the converter's raw output; a model that already carries edge metadata is refused.
    """
    flatbuffer = bytes(flatbuffer)
    if flatbuffer[4:8] != b"TFL3":
        raise ValueError("not a TFLite flatbuffer (no 'TFL3' identifier); pass the TFLite converter's output")
    if _zip_entry(io.BytesIO(flatbuffer)) is not None:
        raise ValueError(
            "this TFLite model already carries edge metadata; embed into the converter's raw output "
            "(strip_tflite_metadata gives it back)"
        )
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(METADATA_ENTRY, meta.to_json())
        zf.writestr(LABELS_ENTRY, "".join(f"{label}\n" for label in meta.labels))
    return flatbuffer + archive.getvalue()


def strip_tflite_metadata(data: bytes) -> bytes:
    """The TFLite flatbuffer without an appended metadata archive (unchanged if there is none)."""
    data = bytes(data)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            offsets = [info.header_offset for info in zf.infolist()]  # absolute, prefix included
    except zipfile.BadZipFile:
        return data
    return data[: min(offsets)] if offsets else data


def read_tflite_metadata(path: str | Path) -> ModelMetadata:
    """Read the metadata appended to a ``.tflite`` file by :func:`embed_tflite_metadata`."""
    path = Path(path)
    text = _zip_entry(path)
    if text is None:
        raise MetadataError(path, f"has no edge metadata (no '{METADATA_ENTRY}' appended to the model); {FIX_HINT}")
    return ModelMetadata.from_json(text, path)


def _zip_entry(source: Path | io.BytesIO) -> bytes | None:
    """The metadata entry of the ZIP archive at the end of ``source``, or None if there is none."""
    try:
        with zipfile.ZipFile(source) as zf:
            return zf.read(METADATA_ENTRY)
    except (zipfile.BadZipFile, KeyError):
        return None


def read_onnx_metadata(path: str | Path, backend: Backend | None = None) -> ModelMetadata:
    """Read the metadata from an ``.onnx`` file's ``metadata_props``.

    ``backend``: the model already loaded, whose ``custom_metadata`` holds the same table (read once).
    """
    path = Path(path)
    if backend is not None:
        props = backend.custom_metadata
    else:
        try:
            props = read_metadata_props(path)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(path, f"not a readable ONNX model ({exc}); re-export it with edge-export") from exc
    if ONNX_METADATA_KEY not in props:
        raise MetadataError(path, f"has no edge metadata (no '{ONNX_METADATA_KEY}' in metadata_props); {FIX_HINT}")
    return ModelMetadata.from_json(props[ONNX_METADATA_KEY], path)


def read_metadata(path: str | Path, backend: Backend | None = None) -> ModelMetadata:
    """Read a model file's embedded metadata without loading the model; raises ModelLoadError or MetadataError.

    ONNX files keep it in ``metadata_props``; every other kind (.tflite) in an appended archive.
    """
    path = check_model_file(path)
    if path.suffix.lower() == ".onnx":
        return read_onnx_metadata(path, backend)
    return read_tflite_metadata(path)
