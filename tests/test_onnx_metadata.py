"""The one ONNX metadata reader: metadata_props straight from the protobuf, the graph never read."""

from __future__ import annotations

import builtins
from pathlib import Path

import pytest

from edge_runtime import onnx_metadata
from edge_runtime.onnx_metadata import read_metadata_props


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def entry(key: str, value: str, extra: bytes = b"") -> bytes:
    return field(14, field(1, key.encode()) + extra + field(2, value.encode()))


def test_props_are_read_around_a_large_graph_without_reading_it(tmp_path, monkeypatch):
    graph = field(7, b"\x00" * 5_000_000)  # the graph (field 7): skipped by seeking
    data = (varint(1 << 3) + varint(9)  # ir_version
            + entry("first", "1") + graph + entry("edge_metadata", '{"é": 1}'))
    path = tmp_path / "model.onnx"
    path.write_bytes(data)
    read = []
    real_open = builtins.open

    class Counting:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def read(self, size=-1):
            chunk = self.handle.read(size)
            read.append(len(chunk))
            return chunk

        def __getattr__(self, name):
            return getattr(self.handle, name)

    monkeypatch.setattr(onnx_metadata, "open", lambda p, mode: Counting(real_open(p, mode)), raising=False)
    assert read_metadata_props(path) == {"first": "1", "edge_metadata": '{"é": 1}'}
    assert sum(read) < 200


def test_unknown_entry_fields_are_skipped_and_the_last_value_of_a_key_wins(tmp_path):
    unknown = varint(3 << 3 | 0) + varint(300) + varint(4 << 3 | 5) + b"abcd"
    path = tmp_path / "model.onnx"
    path.write_bytes(entry("k", "old") + entry("k", "new", unknown) + varint(5 << 3 | 1) + b"12345678")
    assert read_metadata_props(path) == {"k": "new"}
    (tmp_path / "empty.onnx").write_bytes(b"")
    assert read_metadata_props(tmp_path / "empty.onnx") == {}


@pytest.mark.parametrize("data", [
    entry("k", "v")[:-1],  # truncated entry
    field(7, b"x" * 10)[:-3],  # a field longer than the file
    varint(7 << 3 | 2) + varint(1 << 62),  # an absurd length: refused before any read
    b"\xff" * 20,  # not protobuf
    varint(7 << 3 | 3),  # group wire type
])
def test_malformed_files_raise_value_error(tmp_path, data: bytes):
    path = Path(tmp_path / "bad.onnx")
    path.write_bytes(data)
    with pytest.raises(ValueError):
        read_metadata_props(path)


def test_agrees_with_the_onnx_package(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, producer_name="test", doc_string="d" * 500)
    helper.set_model_props(model, {"edge_metadata": "{}", "other": "ü" * 300})
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    assert read_metadata_props(path) == {p.key: p.value for p in onnx.load(str(path)).metadata_props}
