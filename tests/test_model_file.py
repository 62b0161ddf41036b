"""A model file carries a digest of its own bytes; the runtime refuses one whose weights changed."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from edge_runtime import Classifier, ModelLoadError
from edge_runtime.metadata import read_metadata
from edge_runtime.model_file import graph_sha256, graph_sha256_of_file, write_model
from edge_runtime.onnx_metadata import read_metadata_props


def _stamped(source: Path, dest: Path) -> Path:
    return write_model(dest, source.read_bytes(), read_metadata(source))


def _largest_weight_bytes(path: Path) -> bytes:
    """The raw bytes of the model's largest constant tensor, read with the format's own tools."""
    if path.suffix == ".onnx":
        import onnx
        from onnx import numpy_helper

        weights = [numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer]
    else:
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(path))
        weights = []
        for detail in interpreter.get_tensor_details():
            try:
                weights.append(interpreter.get_tensor(detail["index"]))
            except ValueError:  # activations have no data before a run
                continue
    return max(weights, key=lambda w: w.nbytes).tobytes()


def _flip_a_bit_in_the_weights(path: Path) -> None:
    data = bytearray(path.read_bytes())
    weights = _largest_weight_bytes(path)
    at = data.find(weights)
    assert at > 0 and data.find(weights, at + 1) < 0
    data[at + len(weights) // 2] ^= 0x01  # one weight changes by a rounding step: the model still runs
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("kind", ["tflite", "onnx"])
def test_a_written_model_loads_and_carries_the_digest_of_its_graph(tiny_edge_models, tmp_path: Path, kind: str):
    path = _stamped(getattr(tiny_edge_models, kind), tmp_path / f"m.{kind}")
    meta = read_metadata(path)
    assert meta.graph_sha256 == graph_sha256(path.read_bytes(), path.suffix) == graph_sha256_of_file(path)
    assert Classifier.load(path).labels == tiny_edge_models.labels


@pytest.mark.parametrize("kind", ["tflite", "onnx"])
def test_a_flipped_byte_in_the_weights_is_refused_at_load(tiny_edge_models, tmp_path: Path, kind: str):
    path = _stamped(getattr(tiny_edge_models, kind), tmp_path / f"m.{kind}")
    _flip_a_bit_in_the_weights(path)
    with pytest.raises(ModelLoadError, match="do not match the digest"):
        Classifier.load(path)


@pytest.mark.parametrize("kind", ["tflite", "onnx"])
def test_new_metadata_replaces_the_old_and_keeps_the_digest_of_the_same_graph(tiny_edge_models, tmp_path: Path,
                                                                               kind: str):
    first = _stamped(getattr(tiny_edge_models, kind), tmp_path / f"a.{kind}")
    meta = dataclasses.replace(read_metadata(first), extra={"note": "rewritten"})
    second = write_model(tmp_path / f"b.{kind}", first.read_bytes(), meta)
    again = read_metadata(second)
    assert again.extra == {"note": "rewritten"} and again.graph_sha256 == read_metadata(first).graph_sha256
    if kind == "onnx":
        assert list(read_metadata_props(second)) == ["edge_metadata"]  # replaced, not added twice


def test_models_without_a_digest_still_load(tiny_edge_models):
    assert read_metadata(tiny_edge_models.tflite).graph_sha256 == ""
    assert Classifier.load(tiny_edge_models.tflite).labels == tiny_edge_models.labels


def test_an_interrupted_write_leaves_the_previous_file(tiny_edge_models, tmp_path: Path, monkeypatch):
    import os

    path = _stamped(tiny_edge_models.tflite, tmp_path / "m.tflite")
    before = path.read_bytes()

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_model(path, before, dataclasses.replace(read_metadata(path), extra={"x": 1}))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.tflite"]  # no temporary file left behind
