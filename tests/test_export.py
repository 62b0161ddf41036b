"""edge-export on a tiny model with the real model's contract: every format, metadata, gates, ship."""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import NEU_CLASSES, SHARED, write_class_folders, write_run_metadata, write_split_run
from edge_runtime.fileio import file_sha256, write_json_atomic
from edge_runtime.metadata import embed_tflite_metadata, read_metadata, strip_tflite_metadata
from edge_runtime.model_file import graph_sha256, write_model
from export import checks
from export.calibration import CalibrationSet, calibration_rows
from export.cli import main
from export.export_run import installed_engines
from export.formats import FORMATS
from train.augment import BANK_CAMERA_KINDS
from train.run_dir import TrainedRun
from train.split import read_manifest

SIZE = 32


def _tiny_model(data: Path, rows, classes):
    """Conv → GAP → Dense(6, softmax) on caffe-normalised 32×32 BGR, briefly trained so outputs vary."""
    import keras

    from edge_runtime.preprocessing import PreprocessConfig, load_image

    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 64)(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(16, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(len(classes), activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    cfg = PreprocessConfig(input_size=(SIZE, SIZE))
    xs = np.stack([load_image(data / r.path, cfg) for r in rows])
    ys = np.array([classes.index(r.label) for r in rows])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(xs, ys, epochs=30, batch_size=16, verbose=0)
    return model, cfg


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A run directory as edge-train writes it, around the tiny model."""
    data, ds, rows, run = write_split_run(tmp_path_factory.mktemp("export"), per_class=12)
    model, cfg = _tiny_model(data, rows, ds.classes)
    model.save(run / "model.keras")
    write_run_metadata(run, data, ds.classes, cfg, unfreeze="conv5")
    write_json_atomic(run / "metrics.json", {"val": {"accuracy": 1.0, "correct": 12, "total": 12},
                                      "test": {"accuracy": 1.0, "correct": 12, "total": 12}})
    return run


@pytest.fixture(scope="module")
def exported(tiny_run: Path) -> Path:
    """All six formats, with gates loose enough for a 24-image check set of a toy model."""
    code = main([str(tiny_run), "--calibration-count", "24", "--gc10", str(TrainedRun.open(tiny_run).metadata["data_root"]),
                 "--max-drop-neu", "100", "--max-drop-cross", "100", "--min-agreement", "0", "--no-progress"])
    assert code == 0
    return tiny_run / "export"


@pytest.fixture(scope="module")
def every_layer_int8(tiny_run: Path) -> Path:
    """Full-int8 TFLite with its input path and first convolution quantised too (--tflite-int8-first-conv)."""
    out = tiny_run / "export-every-layer"
    assert main([str(tiny_run), "--out", str(out), "--formats", "tflite_int8", "--tflite-int8-first-conv",
                 "--calibration-count", "24", "--min-agreement", "0", "--no-progress"]) == 0
    return out


def report(export_dir: Path) -> dict:
    return json.loads((export_dir / "export_report.json").read_text())


def test_every_format_is_written_with_readable_metadata(tiny_run: Path, exported: Path):
    for fmt in FORMATS.values():
        meta = read_metadata(exported / fmt.filename)
        assert meta.labels == NEU_CLASSES
        assert meta.format == fmt.name
        assert meta.source_model_sha256 == file_sha256(tiny_run / "model.keras")
        assert meta.split_manifest_sha256 == file_sha256(tiny_run / "split_manifest.csv")
        assert meta.input_shape == [1, SIZE, SIZE, 3]
        assert meta.extra["validation"]["passed"] is True
        path = exported / fmt.filename
        assert meta.graph_sha256 == graph_sha256(path.read_bytes(), path.suffix)  # checked at every load
    int8 = read_metadata(exported / FORMATS["tflite_int8"].filename)
    assert int8.input_dtype == "uint8" and int8.preprocessing_in_graph
    assert int8.extra["bias_correction"]["layers"] == 2 and int8.extra["bias_correction"]["images"] > 0  # + 1 float
    assert "bias_correction" not in read_metadata(exported / FORMATS["onnx_int8"].filename).extra  # NNCF's own


def _input_reader(path: Path) -> tuple[str, tuple[float, int] | None]:
    """The operator that reads a TFLite file's uint8 input, and the int8 quantisation of what it writes."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(str(path))
    (feed,) = interpreter.get_input_details()
    assert feed["dtype"] == np.uint8 and feed["quantization"] == (1.0, 0)  # one step per pixel level
    (reader,) = [op for op in interpreter._get_ops_details() if feed["index"] in op["inputs"]]
    written = interpreter._get_tensor_details(reader["outputs"][0], 0)
    return reader["op_name"], written["quantization"] if written["dtype"] == np.int8 else None


def test_the_full_int8_tflite_keeps_every_pixel_level_of_its_uint8_input(exported: Path, every_layer_int8: Path):
    assert _input_reader(exported / "model_int8.tflite") == ("DEQUANTIZE", None)  # exact, to the float first layers
    assert _input_reader(every_layer_int8 / "model_int8.tflite") == ("QUANTIZE", (1.0, -128))  # pixel - 128, no cast


def test_float_artifacts_match_keras(exported: Path):
    rows = {a["format"]: a for a in report(exported)["artifacts"]}
    for name in ("tflite_fp32", "onnx_fp32"):
        assert rows[name]["comparison"]["max_abs_dprob"] < 1e-4, name
        assert rows[name]["comparison"]["agreement"] == 1.0


def test_report_has_a_row_per_artifact_with_the_promised_columns(exported: Path):
    data = report(exported)
    assert list(dict.fromkeys(a["format"] for a in data["artifacts"])) == list(FORMATS)
    for a in data["artifacts"]:
        assert a["size_mb"] > 0 and a["load_seconds"] > 0
        assert {"neu", "gc10_inclusion"} <= set(a["comparison"]["groups"])
    # the format's own engine is checked first; every other installed engine that runs the file is checked too
    engines = [(a["format"], a["engine"]) for a in data["artifacts"]]
    for fmt in FORMATS.values():
        assert [e for f, e in engines if f == fmt.name][0] == fmt.engine
    if importlib.util.find_spec("openvino"):
        assert ("onnx_int8", "openvino") in engines and ("onnx_fp32", "openvino") in engines
    md = (exported / "export_report.md").read_text()
    for column in ("size", "load", "NEU val+test", "GC10 inclusion", "agreement", "max Δp", "gates"):
        assert column in md
    assert data["calibration"]["images"] == 24


def test_the_report_says_where_the_time_went(exported: Path):
    data = report(exported)
    timings = data["timings"]
    stages = (timings["unknown_score_bank_seconds"], timings["convert_seconds"], timings["check_seconds"])
    assert all(t > 0 for t in stages) and sum(stages) <= timings["total_seconds"]
    assert set(timings["conversions"]) == set(FORMATS)
    assert abs(sum(timings["conversions"].values()) - timings["convert_seconds"]) <= 0.1 * timings["convert_seconds"]
    assert 0 < timings["eval_images_decode_seconds"] + timings["float_reference_seconds"] <= timings["check_seconds"]
    pairs = {f"{a['format']} on {a['engine']}": a["check_seconds"] for a in data["artifacts"]}
    assert timings["checks"] == pairs and sum(pairs.values()) > 0
    assert set(timings["onnx_process_stages"]) == {"onnx_fp32", "onnx_int8"}
    assert sum(timings["onnx_process_stages"].values()) <= timings["onnx_process_seconds"]
    md = (exported / "export_report.md").read_text()
    assert "Keras float reference" in md and "Keras unknown-score bank" in md and "tflite_int8 on litert" in md
    assert "the ONNX process beside them" in md


def _eval_data(run_dir: Path) -> checks.EvalData:
    run = TrainedRun.open(run_dir)
    return checks.load_eval_data(checks.standard_eval_images(run, None, None, None), run.preprocess, progress=False)


@pytest.mark.parametrize("polarity", [None, "auto"])
def test_the_checks_batched_side_by_side_path_equals_one_image_at_a_time(tiny_run: Path, exported: Path, polarity):
    """The checks run chunks of images on several copies of each artifact at once (export.checks.artifact_outputs);
    every engine must give each image what Classifier.predict gives it alone."""
    from edge_runtime.classifier import Classifier

    data = _eval_data(tiny_run)
    assert len(data.pixels) % 5  # a short last chunk too
    for fmt in FORMATS.values():
        path = exported / fmt.filename
        for engine in installed_engines(path, fmt.engine):
            batched = checks.artifact_outputs(path, data, batch=5, progress=False, engine=engine, workers=3,
                                              polarity=polarity)
            alone = Classifier.load(path, engine=engine)
            if polarity:
                alone.polarity = polarity
            single = [alone.predict(image) for image in data.pixels]
            where = f"{fmt.name} on {engine}"
            np.testing.assert_allclose(batched.probabilities, np.stack([p.probabilities for p in single]),
                                       rtol=0, atol=1e-6, err_msg=where)
            np.testing.assert_allclose(batched.ood_scores, [p.ood_score for p in single], rtol=0, atol=1e-6,
                                       err_msg=where)
            threshold = alone.threshold
            assert list(checks.answers(batched.probabilities, batched.ood_scores, threshold)) == [
                checks.UNKNOWN_ANSWER if p.unknown else p.index for p in single], where
            assert batched.labels == alone.labels


def test_check_workers_use_every_core_once():
    assert checks.check_workers(None, cores=2) == (2, 1)
    assert checks.check_workers(None, cores=1) == (1, 1)
    assert checks.check_workers(None, cores=16) == (4, 4)
    assert checks.check_workers(2, cores=2) == (1, 2)  # --threads 2 on 2 cores: one copy, as before


def test_the_float_unknown_threshold_is_computed_once(tiny_run: Path, tmp_path: Path, monkeypatch):
    """One leave-one-out calibration (the bank's) gives the float threshold; nothing recomputes it from the
    check images, and the report's float threshold is that one."""
    from train import embeddings

    calibrations, recomputed = [], []
    build = embeddings.build_calibrated_spec

    def counting_build(*args, **kwargs):
        calibrations.append(build(*args, **kwargs))
        return calibrations[-1]

    monkeypatch.setattr(embeddings, "build_calibrated_spec", counting_build)
    monkeypatch.setattr(checks, "unknown_threshold", lambda *a, **k: recomputed.append(a))
    out = tmp_path / "once"
    assert main([str(tiny_run), "--out", str(out), "--formats", "tflite_fp32", "onnx_fp32", "--no-cache",
                 "--max-drop-neu", "100", "--max-drop-cross", "100", "--min-agreement", "0", "--no-progress"]) == 0
    assert len(calibrations) == 1 and not recomputed
    data = report(out)
    assert data["float_reference"]["unknown"]["threshold"] == pytest.approx(calibrations[0].threshold, abs=0)
    for fmt in ("tflite_fp32", "onnx_fp32"):
        ood = read_metadata(out / FORMATS[fmt].filename).extra["ood"]
        assert ood["checked_on"] == FORMATS[fmt].engine  # set by its own engine's check, kept by the others


def test_onnx_formats_made_after_the_tflite_ones_equal_those_made_beside_them(tiny_run: Path, exported: Path,
                                                                           tmp_path: Path):
    import onnxruntime as ort

    out = tmp_path / "after"
    assert main([str(tiny_run), "--out", str(out), "--formats", "onnx_fp32", "onnx_int8", "--onnx-after-tflite",
                 "--calibration-count", "24", "--max-drop-neu", "100", "--max-drop-cross", "100",
                 "--min-agreement", "0", "--no-progress"]) == 0
    x = np.random.default_rng(0).normal(0, 60, (5, SIZE, SIZE, 3)).astype(np.float32)
    for fmt in ("onnx_fp32", "onnx_int8"):
        results = []
        for folder in (exported, out):
            session = ort.InferenceSession(str(folder / FORMATS[fmt].filename), providers=["CPUExecutionProvider"])
            results.append(session.run(None, {session.get_inputs()[0].name: x}))
        for ours, theirs in zip(*results):
            np.testing.assert_array_equal(ours, theirs, err_msg=fmt)
    assert report(out)["timings"]["onnx_process_seconds"] > 0


def test_a_second_export_reuses_the_float_models_outputs_unless_told_not_to(tiny_run: Path, exported: Path,
                                                                          tmp_path: Path, caplog):
    assert list((tiny_run / "cache").glob("keras-outputs-*.npz"))  # written by the first export
    args = [str(tiny_run), "--formats", "tflite_fp32", "--gc10", TrainedRun.open(tiny_run).metadata["data_root"],
            "--max-drop-neu", "100", "--max-drop-cross", "100", "--min-agreement", "0", "--no-progress"]
    with caplog.at_level(logging.INFO, logger="train.embeddings"):
        assert main([*args, "--out", str(tmp_path / "again")]) == 0
    # the bank (training images as captured, 2 augmented copies and the camera copies: no edge-train config
    # here, so through the whole model) and the float reference
    assert caplog.text.count("read from the Keras output cache") == 1 + 2 + len(BANK_CAMERA_KINDS) + 1
    first, again = report(exported), report(tmp_path / "again")
    assert again["float_reference"]["unknown"]["threshold"] == first["float_reference"]["unknown"]["threshold"]
    assert again["artifacts"][0]["comparison"] == next(a for a in first["artifacts"]
                                                       if a["format"] == "tflite_fp32")["comparison"]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="train.embeddings"):
        assert main([*args, "--out", str(tmp_path / "fresh"), "--no-cache"]) == 0
    assert "read from the Keras output cache" not in caplog.text
    assert report(tmp_path / "fresh")["float_reference"]["unknown"]["threshold"] == pytest.approx(
        first["float_reference"]["unknown"]["threshold"], abs=1e-6)


def test_full_int8_with_normalised_input_is_bias_corrected_too(tiny_run: Path, tmp_path: Path):
    out = tmp_path / "normalized"
    assert main([str(tiny_run), "--out", str(out), "--formats", "tflite_fp32", "tflite_int8", "--int8-input", "normalized",
                 "--calibration-count", "24", "--min-agreement", "0", "--no-progress"]) == 0
    meta = read_metadata(out / FORMATS["tflite_int8"].filename)
    assert meta.input_dtype == "int8" and not meta.preprocessing_in_graph
    assert meta.extra["bias_correction"]["layers"] == 2
    comparison = next(a for a in report(out)["artifacts"] if a["format"] == "tflite_int8")["comparison"]
    assert comparison["agreement"] >= 0.9 and comparison["groups"]["neu"]["accuracy"] >= 0.9


def test_calibration_uses_only_training_images(tiny_run: Path):
    rows = read_manifest(tiny_run / "split_manifest.csv")
    chosen = calibration_rows(rows, 200, seed=0)
    assert chosen and all(r.split == "train" for r in chosen)
    per_class = {c: sum(r.label == c for r in chosen) for c in NEU_CLASSES}
    assert len(set(per_class.values())) == 1  # stratified
    calib = CalibrationSet(chosen[:3], TrainedRun.open(tiny_run).metadata["data_root"], TrainedRun.open(tiny_run).preprocess)
    first = next(calib.as_pixels())
    assert first[0, 0].tolist() == [0, 0, 0] and first[0, 1].tolist() == [255, 255, 255]


def test_check_passes_an_honest_artifact_against_float(tiny_run: Path, exported: Path, capsys):
    data = TrainedRun.open(tiny_run).metadata["data_root"]
    code = main(["check", str(exported / "model_fp16.tflite"), "--data", data,
                 "--reference", str(exported / "model_fp32.tflite"), "--no-progress"])
    assert code == 0
    assert "model_fp16.tflite" in capsys.readouterr().out


def test_check_fails_an_artifact_with_the_wrong_label_order(tiny_run: Path, exported: Path, tmp_path: Path, capsys):
    source = exported / "model_fp32.tflite"
    meta = read_metadata(source)
    meta.labels = list(reversed(meta.labels))
    flatbuffer = strip_tflite_metadata(source.read_bytes())
    broken = tmp_path / "wrong_labels.tflite"
    broken.write_bytes(embed_tflite_metadata(flatbuffer, meta))
    data = TrainedRun.open(tiny_run).metadata["data_root"]
    code = main(["check", str(broken), "--data", data, "--reference", str(source), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1
    assert "wrong_labels.tflite" in out and "FAIL" in out


def test_check_refuses_changed_weights_and_fails_wrong_ones_at_its_gates(tiny_run: Path, exported: Path,
                                                                        tmp_path: Path, capsys, caplog):
    source = exported / "model_fp32.onnx"
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(source))
    for init in model.graph.initializer:
        values = numpy_helper.to_array(init)
        if values.dtype == np.float32 and values.size > 100:
            init.CopyFrom(numpy_helper.from_array(-values * 3, init.name))
    broken = tmp_path / "corrupted.onnx"
    onnx.save(model, str(broken))
    data = TrainedRun.open(tiny_run).metadata["data_root"]
    args = ["check", str(broken), "--data", data, "--reference", str(source), "--no-progress"]
    assert main(args) == 2  # changed after export: its digest no longer matches, refused at load
    assert "corrupted.onnx" in caplog.text and "digest" in caplog.text
    write_model(broken, broken.read_bytes(), read_metadata(broken))  # the same wrong weights, digest renewed
    assert main(args) == 1  # now the accuracy gates catch them
    assert "corrupted.onnx" in capsys.readouterr().out


def test_failing_gate_exits_nonzero_names_the_artifact_and_keeps_the_others(
    tiny_run: Path, tmp_path: Path, caplog, monkeypatch
):
    """A deliberately broken fp16 conversion (weights of an untrained twin) fails; the honest fp32 is kept."""
    import keras

    from export import convert

    def broken_fp16(saved_model: Path) -> bytes:
        twin = keras.models.clone_model(TrainedRun.open(tiny_run).load_model())  # fresh random weights
        return convert.tflite_fp32(convert.export_saved_model(twin, tmp_path / "twin"))

    monkeypatch.setattr(convert, "tflite_fp16", broken_fp16)
    out = tmp_path / "strict"
    code = main([str(tiny_run), "--out", str(out), "--formats", "tflite_fp32", "tflite_fp16", "--no-progress"])
    assert code == 1
    assert "tflite_fp16 FAILS" in caplog.text and "tflite_fp32 FAILS" not in caplog.text
    hint = f"edge-export ship {out} --formats tflite_fp32"  # what to do next: ship the passing ones
    assert hint in caplog.text
    assert main(["ship", str(out), "--formats", "tflite_fp32", "--dest", str(tmp_path / "shipped")]) == 0
    assert (tmp_path / "shipped" / "default.tflite").is_file()
    assert (out / "rejected" / "model_fp16.tflite").is_file()
    assert (out / "model_fp32.tflite").is_file()
    rows = {a["format"]: a for a in report(out)["artifacts"]}
    assert rows["tflite_fp32"]["passed"] is True
    assert rows["tflite_fp16"]["passed"] is False and "agreement" in " ".join(rows["tflite_fp16"]["failures"])


def test_artifact_without_metadata_is_refused_unless_labels_are_given(tiny_run: Path, exported: Path, tmp_path: Path):
    source = exported / "model_fp32.tflite"
    bare = tmp_path / "bare.tflite"
    bare.write_bytes(strip_tflite_metadata(source.read_bytes()))
    data = TrainedRun.open(tiny_run).metadata["data_root"]
    assert main(["check", str(bare), "--data", data, "--no-progress"]) == 2
    assert main(["check", str(bare), "--data", data, "--labels", *NEU_CLASSES, "--no-progress"]) == 0


def test_ship_installs_a_passing_artifact_with_card_and_manifest(exported: Path, tmp_path: Path):
    dest = tmp_path / "models"
    assert main(["ship", str(exported), "--dest", str(dest)]) == 0
    assert read_metadata(dest / "default.tflite").format == "tflite_int8"
    card = (dest / "MODEL_CARD.md").read_text()
    assert file_sha256(dest / "default.tflite") in card and "Known limits" in card
    assert "biases were then corrected for the weights' rounding" in card
    assert "full-int8 TFLite and ONNX int8 keep the first convolution and everything before it in float" in card
    assert (dest / "split_manifest.csv").read_text().startswith("path,class,split,sha256")


def test_shipping_again_leaves_only_the_models_of_the_new_manifest(exported: Path, tmp_path: Path):
    dest = tmp_path / "models"
    assert main(["ship", str(exported), "--dest", str(dest), "--formats", "tflite_int8", "onnx_int8"]) == 0
    assert (dest / "onnx_int8.onnx").is_file()
    assert main(["ship", str(exported), "--dest", str(dest), "--formats", "tflite_int8"]) == 0
    assert sorted(p.name for p in dest.iterdir() if p.suffix in (".tflite", ".onnx")) == ["default.tflite"]
    assert [a["file"] for a in json.loads((dest / "manifest.json").read_text())["artifacts"]] == ["default.tflite"]


def failed_copy(exported: Path, tmp_path: Path, failure: str) -> Path:
    """A copy of the export whose full-int8 artifact is recorded as having failed ``failure``."""
    failing = tmp_path / "failed_export"
    shutil.copytree(exported, failing)
    data = report(failing)
    row = next(a for a in data["artifacts"] if a["format"] == "tflite_int8")
    row["passed"], row["failures"] = False, [failure]
    (failing / "export_report.json").write_text(json.dumps(data))
    return failing


def test_ship_refuses_an_artifact_that_failed(tmp_path: Path, exported: Path):
    failing = failed_copy(exported, tmp_path, "agreement 50 %")
    assert main(["ship", str(failing), "--dest", str(tmp_path / "m")]) == 2
    assert not (tmp_path / "m" / "default.tflite").exists()


def test_ship_with_a_waiver_states_the_failure_and_reason_in_the_card(tmp_path: Path, exported: Path):
    failing = failed_copy(exported, tmp_path, "top-1 agreement with float 93.00 % < 99.0 %")
    assert main(["ship", str(failing), "--dest", str(tmp_path / "m"), "--waive", "only cross-plant images flip"]) == 0
    card = (tmp_path / "m" / "MODEL_CARD.md").read_text()
    assert "Shipped with a waiver" in card and "93.00 %" in card and "only cross-plant images flip" in card


def test_artifacts_carry_the_unknown_score_with_a_threshold_from_validation(exported: Path):
    from edge_runtime.classifier import Classifier

    data = report(exported)
    assert data["ood"]["threshold_from"].startswith("NEU training split only")
    assert data["ood"]["per_class"] and data["ood"]["bank_info"]["copies"]["count"] == 2
    assert {Path(f).name for f in data["figures"]} >= {"crossplant_called_as.png", "unknown_scores.png"}
    assert all(Path(f).stat().st_size > 1000 for f in data["figures"])
    for fmt in ("tflite_fp32", "tflite_int8", "onnx_int8"):
        meta = read_metadata(exported / FORMATS[fmt].filename)
        ood = meta.extra["ood"]
        assert ood["kind"] == "knn_cosine" and ood["checked_on"] == FORMATS[fmt].engine
        row = next(a for a in data["artifacts"] if a["format"] == fmt)
        assert ood["threshold"] == row["comparison"]["unknown"]["threshold"]
        assert ood["threshold_rule"] == "float + median validation shift"
        classifier = Classifier.load(exported / FORMATS[fmt].filename)
        prediction = classifier.predict(np.full((40, 40), 128, np.uint8))
        assert prediction.ood_score is not None and prediction.predicted in NEU_CLASSES
    unknown = data["float_reference"]["unknown"]
    assert unknown["groups"]["neu"]["images"] == 24 and unknown["auroc_all_no_counterpart"] is None  # no OOD here
    assert "answer_agreement" in next(a for a in data["artifacts"] if a["format"] == "tflite_fp32")["comparison"]


def test_edge_classify_reports_unknown_above_the_threshold(exported: Path, tmp_path: Path):
    """Lower the stored threshold below every score: every record says unknown and keeps the best class."""
    from edge_runtime.cli import main as classify
    from edge_runtime.metadata import ModelMetadata

    source = exported / FORMATS["tflite_fp32"].filename
    meta = read_metadata(source)
    meta.extra["ood"]["threshold"] = -1.0
    model = tmp_path / "strict.tflite"
    model.write_bytes(embed_tflite_metadata(strip_tflite_metadata(source.read_bytes()), ModelMetadata.from_json(
        meta.to_json(), model)))
    folder = write_class_folders(tmp_path / "images", per_class=1)
    out = tmp_path / "records.jsonl"
    assert classify(["--folder", str(folder), "--recursive", "--model", str(model), "--output", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records and all(r["label"] == "unknown" and r["unknown"] is True for r in records)
    assert all(r["predicted"] in NEU_CLASSES and r["ood_score"] > -1.0 for r in records)


def test_unknown_summary_counts_flagged_and_confidently_wrong_images():
    from export.checks import EvalImage, answers, compare, unknown_summary

    classes = ["a", "b"]
    items = [EvalImage(Path("v"), "neu", "a", split="val"), EvalImage(Path("t1"), "neu", "a", split="test"),
             EvalImage(Path("t2"), "neu", "b", split="test"), EvalImage(Path("x1"), "other", "a"),
             EvalImage(Path("x2"), "other", None), EvalImage(Path("x3"), "other", None)]
    probabilities = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.2, 0.8], [0.6, 0.4], [0.9, 0.1]])
    scores = np.array([0.1, 0.1, 0.2, 0.3, 0.9, 0.4])
    summary = unknown_summary(items, classes, probabilities, scores, threshold=0.5)
    other = summary["groups"]["other"]
    assert other["unknown"] == 1  # x2
    assert other["confident_wrong"] == 2  # x1 called b (expected a), x3 has no counterpart but is not flagged
    assert summary["cross_plant_confident_wrong"] == 2 / 3
    assert other["auroc_vs_neu_test"] == 1.0  # both OOD scores exceed both NEU test scores
    reference = answers(probabilities, scores, 0.5)
    assert reference.tolist() == [0, 0, 1, 1, -1, 0]
    candidate = probabilities[:, ::-1]  # every top class flipped...
    flipped = answers(candidate, np.full(6, 0.9), 0.5)  # ...but everything unknown
    result = compare(items, classes, probabilities, candidate, reference, flipped)
    assert result["agreement"] == 0.0 and result["answer_agreement"] == 1 / 6


@pytest.mark.data
@pytest.mark.skipif(not (SHARED / "datasets" / "gc10").is_dir(), reason="../shared/datasets/gc10 not present")
def test_gc10_protocols_on_the_subset_here():
    from export.checks import gc10_eval_images

    items = gc10_eval_images(SHARED / "datasets" / "gc10")
    crops = [i for i in items if i.group == "gc10_crops"]
    # 16 boxes in the 10 labelled frames: 2 rolled_pit (not scored), none of them inclusion
    assert len(crops) == 14 and not any(i.expected for i in crops)
    assert all(i.box[2] > i.box[0] and i.box[3] > i.box[1] for i in crops)
    assert [i.source_class for i in items if i.group == "gc10_inclusion"] == ["inclusion"]
    assert sum(i.group == "gc10_frames" for i in items) == 8  # the other folders' frames, all without counterpart


def test_gc10_crops_are_cut_even_when_the_xml_gives_no_frame_size(tmp_path: Path):
    import cv2

    from export.checks import gc10_eval_images

    (tmp_path / "inclusion").mkdir()
    cv2.imwrite(str(tmp_path / "inclusion" / "f.jpg"), np.full((100, 300), 90, np.uint8))
    (tmp_path / "inclusion" / "f.xml").write_text(
        "<annotation><folder>7</folder><filename>f.jpg</filename><object><name>7_yiwu</name><bndbox>"
        "<xmin>10</xmin><ymin>10</ymin><xmax>40</xmax><ymax>30</ymax></bndbox></object></annotation>")
    items = gc10_eval_images(tmp_path)
    crops = [i for i in items if i.group == "gc10_crops"]
    assert len(crops) == 1 and crops[0].expected == "inclusion"
    x0, y0, x1, y1 = crops[0].box
    assert 0 <= x0 < x1 <= 300 and 0 <= y0 < y1 <= 100
    assert [i.group for i in items].count("gc10_inclusion") == 1


def test_onnx_int8_stores_activations_as_uint8_and_weights_as_int8(exported: Path):
    import onnx
    from onnx import TensorProto

    model = onnx.load(str(exported / "model_int8.onnx"))
    initializers = {i.name: i for i in model.graph.initializer}
    kinds = set()
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and len(node.input) > 2 and node.input[2] in initializers:
            kinds.add((node.input[0] in initializers, initializers[node.input[2]].data_type))
    assert (False, TensorProto.UINT8) in kinds and (True, TensorProto.INT8) in kinds
    assert (False, TensorProto.INT8) not in kinds


def _conv_weights_quantised(path: Path) -> list[bool]:
    """Per Conv node, in graph order: is its weight fed through a DequantizeLinear (int8) or a float tensor."""
    import onnx

    model = onnx.load(str(path))
    dequantised = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    return [n.input[1] in dequantised for n in model.graph.node if n.op_type == "Conv"]


def test_onnx_int8_keeps_only_the_first_convolution_in_float_and_says_so(exported: Path):
    import onnx

    assert _conv_weights_quantised(exported / "model_int8.onnx") == [False, True]
    first_conv = next(n.name for n in onnx.load(str(exported / "model_int8.onnx")).graph.node if n.op_type == "Conv")
    assert read_metadata(exported / "model_int8.onnx").extra["float_nodes"] == [first_conv]
    assert report(exported)["calibration"]["onnx_float_first_conv"] is True


@pytest.mark.parametrize("quantizer", ["nncf", "ort"])
@pytest.mark.parametrize("float_first_conv", [True, False])
def test_onnx_int8_first_convolution_is_float_only_when_asked(exported: Path, tmp_path: Path, quantizer: str,
                                                              float_first_conv: bool):
    from export.convert import onnx_int8

    rng = np.random.default_rng(0)
    samples = [rng.uniform(-120, 150, (SIZE, SIZE, 3)).astype(np.float32) for _ in range(8)]
    output = tmp_path / "int8.onnx"
    float_nodes = onnx_int8(exported / "model_fp32.onnx", output, lambda: iter(samples), quantizer, float_first_conv)
    assert _conv_weights_quantised(output) == [not float_first_conv, True]
    assert len(float_nodes) == int(float_first_conv)


def _tflite_layer_types(path: Path) -> tuple[list[bool], list[bool]]:
    """Per CONV_2D, whether its weights are int8; per add/sub/mul, whether its output is int8."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    from export.bias_correction import builtin_code

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(path.read_bytes()))  # metadata trails the graph
    graph = model.subgraphs[0]
    ops = schema.BuiltinOperator
    code = functools.partial(builtin_code, model)
    convs = [graph.tensors[op.inputs[1]].type == schema.TensorType.INT8
             for op in graph.operators if code(op) == ops.CONV_2D]
    arithmetic = [graph.tensors[op.outputs[0]].type == schema.TensorType.INT8
                  for op in graph.operators if code(op) in (ops.ADD, ops.SUB, ops.MUL)]
    return convs, arithmetic


def test_full_int8_tflite_leaves_its_input_path_and_first_convolution_in_float_by_default(exported: Path):
    convs, arithmetic = _tflite_layer_types(exported / "model_int8.tflite")
    assert convs == [False, True] and arithmetic and not any(arithmetic)  # the in-graph normalisation, float
    meta = read_metadata(exported / "model_int8.tflite")
    assert meta.input_dtype == "uint8" and meta.preprocessing_in_graph
    assert report(exported)["calibration"]["tflite_float_first_conv"] is True
    assert meta.extra["bias_correction"]["layers"] == 2  # the int8 convolution and dense layer; the float one skipped


def test_full_int8_tflite_quantises_every_layer_when_asked(exported: Path, every_layer_int8: Path):
    convs, arithmetic = _tflite_layer_types(every_layer_int8 / "model_int8.tflite")
    assert convs == [True, True] and all(arithmetic)
    assert report(every_layer_int8)["calibration"]["tflite_float_first_conv"] is False
    assert read_metadata(every_layer_int8 / "model_int8.tflite").extra["bias_correction"]["layers"] == 3
    every_layer = next(a for a in report(every_layer_int8)["artifacts"] if a["format"] == "tflite_int8")["comparison"]
    float_first = next(a for a in report(exported)["artifacts"] if a["format"] == "tflite_int8")["comparison"]
    assert float_first["max_abs_dprob"] <= every_layer["max_abs_dprob"] + 0.05


def test_a_nameless_first_convolution_is_named_so_it_can_be_kept_in_float():
    from onnx import TensorProto, helper, numpy_helper

    from export.convert import first_conv_name

    weights = [numpy_helper.from_array(np.ones((2, 3, 3, 3), np.float32), f"w{i}") for i in range(2)]
    nodes = [helper.make_node("Conv", ["x", "w0"], ["a"]), helper.make_node("Conv", ["a", "w1"], ["y"], name="c2")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], weights)
    model = helper.make_model(graph)
    assert first_conv_name(model) == "first_conv"
    assert [n.name for n in model.graph.node] == ["first_conv", "c2"]


def test_int8_activations_retyped_to_uint8_give_identical_outputs():
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from export.qdq_graph import activations_to_uint8

    inits = [numpy_helper.from_array(np.array(0.05, np.float32), "s"),
             numpy_helper.from_array(np.array(-7, np.int8), "z")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.linspace(-8, 8, 64, dtype=np.float32)

    def run(m):
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]

    before = run(model)
    retyped = activations_to_uint8(onnx.load_from_string(model.SerializeToString()))
    zero_point = {i.name: i for i in retyped.graph.initializer}["z"]
    assert zero_point.data_type == TensorProto.UINT8 and int(numpy_helper.to_array(zero_point)) == 121
    np.testing.assert_array_equal(run(retyped), before)


def _down_sampling_block(odd_side: bool = False):
    """A QDQ graph shaped like a ResNet down-sampling block: one quantised activation read by two 1×1 stride-2
    convolutions (shortcut and main branch), a 3×3 stride-2 one on another quantised activation, and a 1×1
    stride-2 one whose dequantised input also feeds an Add."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    side = 9 if odd_side else 8
    inits = [numpy_helper.from_array(np.array(0.05, np.float32), "s"),
             numpy_helper.from_array(np.array(3, np.uint8), "z")]
    nodes = []
    for name, shape in (("w_short", (4, 3, 1, 1)), ("w_main", (4, 3, 1, 1)), ("w_3x3", (4, 3, 3, 3)),
                        ("w_shared", (3, 3, 1, 1))):
        inits.append(numpy_helper.from_array(rng.normal(0, 1, shape).astype(np.float32), name))
    for source in ("a", "b", "c"):
        nodes += [helper.make_node("QuantizeLinear", [source, "s", "z"], [f"{source}_q"]),
                  helper.make_node("DequantizeLinear", [f"{source}_q", "s", "z"], [f"{source}_dq"])]
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Neg", ["x"], ["b"]),
             helper.make_node("Sigmoid", ["x"], ["c"]), *nodes,
             helper.make_node("Conv", ["a_dq", "w_short"], ["short"], kernel_shape=[1, 1], strides=[2, 2]),
             helper.make_node("Conv", ["a_dq", "w_main"], ["main"], kernel_shape=[1, 1], strides=[2, 2]),
             helper.make_node("Conv", ["b_dq", "w_3x3"], ["wide"], kernel_shape=[3, 3], strides=[2, 2],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["c_dq", "w_shared"], ["shared"], kernel_shape=[1, 1], strides=[2, 2]),
             helper.make_node("Add", ["c_dq", "x"], ["c_plus_x"])]
    outputs = ["short", "main", "wide", "shared", "c_plus_x"]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, side, side])]
    outputs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, ["n", "c", "h", "w"]) for o in outputs]
    graph = helper.make_graph(nodes, "down", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("odd_side", [False, True])
def test_strided_pointwise_convolutions_take_a_subsampled_input_with_identical_outputs(odd_side: bool):
    import onnx
    import onnxruntime as ort

    from export.qdq_graph import subsample_strided_pointwise_inputs

    model = _down_sampling_block(odd_side)
    x = np.random.default_rng(1).normal(0, 2, (1, 3, 9 if odd_side else 8, 9 if odd_side else 8)).astype(np.float32)

    def run(m):
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})

    before = run(model)
    rewritten = onnx.load_from_string(model.SerializeToString())
    assert subsample_strided_pointwise_inputs(rewritten) == 2  # the shortcut and the main branch; not 3×3, not shared
    onnx.checker.check_model(rewritten)
    strides = {n.output[0]: list(next(a for a in n.attribute if a.name == "strides").ints)
               for n in rewritten.graph.node if n.op_type == "Conv"}
    assert strides == {"short": [1, 1], "main": [1, 1], "wide": [2, 2], "shared": [2, 2]}
    slices = [n for n in rewritten.graph.node if n.op_type == "Slice"]
    assert [n.input[0] for n in slices] == ["a_q"]  # the 8-bit integers are subsampled
    for got, want in zip(run(rewritten), before):
        np.testing.assert_array_equal(got, want)


