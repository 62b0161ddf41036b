"""The on-device inference layer: embedded metadata, LiteRT/ONNX Runtime backends, the Classifier.

Tiny models (16×16×3 -> conv -> pooling -> 3-way softmax) are built once per module with TensorFlow in the
test process; the device code itself must never import TensorFlow, which a subprocess test checks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, synthetic_image
from edge_runtime import shipped
from edge_runtime.backends import engine_for, load_backend
from edge_runtime.classifier import Classifier, Prediction
from edge_runtime.errors import BackendUnavailableError, ImageReadError, MetadataError, ModelLoadError
from edge_runtime.metadata import (
    LABELS_ENTRY,
    METADATA_ENTRY,
    METADATA_SCHEMA,
    ONNX_METADATA_KEY,
    ModelMetadata,
    embed_tflite_metadata,
    metadata_from_labels,
    read_metadata,
    read_onnx_metadata,
    read_tflite_metadata,
    strip_tflite_metadata,
)
from edge_runtime.preprocessing import PreprocessConfig, prepare_pixels, preprocess

LABELS = ["crazing", "inclusion", "patches"]
SIZE = 16
CFG = PreprocessConfig(input_size=(SIZE, SIZE))


@dataclass
class TinyModels:
    keras_model: object
    fp32: Path  # float32 TFLite with metadata
    int8: Path  # full-int8 TFLite (int8 in and out) with metadata
    pixels: Path  # uint8-pixel TFLite that normalises in the graph, with metadata
    onnx: Path  # float32 ONNX with metadata
    bare_tflite: Path  # float32 TFLite without metadata
    bare_onnx: Path  # float32 ONNX without metadata


def tiny_metadata(fmt: str, dtype: str = "float32", in_graph: bool = False, labels=LABELS) -> ModelMetadata:
    return ModelMetadata(
        labels=list(labels),
        input_shape=[1, SIZE, SIZE, 3],
        input_dtype=dtype,
        preprocessing=CFG.to_dict(),
        preprocessing_in_graph=in_graph,
        format=fmt,
        source_model_sha256="a" * 64,
        split_manifest_sha256="b" * 64,
        versions={"numpy": np.__version__},
        created="2025-01-01T00:00:00+00:00",
        extra={"note": "tiny test model"},
    )


def test_images() -> list[np.ndarray]:
    """Grayscale textures of every class plus a few colour images, of sizes other than the model's."""
    rng = np.random.default_rng(0)
    gray = [synthetic_image(c, i) for c in range(6) for i in range(3)]
    return gray + [rng.integers(0, 256, (30, 24, 3), dtype=np.uint8) for _ in range(6)]


test_images.__test__ = False  # a helper, not a test


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> TinyModels:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import tensorflow as tf

    base = tmp_path_factory.mktemp("runtime_models")
    keras.utils.set_random_seed(0)
    conv = keras.layers.Conv2D(4, 3, activation="relu", kernel_initializer=keras.initializers.RandomNormal(stddev=0.01))
    pool = keras.layers.GlobalAveragePooling2D()
    dense = keras.layers.Dense(len(LABELS), activation="softmax")
    floats = keras.Input((SIZE, SIZE, 3))
    model = keras.Model(floats, dense(pool(conv(floats))))
    pixels = keras.Input((SIZE, SIZE, 3), dtype="uint8")
    normalised = keras.layers.Normalization(mean=list(CFG.mean), variance=[1.0, 1.0, 1.0])(pixels)
    pixel_model = keras.Model(pixels, dense(pool(conv(normalised))))

    def saved_model(m, name: str) -> str:
        m.export(str(base / name), verbose=False)
        return str(base / name)

    float_dir, pixel_dir = saved_model(model, "float_sm"), saved_model(pixel_model, "pixel_sm")
    fp32 = tf.lite.TFLiteConverter.from_saved_model(float_dir).convert()
    pixel = tf.lite.TFLiteConverter.from_saved_model(pixel_dir).convert()
    calibration = [preprocess(image, CFG)[None] for image in test_images()[:20]]
    converter = tf.lite.TFLiteConverter.from_saved_model(float_dir)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x] for x in calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    int8 = converter.convert()

    def write(name: str, data: bytes) -> Path:
        (base / name).write_bytes(data)
        return base / name

    return TinyModels(
        keras_model=model,
        fp32=write("fp32.tflite", embed_tflite_metadata(fp32, tiny_metadata("tflite_fp32"))),
        int8=write("int8.tflite", embed_tflite_metadata(int8, tiny_metadata("tflite_int8", "int8"))),
        pixels=write("pixels.tflite", embed_tflite_metadata(pixel, tiny_metadata("tflite_fp32", "uint8", True))),
        onnx=write_onnx(model, base / "fp32.onnx", tiny_metadata("onnx_fp32")),
        bare_tflite=write("bare.tflite", fp32),
        bare_onnx=write_onnx(model, base / "bare.onnx", None),
    )


