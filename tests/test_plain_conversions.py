"""benchmarks.plain_conversions on a tiny run: every plain conversion and the shipped default get a row."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from conftest import write_run_metadata, write_split_run

pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")
pytest.importorskip("nncf")
pytest.importorskip("ai_edge_litert")

SIZE = 32
AUTO, TFLITE = "product default (--engine auto)", "product default.tflite"
PLAIN = {("plain LiteRT int8", "litert"), ("plain ORT QDQ", "onnxruntime"), ("plain OpenVINO NNCF", "openvino")}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A run folder as edge-train writes it (no export/), around a small briefly trained conv net."""
    import keras

    from edge_runtime.preprocessing import PreprocessConfig, load_image

    data, ds, rows, run = write_split_run(tmp_path_factory.mktemp("plain"), per_class=10)
    cfg = PreprocessConfig(input_size=(SIZE, SIZE))
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 64)(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(len(ds.classes), activation="softmax")(x))
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(np.stack([load_image(data / r.path, cfg) for r in rows]),
              np.array([ds.classes.index(r.label) for r in rows]), epochs=20, batch_size=16, verbose=0)
    model.save(run / "model.keras")
    write_run_metadata(run, data, ds.classes, cfg)
    return run


def test_every_candidate_has_timings_and_the_plain_ones_agreement(tiny_run: Path, tmp_path: Path, capsys):
    from benchmarks.plain_conversions import main

    before = sorted(p.name for p in tiny_run.iterdir())
    out, report = tmp_path / "conversions", tmp_path / "plain.json"
    code = main([str(tiny_run), "--calibration", "12", "--threads", "1", "--repeats", "4", "--rounds", "2",
                 "--out", str(out), "--json", str(report)])
    assert code == 0
    result = json.loads(report.read_text())
    assert result["failed_conversions"] == []
    rows = result["rows"]
    models = {(r["candidate"], r["engine"]) for r in rows if r["measured"] == "model"}
    assert PLAIN <= models
    auto = next(r for r in rows if r["candidate"] == AUTO and r["measured"] == "model")
    assert (TFLITE, "litert") in models or (auto["engine"] == "litert" and auto["path"].endswith("default.tflite"))
    assert any(r["measured"] == "predict" and r["kind"] == "product" for r in rows)
    for r in rows:
        assert len(r["samples_ms"]) == 4 and all(ms > 0 for ms in r["samples_ms"]), r["candidate"]
        assert 0 < r["p50_ms"] <= r["p90_ms"]
        assert math.isfinite(r["ratio_to_fastest_plain"]) and r["ratio_to_fastest_plain"] > 0
    plain_rows = [r for r in rows if r["kind"] == "plain"]
    assert min(r["ratio_to_fastest_plain"] for r in plain_rows) == pytest.approx(1.0)
    for r in plain_rows:  # int8 copies of a small net: most answers agree with the float model
        assert r["agreement_images"] == result["evaluation_images"] == 24
        assert 0.5 <= r["agreement"] <= 1.0 and 0.0 <= r["accuracy"] <= 1.0
    assert auto["agreement"] is None  # another network than the tiny run's: no agreement claimed
    table = capsys.readouterr().out
    assert table.startswith("CPU: ")  # the table alone on stdout (progress goes to the log)
    for name, _ in PLAIN | {(AUTO, auto["engine"])}:
        assert f"| {name} |" in table
    assert "× fastest plain" in table and result["machine"] in table
    assert (out / "plain_int8.tflite").is_file() and (out / "plain_qdq.onnx").is_file()
    assert sorted(p.name for p in tiny_run.iterdir()) == before  # nothing written into the run folder


def test_out_inside_the_run_folder_is_refused(tiny_run: Path):
    from benchmarks.plain_conversions import compare

    with pytest.raises(ValueError, match="inside"):
        compare(tiny_run, out=tiny_run / "plain")