def test_two_dequantisers_of_one_quantiser_each_get_their_own_subsampled_input():
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from export.qdq_graph import subsample_strided_pointwise_inputs

    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array(np.array(0.05, np.float32), "s"),
             numpy_helper.from_array(np.array(3, np.uint8), "z"),
             numpy_helper.from_array(rng.normal(0, 1, (4, 3, 1, 1)).astype(np.float32), "w")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             *[helper.make_node("DequantizeLinear", ["q", "s", "z"], [f"dq{i}"]) for i in (1, 2)],
             *[helper.make_node("Conv", [f"dq{i}", "w"], [f"y{i}"], kernel_shape=[1, 1], strides=[2, 2])
               for i in (1, 2)]]
    graph = helper.make_graph(nodes, "shared", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, ["n", "c", "h", "w"])
                               for i in (1, 2)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(1).normal(0, 2, (1, 3, 8, 8)).astype(np.float32)

    def run(m):
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})

    before = run(model)
    rewritten = onnx.load_from_string(model.SerializeToString())
    assert subsample_strided_pointwise_inputs(rewritten) == 2
    onnx.checker.check_model(rewritten)
    assert len({n.output[0] for n in rewritten.graph.node if n.op_type == "Slice"}) == 2
    for got, want in zip(run(rewritten), before):
        np.testing.assert_array_equal(got, want)


