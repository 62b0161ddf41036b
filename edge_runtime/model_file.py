"""Writing a model file with its metadata, and the digest of the model's own bytes that guards it.

Every artifact that edge-export or edge-adapt writes carries ``graph_sha256`` in its metadata: the sha256 of
the model without its metadata (a TFLite file's flatbuffer; an ONNX file's top-level protobuf fields other
than ``metadata_props``). :func:`verify_graph` recomputes it when a model is loaded, so a byte flipped in
the weights is refused with the file's name instead of running silently. Files are written atomically: a
crash mid-write leaves the previous file as it was.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
from pathlib import Path

from edge_runtime.errors import ModelLoadError
from edge_runtime.fileio import write_bytes_atomic
from edge_runtime.metadata import ONNX_METADATA_KEY, ModelMetadata, embed_tflite_metadata, strip_tflite_metadata
from edge_runtime.onnx_metadata import (
    METADATA_PROPS_FIELD,
    decode_metadata_entry,
    encode_metadata_entry,
    top_level_fields,
)

log = logging.getLogger(__name__)


def graph_sha256(data: bytes, suffix: str) -> str:
    """Digest of a model file's bytes without its metadata (``suffix`` ".tflite" or ".onnx")."""
    digest = hashlib.sha256()
    if suffix.lower() == ".onnx":
        for field, raw in top_level_fields(data):
            if field != METADATA_PROPS_FIELD:
                digest.update(raw)
    else:
        digest.update(strip_tflite_metadata(data))
    return digest.hexdigest()


def model_bytes(data: bytes, meta: ModelMetadata, suffix: str) -> bytes:
    """``data`` (a model file, with or without metadata) carrying ``meta`` instead, its digest filled in.

    ONNX ``metadata_props`` entries other than the edge metadata are kept.
    """
    meta = dataclasses.replace(meta, graph_sha256=graph_sha256(data, suffix))
    if suffix.lower() != ".onnx":
        return embed_tflite_metadata(strip_tflite_metadata(data), meta)
    out = io.BytesIO()
    for field, raw in top_level_fields(data):
        if field != METADATA_PROPS_FIELD or not _is_edge_entry(raw):
            out.write(raw)
    out.write(encode_metadata_entry(ONNX_METADATA_KEY, meta.to_json()))
    return out.getvalue()


def write_model(path: str | Path, data: bytes, meta: ModelMetadata) -> Path:
    """Write ``data`` with ``meta`` (and its digest) to ``path`` atomically; returns the path."""
    path = Path(path)
    write_bytes_atomic(path, model_bytes(data, meta, path.suffix))
    return path


def verify_graph(path: str | Path, meta: ModelMetadata) -> None:
    """Refuse a model whose bytes differ from the digest in its metadata (models without one pass, logged)."""
    path = Path(path)
    if not meta.graph_sha256:
        log.debug("'%s' carries no graph digest (exported before digests): not verified", path)
        return
    try:
        actual = graph_sha256(path.read_bytes(), path.suffix)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(path, f"cannot verify the model's digest ({exc}); re-export or re-copy it") from exc
    if actual != meta.graph_sha256:
        raise ModelLoadError(path, "the model's bytes do not match the digest in its metadata (the file is "
                             "corrupt or was changed after export); copy it again or re-export it")


def _is_edge_entry(raw_field: bytes) -> bool:
    return decode_metadata_entry(raw_field)[0] == ONNX_METADATA_KEY
