"""edge-bench on a tiny export folder: every column filled, ordered percentiles, outputs written, broken
artifacts reported in their own rows, and the FLOP count of the graph checked against a hand count.

The folder holds conftest's tiny fp32 TFLite and ONNX models, a full-int8 TFLite in rejected/ (listed by the
report with a path relative to another working directory), a corrupt TFLite (random bytes), one artifact the
report lists but that is absent, and a Keras float model beside the folder as reference. The benchmark runs
once per module with few repeats and a small GEMM.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmarks import table
from benchmarks.artifacts import discover
from benchmarks.cli import build_parser, main
from benchmarks.flops import count_flops
from benchmarks.measure import peak_rss_mb, percentiles
from conftest import synthetic_image

# The tiny model: 16×16×3 -> Conv2D(4, 3×3, valid) -> 14×14×4 -> global pooling -> Dense(3).
HAND_COUNT = 2 * (14 * 14 * 4) * (3 * 3 * 3) + 2 * 4 * 3  # conv MACs + dense MACs, 2 FLOPs each = 42,360


def _comparison(agreement: float) -> dict:
    def group(correct: int, images: int) -> dict:
        return {"images": images, "correct": correct, "accuracy": correct / images, "float_accuracy": 1.0,
                "drop_pp": 0.0, "agreement": agreement}

    return {"groups": {"neu": group(143, 144), "gc10_inclusion": group(0, 1), "xsdd": group(150, 372)},
            "agreement": agreement, "max_abs_dprob": 0.01}


def _row(fmt: str, file: str, passed: bool = True, agreement: float = 1.0) -> dict:
    failures = [] if passed else [f"top-1 agreement with float {100 * agreement:.2f} % < 99.0 %"]
    return {"format": fmt, "file": file, "engine": "litert" if file.endswith(".tflite") else "onnxruntime",
            "quantized": "int8" in file, "size_mb": 0.01, "load_seconds": 0.01, "comparison": _comparison(agreement),
            "failures": failures, "passed": passed, "sha256": "0" * 64}


def _int8_tflite(keras_model, base: Path) -> bytes:
    import tensorflow as tf

    from edge_runtime.preprocessing import preprocess
    from test_runtime import CFG

    keras_model.export(str(base / "int8_sm"), verbose=False)
    calibration = [preprocess(synthetic_image(c, i), CFG)[None] for c in range(6) for i in range(2)]
    converter = tf.lite.TFLiteConverter.from_saved_model(str(base / "int8_sm"))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x] for x in calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory, tiny_edge_models) -> Path:
    import keras

    from edge_runtime.metadata import embed_tflite_metadata
    from test_runtime import CFG, LABELS, SIZE, tiny_metadata

    base = tmp_path_factory.mktemp("bench")
    run_dir, export = base / "runs" / "tiny", base / "runs" / "tiny" / "export"
    (export / "rejected").mkdir(parents=True)
    keras.utils.set_random_seed(2)
    inputs = keras.Input((SIZE, SIZE, 3))
    conv = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    outputs = keras.layers.Dense(len(LABELS), activation="softmax")(keras.layers.GlobalAveragePooling2D()(conv))
    model = keras.Model(inputs, outputs)
    model.save(run_dir / "model.keras")
    (run_dir / "metadata.json").write_text(json.dumps({"classes": LABELS, "preprocessing": CFG.to_dict()}))
    shutil.copy(tiny_edge_models.tflite, export / "model_fp32.tflite")
    shutil.copy(tiny_edge_models.onnx, export / "model_fp32.onnx")
    (export / "rejected" / "model_int8.tflite").write_bytes(
        embed_tflite_metadata(_int8_tflite(model, base), tiny_metadata("tflite_int8", "int8")))
    (export / "model_fp16.tflite").write_bytes(np.random.default_rng(0).bytes(3000))  # corrupt
    report = {
        "run_dir": str(run_dir),
        "float_reference": {"size_mb": 0.01, "groups": _comparison(1.0)["groups"]},
        "artifacts": [
            _row("tflite_fp32", "elsewhere/export/model_fp32.tflite"),
            _row("tflite_fp16", str(export / "model_fp16.tflite")),
            _row("tflite_dynamic", "elsewhere/export/rejected/model_dynamic_int8.tflite", False, 0.98),  # absent
            _row("tflite_int8", "elsewhere/export/rejected/model_int8.tflite", False, 0.95),
            _row("onnx_fp32", "elsewhere/export/model_fp32.onnx"),
        ],
    }
    (export / "export_report.json").write_text(json.dumps(report))
    return export


SMALL = ["--threads", "1", "2", "--repeats", "6", "--warmup", "1", "--batch-sizes", "1", "2", "--throughput-images",
         "4", "--images", "4", "--video-frames", "5", "--gemm-size", "128", "--gemm-repeats", "2", "--no-progress"]


@pytest.fixture(scope="module")
def bench(export_dir) -> dict:
    out = export_dir.parent / "bench-out"
    code = main([str(export_dir), "--out", str(out), "--results", str(out / "RESULTS.md"), *SMALL])
    result = json.loads((out / "bench.json").read_text())
    result["exit_code"] = code
    return result


def _rows(bench: dict, fmt: str) -> list[dict]:
    return [r for r in bench["rows"] if r["format"] == fmt]


MEASURED = ["keras_float", "tflite_fp32", "tflite_int8", "onnx_fp32"]


def test_flops_are_counted_from_the_graph_and_match_a_hand_count(tiny_edge_models, bench):
    assert HAND_COUNT == 42_360
    for path in (tiny_edge_models.onnx, tiny_edge_models.tflite):
        count = count_flops(path)
        assert count.flops == HAND_COUNT, path
        assert count.layers == 2 and not count.uncounted
    assert bench["flops"]["flops"] == HAND_COUNT
    assert Path(bench["flops"]["source"]).name == "model_fp32.onnx"


def test_every_format_and_thread_count_has_a_row_with_every_column(bench):
    assert [(r["format"], r["threads"]) for r in bench["rows"]] == [
        (f, t) for f in ["keras_float", "tflite_fp32", "tflite_fp16", "tflite_dynamic", "tflite_int8", "onnx_fp32"]
        for t in (1, 2)
    ]
    md = (Path(bench["outputs"]["markdown"])).read_text()
    header = "| " + " | ".join(table.COLUMNS) + " |"
    assert header in md
    for column in ("p50 ms", "p90 ms", "p99 ms", "peak RSS MB", "× fp32 limit", "× int8 limit", "NEU", "GC10 incl.",
                   "X-SDD", "answer agr.", "top-1 agr.", "e2e ms/frame (× p50)", "img/s (batch)", "load s", "size MB", "gates"):
        assert column in table.COLUMNS
    body = [line for line in md.splitlines() if line.startswith("| ") and line != header]
    assert len(body) == len(bench["rows"])
    assert all(line.count(" | ") == len(table.COLUMNS) - 1 for line in body)
    for line in ("Machine:", "Command: `edge-bench", "sgemm", "42,360 FLOP per image", "fp32 limit"):
        assert line in md
    assert bench["machine"]["description"] and "isa" in bench["machine"]


def test_measured_rows_are_positive_and_percentiles_ordered(bench):
    for fmt in MEASURED:
        for row in _rows(bench, fmt):
            assert row["error"] is None, row
            lat = row["latency_ms"]
            assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
            assert lat["runs"] == 6
            assert row["size_mb"] > 0 and row["load_s"] > 0
            assert row["throughput"]["best_images_per_s"] > 0
            assert row["rss_mb"]["batch1_peak"] >= row["rss_mb"]["before_load"] > 0
            assert row["limit"]["x_fp32"] > 0 and row["limit"]["achieved_gflops"] > 0
            assert row["accuracy"]["neu"]["accuracy"] > 0
            if fmt != "keras_float":
                assert row["e2e"]["frames"] == 5 and row["e2e"]["per_frame_ms"] > 0
    for t in ("1", "2"):
        assert bench["gemm"][t]["sgemm"]["gflops"] > 0
        assert bench["gemm"][t]["int8"]["gops"] > 0


def test_memory_is_each_workers_own(bench):
    """Each row's RSS is its own process's: TensorFlow's row is the largest, none inherits the test process's."""
    keras_rss = min(r["rss_mb"]["batch1_peak"] for r in _rows(bench, "keras_float"))
    for fmt in ("tflite_fp32", "onnx_fp32"):
        for row in _rows(bench, fmt):
            assert row["rss_mb"]["batch1_peak"] < keras_rss
            assert row["rss_mb"]["batch1_peak"] < peak_rss_mb()  # this process holds TensorFlow


def test_quantized_rows_are_set_against_the_int8_rate_and_marked_as_rejected(bench):
    for row in _rows(bench, "tflite_int8"):
        assert row["rejected"] and row["limit"]["x_int8"] > 0
        assert row["accuracy"]["gates"] == "FAIL (agreement)"
        assert row["batch_fixed"] and "batch fixed at 1" in row["throughput"]["note"]
        assert Path(row["file"]).parent.name == "rejected"
    assert all(r["limit"]["x_int8"] is None for r in _rows(bench, "onnx_fp32"))
    onnx = _rows(bench, "onnx_fp32")[0]
    assert set(onnx["throughput"]["images_per_s"]) == {"1", "2"}  # dynamic batch: batch 2 measured


def test_a_corrupt_or_missing_artifact_gets_an_error_row_and_the_others_go_on(bench):
    corrupt, missing = _rows(bench, "tflite_fp16"), _rows(bench, "tflite_dynamic")
    assert all("TFLite flatbuffer" in r["error"] for r in corrupt)
    assert all("not found" in r["error"] for r in missing)
    assert all(r["accuracy"]["gates"] == "FAIL (agreement)" for r in missing)  # the report's figures stay
    assert bench["exit_code"] == 1 and not bench["complete"]
    md = Path(bench["outputs"]["markdown"]).read_text()
    assert "file not found: elsewhere/export/rejected/model_dynamic_int8.tflite" in md


def test_json_png_and_results_page_are_written(bench):
    png = Path(bench["outputs"]["chart"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    results = Path(bench["outputs"]["results"]).read_text()
    assert "Written by edge-bench --results" in results and "Command: `edge-bench " in results
    assert bench["settings"]["repeats"] == 6 and bench["inputs"]["description"].startswith("4 synthetic")


def test_discovery_without_a_report_finds_files_by_the_format_table(tmp_path, tiny_edge_models):
    shutil.copy(tiny_edge_models.onnx, tmp_path / "model_fp32.onnx")
    shutil.copy(tiny_edge_models.tflite, tmp_path / "custom.tflite")
    artifacts, report = discover(tmp_path)
    assert report is None
    assert [(a.name, a.engine) for a in artifacts] == [("onnx_fp32", "onnxruntime"), ("custom.tflite", "litert")]
    with pytest.raises(ValueError, match="unknown format"):
        discover(tmp_path, ["tflite_fp33"])


def test_percentiles_and_parser_defaults():
    stats = percentiles([5.0, 1.0, 3.0, 2.0, 4.0])
    assert stats["p50"] == 3.0 and stats["p50"] <= stats["p90"] <= stats["p99"] <= 5.0
    args = build_parser().parse_args(["EXPORT"])
    assert args.threads == [1, 2] and args.repeats == 50 and args.keras and args.progress
    assert main(["/nonexistent/export"]) == 2


def test_fixed_inputs_come_from_the_manifest_test_split_class_by_class(tmp_path):
    import cv2

    from benchmarks.inputs import fixed_inputs, synthetic_images
    from edge_runtime.fileio import file_sha256

    data, run_dir = tmp_path / "data", tmp_path / "run"
    run_dir.mkdir()
    lines = ["path,class,split,sha256"]
    for c, name in enumerate(["a", "b"]):
        (data / name).mkdir(parents=True)
        for i in range(3):
            path = data / name / f"{i}.png"
            cv2.imwrite(str(path), synthetic_image(c, i))
            lines.append(f"{name}/{i}.png,{name},{'train' if i == 0 else 'test'},{file_sha256(path)}")
    (run_dir / "split_manifest.csv").write_text("\n".join(lines) + "\n")
    (run_dir / "metadata.json").write_text(json.dumps({"data_root": str(data)}))
    fixed = fixed_inputs(run_dir, 3)
    assert fixed.files == ["a/1.png", "b/1.png", "a/2.png"]
    assert np.array_equal(fixed.images[1], cv2.imread(str(data / "b" / "1.png"), cv2.IMREAD_UNCHANGED))
    cv2.imwrite(str(data / "a" / "2.png"), synthetic_image(5, 5))  # changed since training: synthetic instead
    fallback = fixed_inputs(run_dir, 3)
    assert fallback.files == [] and all(np.array_equal(x, y) for x, y in zip(fallback.images, synthetic_images(3)))