def test_an_onnx_int8_file_made_before_the_rewrites_gets_them_with_its_metadata_and_outputs_kept(tmp_path: Path):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto

    from export.qdq_graph import main as rewrite

    model = _down_sampling_block()
    zero_point = {i.name: i for i in model.graph.initializer}["z"]
    zero_point.CopyFrom(onnx.numpy_helper.from_array(np.array(-5, np.int8), "z"))  # signed, as older exports
    onnx.helper.set_model_props(model, {"steel_edge_inspect": '{"labels": ["a", "b"]}'})
    before, after = tmp_path / "old.onnx", tmp_path / "new.onnx"
    onnx.save(model, str(before))
    x = np.random.default_rng(3).normal(0, 2, (1, 3, 8, 8)).astype(np.float32)

    def run(path):
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})

    assert rewrite([str(before), "--out", str(after)]) == 0
    rewritten = onnx.load(str(after))
    assert {p.key: p.value for p in rewritten.metadata_props} == {"steel_edge_inspect": '{"labels": ["a", "b"]}'}
    assert {i.name: i for i in rewritten.graph.initializer}["z"].data_type == TensorProto.UINT8
    assert sum(n.op_type == "Slice" for n in rewritten.graph.node) == 1
    for got, want in zip(run(after), run(before)):
        np.testing.assert_array_equal(got, want)
    again = tmp_path / "again.onnx"
    assert rewrite([str(after), "--out", str(again)]) == 0  # idempotent
    assert again.read_bytes() == after.read_bytes()


