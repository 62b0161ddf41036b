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
import os
import zipfile
from pathlib import Path
from typing import BinaryIO

from edge_runtime.errors import ModelLoadError
from edge_runtime.fileio import CHUNK_BYTES, write_bytes_atomic
from edge_runtime.metadata import ONNX_METADATA_KEY, ModelMetadata, embed_tflite_metadata, strip_tflite_metadata
from edge_runtime.onnx_metadata import (
    METADATA_PROPS_FIELD,
    decode_metadata_entry,
    encode_metadata_entry,
    top_level_fields,
    top_level_spans,
)

log = logging.getLogger(__name__)


def graph_sha256(data: bytes, suffix: str) -> str:
    """Digest of a model file's bytes without its metadata (``suffix`` ".tflite" or ".onnx")."""
    return _graph_digest(io.BytesIO(data), len(data), suffix)


def graph_sha256_of_file(path: str | Path) -> str:
    """:func:`graph_sha256` of a file, read in chunks (a model never sits in memory whole)."""
    path = Path(path)
    with open(path, "rb") as handle:
        return _graph_digest(handle, os.fstat(handle.fileno()).st_size, path.suffix)


def _graph_digest(stream: BinaryIO, size: int, suffix: str) -> str:
    if suffix.lower() == ".onnx":
        spans = [(start, end) for field, start, end in top_level_spans(stream, size) if field != METADATA_PROPS_FIELD]
    else:
        spans = [(0, _tflite_graph_end(stream, size))]
    digest = hashlib.sha256()
    for start, end in spans:
        stream.seek(start)
        while start < end:
            block = stream.read(min(CHUNK_BYTES, end - start))
            if not block:
                raise ValueError("the file ended early")
            digest.update(block)
            start += len(block)
    return digest.hexdigest()


def _tflite_graph_end(stream: BinaryIO, size: int) -> int:
    """Where a TFLite file's flatbuffer ends: at its appended metadata archive, if it has one."""
    try:
        with zipfile.ZipFile(stream) as archive:  # reads the archive's directory only
            offsets = [info.header_offset for info in archive.infolist()]
    except zipfile.BadZipFile:
        return size
    return min(offsets) if offsets else size


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
        actual = graph_sha256_of_file(path)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(path, f"cannot verify the model's digest ({exc}); re-export or re-copy it") from exc
    if actual != meta.graph_sha256:
        raise ModelLoadError(path, "the model's bytes do not match the digest in its metadata (the file is "
                             "corrupt or was changed after export); copy it again or re-export it")


def _is_edge_entry(raw_field: bytes) -> bool:
    return decode_metadata_entry(raw_field)[0] == ONNX_METADATA_KEY