def write_onnx(model, path: Path, meta: ModelMetadata | None) -> Path:
    """The Keras model as an ONNX graph built by hand (NHWC input, symbolic batch), metadata in metadata_props."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    conv, dense = model.layers[1], model.layers[3]
    kernel, bias = conv.get_weights()
    weights, offsets = dense.get_weights()
    nodes = [
        helper.make_node("Transpose", ["input"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "kernel", "bias"], ["conv"]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("ReduceMean", ["relu"], ["pooled"], axes=[2, 3], keepdims=0),
        helper.make_node("MatMul", ["pooled", "weights"], ["matmul"]),
        helper.make_node("Add", ["matmul", "offsets"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
    ]
    initializers = [
        numpy_helper.from_array(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)), "kernel"),
        numpy_helper.from_array(bias, "bias"),
        numpy_helper.from_array(weights, "weights"),
        numpy_helper.from_array(offsets, "offsets"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", len(LABELS)])],
        initializers,
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx_model.ir_version = 8
    if meta is not None:
        helper.set_model_props(onnx_model, {ONNX_METADATA_KEY: meta.to_json()})
    onnx.save(onnx_model, str(path))
    return path


def float_batch(images: list[np.ndarray]) -> np.ndarray:
    return np.stack([preprocess(image, CFG) for image in images])


def keras_probabilities(models: TinyModels, images: list[np.ndarray]) -> np.ndarray:
    return np.asarray(models.keras_model(float_batch(images), training=False))


# --- metadata ------------------------------------------------------------------------------------------


def test_metadata_survives_a_json_round_trip():
    meta = tiny_metadata("tflite_int8", "int8")
    back = ModelMetadata.from_json(meta.to_json(), "model.tflite")
    assert back == meta
    assert back.schema == METADATA_SCHEMA
    assert back.preprocess == CFG


def test_tflite_metadata_is_an_appended_zip_with_json_and_labels(models):
    assert read_tflite_metadata(models.fp32) == tiny_metadata("tflite_fp32")
    assert read_metadata(models.int8) == tiny_metadata("tflite_int8", "int8")
    with zipfile.ZipFile(models.fp32) as archive:
        assert set(archive.namelist()) == {METADATA_ENTRY, LABELS_ENTRY}
        assert archive.read(LABELS_ENTRY).decode().splitlines() == LABELS


def test_the_interpreter_ignores_the_appended_metadata(models):
    batch = float_batch(test_images()[:4])
    with_metadata = load_backend(models.fp32).run(batch)
    without = load_backend(models.bare_tflite).run(batch)
    assert np.array_equal(with_metadata, without)


def test_onnx_metadata_is_read_from_metadata_props_with_onnxruntime(models):
    assert read_onnx_metadata(models.onnx) == tiny_metadata("onnx_fp32")
    assert read_metadata(models.onnx) == tiny_metadata("onnx_fp32")


def test_metadata_is_embedded_only_into_a_raw_tflite_flatbuffer(models):
    embedded = models.fp32.read_bytes()
    with pytest.raises(ValueError, match="already carries edge metadata"):
        embed_tflite_metadata(embedded, tiny_metadata("tflite_fp32"))
    raw = models.bare_tflite.read_bytes()
    assert strip_tflite_metadata(embedded) == raw
    assert strip_tflite_metadata(raw) == raw
    with pytest.raises(ValueError, match="not a TFLite flatbuffer"):
        embed_tflite_metadata(b"\x00" * 64, tiny_metadata("tflite_fp32"))


def _broken(**changes) -> str:
    """Valid metadata JSON with some fields replaced."""
    return json.dumps({**json.loads(tiny_metadata("tflite_fp32").to_json()), **changes})


@pytest.mark.parametrize(
    "text, problem",
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        (_broken(schema="other/1"), "schema"),
        (_broken(labels=[]), "labels"),
        (_broken(labels=["a", "a", "b"]), "repeated"),
        (_broken(labels=["a", 3, "b"]), "labels"),
        (_broken(input_shape=[1, SIZE, SIZE, 1]), "input_shape"),
        (_broken(input_shape=[SIZE, SIZE, 3]), "input_shape"),
        (_broken(input_dtype="float16"), "input_dtype"),
        (_broken(preprocessing={"interpolation": "bogus", "input_size": [SIZE, SIZE]}), "interpolation"),
        (_broken(preprocessing={"input_size": [8, 8]}), "differs from input_shape"),
        (_broken(preprocessing_in_graph="yes"), "preprocessing_in_graph"),
    ],
    ids=[
        "not-json", "not-object", "schema", "no-labels", "duplicate-labels", "non-string-label", "one-channel",
        "three-dims", "dtype", "interpolation", "size-mismatch", "in-graph-not-bool",
    ],
)
def test_invalid_metadata_is_refused_naming_the_model_and_the_fix(text, problem):
    with pytest.raises(MetadataError, match=problem) as info:
        ModelMetadata.from_json(text, "models/line3.tflite")
    assert "models/line3.tflite" in str(info.value)
    assert "edge-export" in str(info.value) and "labels" in str(info.value)


def test_metadata_from_explicit_labels_assumes_default_preprocessing():
    meta = metadata_from_labels(LABELS, [1, SIZE, SIZE, 3], "uint8")
    assert meta.labels == LABELS and meta.preprocessing_in_graph and meta.format == "unknown"
    assert meta.preprocess == CFG
    assert not metadata_from_labels(LABELS, [1, SIZE, SIZE, 3], "float32").preprocessing_in_graph
    with pytest.raises(MetadataError, match="repeated"):
        metadata_from_labels(["a", "a"], [1, SIZE, SIZE, 3], "float32", source="x.tflite")


# --- loading: missing metadata, mismatches, bad files --------------------------------------------------


@pytest.mark.parametrize("which", ["bare_tflite", "bare_onnx"])
def test_a_model_without_metadata_is_refused_naming_the_file(models, which):
    path = getattr(models, which)
    with pytest.raises(MetadataError, match="has no edge metadata") as info:
        Classifier.load(path)
    assert str(path) in str(info.value) and "edge-export" in str(info.value)


@pytest.mark.parametrize("which", ["bare_tflite", "bare_onnx"])
def test_a_model_without_metadata_is_accepted_with_explicit_labels(models, which):
    classifier = Classifier.load(getattr(models, which), labels=LABELS)
    assert classifier.labels == LABELS and classifier.metadata.format == "unknown"
    image = test_images()[0]
    expected = keras_probabilities(models, [image])[0]
    np.testing.assert_allclose(classifier.predict(image).probabilities, expected, atol=1e-4)


def test_a_wrong_number_of_labels_is_refused(models, tmp_path):
    with pytest.raises(MetadataError, match="does not match the model") as info:
        Classifier.load(models.bare_tflite, labels=LABELS[:2])
    assert "2 labels but the model has 3 outputs" in str(info.value)
    four = tmp_path / "four.tflite"
    flatbuffer = models.bare_tflite.read_bytes()
    four.write_bytes(embed_tflite_metadata(flatbuffer, tiny_metadata("tflite_fp32", labels=[*LABELS, "scratches"])))
    with pytest.raises(MetadataError, match="does not match the model"):
        Classifier.load(four)


def test_metadata_with_the_wrong_input_contract_is_refused(models, tmp_path):
    wrong = tmp_path / "wrong.tflite"
    wrong.write_bytes(embed_tflite_metadata(models.bare_tflite.read_bytes(), tiny_metadata("tflite_int8", "int8")))
    with pytest.raises(MetadataError, match="input dtype int8 but the model takes float32"):
        Classifier.load(wrong)


def test_explicit_labels_must_agree_with_the_embedded_ones(models):
    assert Classifier.load(models.fp32, labels=LABELS).labels == LABELS
    with pytest.raises(MetadataError, match="differ from those stored"):
        Classifier.load(models.fp32, labels=LABELS[::-1])


@pytest.mark.parametrize(
    "content",
    [
        np.random.default_rng(0).bytes(2000),
        b"\x00\x00\x00\x00TFL3" + np.random.default_rng(1).bytes(2000),
        None,  # the first half of a real model
    ],
    ids=["random-bytes", "random-bytes-with-identifier", "truncated"],
)
def test_a_corrupt_tflite_file_raises_model_load_error(models, tmp_path, content):
    path = tmp_path / "corrupt.tflite"
    full = models.bare_tflite.read_bytes()
    path.write_bytes(content if content is not None else full[: len(full) // 2])
    with pytest.raises(ModelLoadError, match="corrupt.tflite"):
        load_backend(path)
    with pytest.raises(ModelLoadError):
        Classifier.load(path, labels=LABELS)


def test_a_corrupt_onnx_file_raises_model_load_error(tmp_path):
    path = tmp_path / "corrupt.onnx"
    path.write_bytes(np.random.default_rng(0).bytes(500))
    with pytest.raises(ModelLoadError, match="corrupt.onnx"):
        load_backend(path)


def test_unknown_suffixes_and_missing_files_are_refused(tmp_path):
    saved = tmp_path / "model.pb"
    saved.write_bytes(b"x")
    for call in (load_backend, read_metadata, Classifier.load):
        with pytest.raises(ModelLoadError, match=r"model.pb.*unsupported model format '\.pb'"):
            call(saved)
    with pytest.raises(ModelLoadError, match="missing.tflite.*no such file"):
        Classifier.load(tmp_path / "missing.tflite")
    assert engine_for("a.TFLITE") == "litert" and engine_for("b.onnx") == "onnxruntime"


def test_without_a_shipped_model_load_asks_for_a_path(monkeypatch, tmp_path):
    monkeypatch.setattr(shipped, "DEFAULT_MODEL", tmp_path / "models" / "default.tflite")
    with pytest.raises(ModelLoadError, match="no default model ships"):
        Classifier.load()


def test_a_missing_engine_package_gives_an_install_hint(models, monkeypatch):
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    with pytest.raises(BackendUnavailableError, match=r'pip install "steel-edge-inspect\[edge\]"'):
        load_backend(models.fp32)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(BackendUnavailableError, match="pip install onnxruntime"):
        load_backend(models.onnx)


# --- numerics ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["fp32", "onnx"])
def test_float_models_match_keras(models, which):
    images = test_images()
    backend = load_backend(getattr(models, which), threads=1)
    assert backend.threads == 1 and backend.output_width == len(LABELS)
    probabilities = backend.run(float_batch(images))
    assert probabilities.dtype == np.float32 and probabilities.shape == (len(images), len(LABELS))
    np.testing.assert_allclose(probabilities, keras_probabilities(models, images), atol=1e-4)


def test_int8_model_is_close_to_float(models):
    images = test_images()
    reference = keras_probabilities(models, images)
    quantised = Classifier.load(models.int8).predict_batch(images)
    probabilities = np.stack([p.probabilities for p in quantised])
    assert probabilities.dtype == np.float32
    assert np.abs(probabilities - reference).max() < 0.1
    agree = np.mean(probabilities.argmax(1) == reference.argmax(1))
    assert agree >= 0.8, f"int8 top-1 agrees with float on only {agree:.0%} of the images"


def test_float_input_is_quantised_with_the_input_tensor_parameters(models):
    backend = load_backend(models.int8)
    assert backend.input_dtype == np.int8
    scale, zero_point = backend.input_quantization
    batch = float_batch(test_images()[:5])
    by_hand = np.clip(np.round(batch / scale + zero_point), -128, 127).astype(np.int8)
    assert np.array_equal(backend.run(batch), backend.run(by_hand))
    with pytest.raises(ValueError, match="expects a non-empty batch of shape"):
        backend.run(batch[:, :8])


def test_a_graph_that_normalises_gets_uint8_pixels(models):
    classifier = Classifier.load(models.pixels)
    image = test_images()[-1]
    prepared = classifier.prepare(image)
    assert prepared.dtype == np.uint8 and np.array_equal(prepared, prepare_pixels(image, CFG))
    assert Classifier.load(models.fp32).prepare(image).dtype == np.float32
    images = test_images()
    probabilities = np.stack([p.probabilities for p in classifier.predict_batch(images)])
    np.testing.assert_allclose(probabilities, keras_probabilities(models, images), atol=1e-4)


# --- the Classifier ------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["fp32", "int8", "onnx"])
def classifier(request, models) -> Classifier:
    return Classifier.load(getattr(models, request.param), threads=1)


def test_every_decoded_form_of_the_same_content_gives_the_same_prediction(classifier):
    import cv2

    gray = synthetic_image(2, 0)
    forms = [
        gray,
        cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR),
        cv2.cvtColor(gray, cv2.COLOR_GRAY2BGRA),
        gray.astype(np.uint16) * 257,
    ]
    predictions = [classifier.predict(form) for form in forms]
    for prediction in predictions[1:]:
        assert prediction == predictions[0]
        assert np.array_equal(prediction.probabilities, predictions[0].probabilities)


def test_predict_batch_equals_predict_per_image(classifier):
    images = test_images()[::3]
    batch = classifier.predict_batch(images)
    single = [classifier.predict(image) for image in images]
    assert [p.label for p in batch] == [p.label for p in single]
    np.testing.assert_allclose(
        np.stack([p.probabilities for p in batch]), np.stack([p.probabilities for p in single]), atol=1e-6
    )
    assert classifier.predict_batch([]) == []


def test_a_prediction_names_the_label_and_the_top_three(classifier):
    prediction = classifier.predict(test_images()[5])
    assert isinstance(prediction, Prediction)
    assert prediction.label == LABELS[prediction.index] == prediction.top_k[0][0]
    assert prediction.confidence == pytest.approx(float(prediction.probabilities.max()))
    assert [label for label, _ in prediction.top_k] == [LABELS[i] for i in np.argsort(-prediction.probabilities)]
    assert [p for _, p in prediction.top_k] == sorted((p for _, p in prediction.top_k), reverse=True)
    assert prediction.preprocess_ms >= 0 and prediction.inference_ms > 0
    assert "probabilities" not in repr(prediction)


def test_predict_file_reads_the_image_and_names_a_bad_file(classifier, tmp_path):
    import cv2

    image = synthetic_image(4, 1)
    cv2.imwrite(str(tmp_path / "good.png"), image)
    assert classifier.predict_file(tmp_path / "good.png") == classifier.predict(image)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty.jpg"):
        classifier.predict_file(empty)


# --- the device path stays free of TensorFlow ----------------------------------------------------------


def run_python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


def test_importing_edge_runtime_loads_no_engine_and_no_tensorflow():
    result = run_python(
        "import sys, edge_runtime\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in "
        "('onnxruntime', 'ai_edge_litert', 'tensorflow', 'keras', 'onnx', 'tf2onnx')]\n"
        "assert not heavy, heavy\n"
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("which", ["int8", "onnx"])
def test_the_device_path_never_imports_tensorflow(models, tmp_path, which):
    import cv2

    image = tmp_path / "part.png"
    cv2.imwrite(str(image), synthetic_image(1, 0))
    result = run_python(
        "import sys\n"
        "from edge_runtime import Classifier\n"
        f"c = Classifier.load({str(getattr(models, which))!r})\n"
        f"print(c.predict_file({str(image)!r}).label)\n"
        "bad = [m for m in sys.modules if m in ('tensorflow', 'onnx', 'tf2onnx')"
        " or m.startswith(('tensorflow.', 'keras', 'onnx.', 'tf2onnx.'))]\n"
        "assert not bad, bad\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in LABELS