def test_a_rewritten_edge_model_keeps_its_metadata_and_still_loads(tiny_edge_models, tmp_path: Path):
    from edge_runtime.classifier import Classifier
    from edge_runtime.metadata import read_metadata
    from export.qdq_graph import main as rewrite

    out = tmp_path / "rewritten.onnx"
    assert rewrite([str(tiny_edge_models.onnx), "--out", str(out)]) == 0
    before, after = read_metadata(tiny_edge_models.onnx), read_metadata(out)
    assert after.labels == before.labels and after.graph_sha256  # the digest renewed for the new bytes
    image = np.random.default_rng(0).integers(0, 255, (20, 20, 3), dtype=np.uint8)
    np.testing.assert_allclose(Classifier.load(out).predict(image).probabilities,
                               Classifier.load(tiny_edge_models.onnx).predict(image).probabilities, atol=1e-6)


def test_rewriting_a_file_that_is_not_onnx_names_it_and_fails(tmp_path: Path, caplog):
    from export.qdq_graph import main as rewrite

    bad = tmp_path / "notes.onnx"
    bad.write_text("not a model")
    assert rewrite([str(bad), "--out", str(tmp_path / "out.onnx")]) == 1
    assert "notes.onnx" in caplog.text and not (tmp_path / "out.onnx").exists()


