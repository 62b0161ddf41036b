"""An ONNX file's ``metadata_props``, read straight from its protobuf: the runtime's one ONNX metadata reader.

Needs neither onnx nor onnxruntime and loads no model. Only the top-level fields of the ``ModelProto`` are
walked; every field other than ``metadata_props`` (field 14, a ``StringStringEntryProto`` of ``key`` = 1 and
``value`` = 2) is skipped by seeking past it, so the graph and its weights are never read into memory or
parsed, whatever the file's size. A key given twice keeps its last value, as ONNX Runtime does.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from collections.abc import Iterator
from typing import BinaryIO

METADATA_PROPS_FIELD = 14
KEY_FIELD, VALUE_FIELD = 1, 2
_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5
_MAX_VARINT_BYTES = 10


def read_metadata_props(path: str | Path) -> dict[str, str]:
    """``{key: value}`` of the model's ``metadata_props``; empty when it has none.

    Raises ValueError when the file is not a well-formed protobuf message (truncated, or not ONNX at all) and
    OSError when it cannot be read.
    """
    props: dict[str, str] = {}
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        while handle.tell() < size:
            field, wire_type = _read_tag(handle)
            if field == METADATA_PROPS_FIELD and wire_type == _LENGTH_DELIMITED:
                entry = _read_bytes(handle, _read_varint(handle), size, "metadata_props entry")
                key, value = _string_pair(entry)
                props[key] = value
            else:
                _skip(handle, wire_type, size)
    return props


def top_level_spans(stream: BinaryIO, size: int) -> Iterator[tuple[int, int, int]]:
    """(field number, start, end) of each top-level field of a serialized ModelProto read from ``stream``,
    without reading the fields' contents (a model's weights are seeked over)."""
    while stream.tell() < size:
        start = stream.tell()
        field, wire_type = _read_tag(stream)
        _skip(stream, wire_type, size)
        yield field, start, stream.tell()


def top_level_fields(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Each top-level field of a serialized ModelProto as (field number, its raw bytes, tag included).

    Joining the raw bytes of every field gives ``data`` back; dropping or adding fields edits the model without
    parsing its graph. Raises ValueError for a malformed message.
    """
    for field, start, end in top_level_spans(io.BytesIO(data), len(data)):
        yield field, data[start:end]


def encode_metadata_entry(key: str, value: str) -> bytes:
    """One ``metadata_props`` field (tag included), ready to be appended to a serialized ModelProto."""
    entry = _length_delimited(KEY_FIELD, key.encode("utf-8")) + _length_delimited(VALUE_FIELD, value.encode("utf-8"))
    return _length_delimited(METADATA_PROPS_FIELD, entry)


def decode_metadata_entry(raw_field: bytes) -> tuple[str, str]:
    """(key, value) of one raw ``metadata_props`` field as :func:`top_level_fields` yields it."""
    stream = io.BytesIO(raw_field)
    _read_tag(stream)
    return _string_pair(_read_bytes(stream, _read_varint(stream), len(raw_field), "metadata_props entry"))


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | _LENGTH_DELIMITED) + _varint(len(payload)) + payload


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_tag(stream: BinaryIO) -> tuple[int, int]:
    field, wire_type = divmod(_read_varint(stream), 8)
    if field == 0:
        raise ValueError("invalid protobuf field number 0")
    return field, wire_type


def _read_varint(stream: BinaryIO) -> int:
    value = 0
    for i in range(_MAX_VARINT_BYTES):
        byte = stream.read(1)
        if not byte:
            raise ValueError("truncated protobuf varint")
        value |= (byte[0] & 0x7F) << (7 * i)
        if byte[0] < 0x80:
            return value
    raise ValueError("protobuf varint too long")


def _read_bytes(stream: BinaryIO, length: int, end: int, what: str) -> bytes:
    """``length`` bytes, refused before reading when they would run past ``end`` (no huge allocation)."""
    if length > end - stream.tell():
        raise ValueError(f"truncated {what}")
    return stream.read(length)


def _skip(stream: BinaryIO, wire_type: int, end: int) -> None:
    """Move past one field's value without reading it (length-delimited fields are seeked over)."""
    if wire_type == _VARINT:
        _read_varint(stream)
        return
    if wire_type == _FIXED64:
        length = 8
    elif wire_type == _FIXED32:
        length = 4
    elif wire_type == _LENGTH_DELIMITED:
        length = _read_varint(stream)
    else:
        raise ValueError(f"unexpected protobuf wire type {wire_type}")
    if length > end - stream.tell():
        raise ValueError("truncated protobuf message")
    stream.seek(length, os.SEEK_CUR)


def _string_pair(entry: bytes) -> tuple[str, str]:
    """(key, value) of a serialized ``StringStringEntryProto``; unknown fields are skipped."""
    fields = {KEY_FIELD: "", VALUE_FIELD: ""}
    stream = io.BytesIO(entry)
    while stream.tell() < len(entry):
        field, wire_type = _read_tag(stream)
        if field in fields and wire_type == _LENGTH_DELIMITED:
            data = _read_bytes(stream, _read_varint(stream), len(entry), "metadata_props entry")
            fields[field] = data.decode("utf-8")
        else:
            _skip(stream, wire_type, len(entry))
    return fields[KEY_FIELD], fields[VALUE_FIELD]