def test_export_with_polarity_auto_stores_it_and_checks_the_float_model_the_same_way(tiny_run: Path, tmp_path: Path):
    from edge_runtime.cli import main as classify

    out = tmp_path / "polarity"
    assert main([str(tiny_run), "--out", str(out), "--formats", "tflite_fp32", "--polarity", "auto",
                 "--max-drop-neu", "100", "--max-drop-cross", "100", "--min-agreement", "0", "--no-progress"]) == 0
    model = out / FORMATS["tflite_fp32"].filename
    assert read_metadata(model).extra["polarity"] == "auto"
    data = report(out)
    assert data["polarity"] == "auto"
    comparison = data["artifacts"][0]["comparison"]
    assert comparison["max_abs_dprob"] < 1e-4 and comparison["answer_agreement"] == 1.0  # same rule on both sides
    folder = write_class_folders(tmp_path / "images", per_class=1)
    for flag, expect_any_inverted in (([], None), (["--polarity", "as-is"], False)):
        records_file = tmp_path / f"records{len(flag)}.jsonl"
        assert classify(["--folder", str(folder), "--recursive", "--model", str(model), "--output",
                         str(records_file), *flag]) == 0
        records = [json.loads(line) for line in records_file.read_text().splitlines()]
        assert len(records) == 6 and all(isinstance(r["inverted"], bool) for r in records)
        if expect_any_inverted is False:
            assert not any(r["inverted"] for r in records)


def test_check_reads_the_artifacts_and_the_float_reference_with_the_same_polarity(tiny_run: Path, exported: Path,
                                                                                   tmp_path: Path):
    """On inverted copies of the training images (a plant with the opposite lighting), auto reads them back."""
    import cv2

    from edge_runtime.classifier import Classifier
    from export.recheck import check_artifacts

    data = tmp_path / "inverted"
    for source in sorted(Path(TrainedRun.open(tiny_run).metadata["data_root"]).rglob("*_1.jpg")):
        (data / source.parent.name).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(data / source.parent.name / source.name), 255 - cv2.imread(str(source)))
    artifact = exported / "model_fp32.tflite"
    model = Classifier.load(artifact)
    model.polarity = "auto"
    assert any(model.predict_file(p).inverted for p in data.rglob("*.jpg"))  # the readings differ here
    for reference in (str(tiny_run), str(exported / "model_fp32.onnx")):
        result = check_artifacts([str(artifact)], str(data), reference=reference, polarity="auto", progress=False)
        assert result["polarity"] == "auto" and result["results"][0]["overall"]["max_abs_dprob"] < 1e-4
        as_is = check_artifacts([str(artifact)], str(data), reference=reference, progress=False)
        assert as_is["results"][0]["overall"]["max_abs_dprob"] < 1e-4  # both as-is (their own setting)
