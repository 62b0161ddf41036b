"""The OpenVINO engine runs .onnx artifacts exactly like ONNX Runtime: same contract, same numbers, same metadata.

Uses conftest's tiny exported ONNX model (and a QDQ int8 version of it made with export's own quantiser);
skipped cleanly where OpenVINO is not installed.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino")

from conftest import REPO  # noqa: E402
from edge_runtime import engine_candidates, engine_select  # noqa: E402
from edge_runtime.backends import engine_for, engines_for, load_backend  # noqa: E402
from edge_runtime.classifier import Classifier  # noqa: E402
from edge_runtime.errors import BackendUnavailableError, ModelLoadError  # noqa: E402
from edge_runtime.metadata import ONNX_METADATA_KEY, read_metadata  # noqa: E402
from edge_runtime.onnx_metadata import read_metadata_props  # noqa: E402
from edge_runtime.records import ModelInfo  # noqa: E402
from test_runtime import LABELS, SIZE, float_batch, test_images, tiny_metadata  # noqa: E402


def with_metadata(path: Path, props: dict[str, str]) -> Path:
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    del model.metadata_props[:]
    helper.set_model_props(model, props)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def int8_onnx(tiny_edge_models, tmp_path_factory) -> Path:
    """The tiny model as static QDQ int8 (uint8 activations, int8 weights), as edge-export makes it."""
    from export.convert import onnx_int8

    output = tmp_path_factory.mktemp("int8") / "tiny_int8.onnx"
    calibration = list(float_batch(test_images()))
    onnx_int8(tiny_edge_models.onnx, output, lambda: iter(calibration))
    return with_metadata(output, {ONNX_METADATA_KEY: tiny_metadata("onnx_int8").to_json()})


@pytest.fixture(scope="module")
def two_outputs(tmp_path_factory) -> Path:
    """An ONNX graph whose first output is a 5-wide 'embedding' and second the 3-class 'probabilities'."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    nodes = [
        helper.make_node("ReduceMean", ["input"], ["pooled"], axes=[1, 2], keepdims=0),
        helper.make_node("MatMul", ["pooled", "w_embed"], ["embedding"]),
        helper.make_node("MatMul", ["embedding", "w_class"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes, "two_outputs",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 5]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", len(LABELS)])],
        [numpy_helper.from_array(rng.normal(size=(3, 5)).astype(np.float32), "w_embed"),
         numpy_helper.from_array(rng.normal(size=(5, len(LABELS))).astype(np.float32), "w_class")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("two") / "two_outputs.onnx"
    onnx.save(model, str(path))
    return path


def both(path: Path, threads: int = 1):
    return load_backend(path, "onnxruntime", threads), load_backend(path, "openvino", threads)


def test_the_backend_contract_is_the_same_as_onnxruntime(tiny_edge_models):
    ort, ov = both(tiny_edge_models.onnx)
    assert ov.name == "openvino" and ov.threads == 1
    assert ov.input_shape == ort.input_shape == (-1, SIZE, SIZE, 3)  # NHWC, dynamic batch
    assert ov.input_dtype == ort.input_dtype == np.float32
    assert ov.output_widths == ort.output_widths == [len(LABELS)] and ov.output_width == len(LABELS)


def test_fp32_probabilities_agree_with_onnxruntime_within_1e_4(tiny_edge_models):
    ort, ov = both(tiny_edge_models.onnx, threads=2)
    batch = float_batch(test_images())
    expected, got = ort.run(batch), ov.run(batch)
    assert got.dtype == np.float32 and got.shape == expected.shape == (len(batch), len(LABELS))
    assert np.abs(got - expected).max() < 1e-4
    assert np.allclose(ov.run(batch[:1]), expected[:1], atol=1e-4)  # batch 1 and batch N alike


def test_int8_qdq_top1_agrees_with_onnxruntime_except_near_ties(int8_onnx):
    """OpenVINO may run an int8 model's float layers in bf16: probabilities move by a little, so only images
    whose best class leads by more than that little must keep it."""
    ort, ov = both(int8_onnx)
    batch = float_batch(test_images())
    expected, got = ort.run(batch), ov.run(batch)
    assert np.abs(got - expected).max() < 0.05
    top_two = np.sort(expected, axis=1)[:, -2:]
    clear = top_two[:, 1] - top_two[:, 0] > 0.1
    assert clear.mean() > 0.8
    assert np.array_equal(got.argmax(axis=1)[clear], expected.argmax(axis=1)[clear])


def test_metadata_props_are_read_as_onnxruntime_reads_them(tiny_edge_models, int8_onnx):
    for path in (tiny_edge_models.onnx, int8_onnx):
        ort, ov = both(path)
        assert ov.custom_metadata == ort.custom_metadata and ONNX_METADATA_KEY in ov.custom_metadata
    meta = read_metadata(int8_onnx, load_backend(int8_onnx, "openvino"))
    assert meta.labels == LABELS and meta.format == "onnx_int8"


def test_a_classifier_on_openvino_predicts_what_onnxruntime_predicts(tiny_edge_models):
    on_ov = Classifier.load(tiny_edge_models.onnx, engine="openvino", threads=1)
    on_ort = Classifier.load(tiny_edge_models.onnx, engine="onnxruntime", threads=1)
    assert on_ov.backend.name == "openvino" and on_ov.labels == on_ort.labels == LABELS
    got, expected = on_ov.predict_batch(test_images()), on_ort.predict_batch(test_images())
    assert [p.label for p in got] == [p.label for p in expected]
    assert np.allclose([p.confidence for p in got], [p.confidence for p in expected], atol=1e-4)


def test_every_output_comes_in_onnxruntime_order(two_outputs):
    ort, ov = both(two_outputs)
    assert ov.output_widths == ort.output_widths == [5, len(LABELS)]
    assert ov.primary_output == ort.primary_output == 1
    batch = float_batch(test_images()[:4])
    for got, expected in zip(ov.run_outputs(batch), ort.run_outputs(batch), strict=True):
        assert got.shape == expected.shape and np.allclose(got, expected, atol=1e-4)


def test_engines_per_suffix(tiny_edge_models):
    assert engines_for("m.onnx") == ["onnxruntime", "openvino"] and engines_for("m.tflite") == ["litert"]
    assert engine_for("m.onnx") == "onnxruntime"  # the default engine of a suffix is unchanged


@pytest.mark.parametrize("engine, which", [("openvino", "tflite"), ("litert", "onnx")])
def test_an_engine_that_cannot_run_the_file_is_refused(tiny_edge_models, engine, which):
    path = getattr(tiny_edge_models, which)
    with pytest.raises(ModelLoadError, match=rf"the {engine} engine cannot run \.{which} files.*--engine auto"):
        load_backend(path, engine)
    with pytest.raises(ModelLoadError, match=f"cannot run .{which} files"):
        Classifier.load(path, engine=engine)


def test_a_missing_openvino_gives_its_install_hint_and_is_no_candidate(tiny_edge_models, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(BackendUnavailableError, match=r'pip install "steel-edge-inspect\[edge\]"'):
        load_backend(tiny_edge_models.onnx, "openvino")
    monkeypatch.setattr(engine_candidates.importlib.util, "find_spec", lambda name: None if name == "openvino" else 1)
    assert [c.engine for c in engine_candidates.file_candidates(tiny_edge_models.onnx)] == ["onnxruntime"]


def test_auto_measures_both_onnx_engines_records_the_one_used_and_then_uses_the_cache(
    tiny_edge_models, tmp_path, monkeypatch, caplog
):
    monkeypatch.setenv(engine_select.CACHE_ENV, str(tmp_path))
    caplog.set_level(logging.INFO, logger="edge_runtime.engine_select")
    first = Classifier.load(tiny_edge_models.onnx, engine="auto", threads=1)
    entry = next(iter(json.loads(engine_select.cache_path().read_text())["entries"].values()))
    assert sorted(m["engine"] for m in entry["measurements"]) == ["onnxruntime", "openvino"]
    assert all(m["median_ms"] > 0 for m in entry["measurements"])
    assert entry["choice"] == {"engine": first.backend.name, "file": "tiny.onnx"}
    info = ModelInfo.of(first)
    assert (info.engine, info.name) == (first.backend.name, "tiny.onnx")
    again = Classifier.load(tiny_edge_models.onnx, engine="auto", threads=1)
    assert again.backend.name == first.backend.name
    assert any("cached choice" in r.getMessage() for r in caplog.records)


def test_loading_a_model_on_openvino_contacts_no_server(tiny_edge_models):
    """openvino's import sends a usage event (openvino_telemetry, from a forked process); the runtime keeps
    that module out, so a line box makes no network lookup. Every lookup, in forks too, is recorded."""
    code = (
        "import socket, sys, time\n"
        "real = socket.getaddrinfo\n"
        "def spy(host, *args, **kwargs):\n"
        "    print('lookup', host, flush=True)\n"
        "    return real(host, *args, **kwargs)\n"
        "socket.getaddrinfo = spy\n"
        "from edge_runtime import Classifier\n"
        f"c = Classifier.load({str(tiny_edge_models.onnx)!r}, engine='openvino')\n"
        "import numpy as np\n"
        f"print(c.predict(np.zeros(({SIZE}, {SIZE}), np.uint8)).label)\n"
        "time.sleep(1)\n"
        "print('telemetry module:', sys.modules.get('openvino_telemetry', 'absent'))\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "CI"}  # CI=true would silence it anyway
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**env, "PYTHONPATH": str(REPO)},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "lookup" not in result.stdout, result.stdout
    assert "telemetry module: None" in result.stdout


def test_the_openvino_path_never_imports_tensorflow_or_onnx(tiny_edge_models):
    code = (
        "import sys\n"
        "from edge_runtime import Classifier\n"
        f"c = Classifier.load({str(tiny_edge_models.onnx)!r}, engine='openvino')\n"
        "import numpy as np\n"
        f"print(c.predict(np.zeros(({SIZE}, {SIZE}), np.uint8)).label)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'onnx', 'tf2onnx')]\n"
        "assert not bad, bad\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in LABELS


def test_every_engine_reads_metadata_props_from_the_file_like_the_onnx_package(tiny_edge_models, int8_onnx):
    import onnx

    for path in (tiny_edge_models.onnx, int8_onnx):
        expected = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        assert read_metadata_props(path) == expected and ONNX_METADATA_KEY in expected
        assert load_backend(path, "openvino").custom_metadata == expected


def test_threads_are_pinned_only_when_the_model_gets_every_core(monkeypatch):
    """Copies side by side with a share of the cores each must not all be pinned to the first cores."""
    import openvino as ov

    from edge_runtime import backends

    monkeypatch.setattr(backends, "default_threads", lambda: 4)
    core = ov.Core()
    assert backends._openvino_config(core, 4)["ENABLE_CPU_PINNING"] is True
    assert backends._openvino_config(core, 1)["ENABLE_CPU_PINNING"] is False
    assert backends._openvino_config(core, 2)["INFERENCE_PRECISION_HINT"] == "f32"


@pytest.fixture
def compiled_shapes(monkeypatch) -> list[str]:
    """The input shape of every model OpenVINO compiles from here on, in order."""
    import openvino as ov

    compiled: list[str] = []
    real = ov.Core.compile_model

    def recording(core, model, *args, **kwargs):
        compiled.append(str(model.inputs[0].get_partial_shape()))
        return real(core, model, *args, **kwargs)

    monkeypatch.setattr(ov.Core, "compile_model", recording)
    return compiled


def test_a_dynamic_batch_is_compiled_for_one_image_and_a_batch_gives_each_image_its_numbers_alone(
        tiny_edge_models, int8_onnx, compiled_shapes):
    """One compiled model (batch of one, the faster static shape) serves every batch size, so the export checks'
    batches and the device's single frames get the same numbers, also where OpenVINO runs layers in bf16."""
    batch = float_batch(test_images())
    for path in (tiny_edge_models.onnx, int8_onnx):
        compiled_shapes.clear()
        backend = load_backend(path, "openvino", threads=1)
        assert backend.input_shape == (-1, SIZE, SIZE, 3)  # still takes batches
        together = backend.run_outputs(batch)
        alone = [backend.run_outputs(batch[i:i + 1]) for i in range(len(batch))]
        for k, output in enumerate(together):
            assert np.array_equal(output, np.concatenate([a[k] for a in alone]))
        assert compiled_shapes == [f"[1,{SIZE},{SIZE},3]"]


def test_throughput_replicas_run_full_chunks_through_a_batched_copy_that_matches_batch_one(
        tiny_edge_models, int8_onnx, compiled_shapes):
    """With max_batch 4 (the throughput mode), full chunks go through a copy compiled for 4 images, the rest
    image by image, and every image still gets its numbers alone."""
    batch = float_batch(test_images())[:6]
    batch = np.concatenate([batch, batch[::-1]])  # 12 images: three full chunks of 4
    for path in (tiny_edge_models.onnx, int8_onnx):
        compiled_shapes.clear()
        backend = load_backend(path, "openvino", threads=1)
        alone = [backend.run_outputs(batch[i:i + 1]) for i in range(len(batch))]
        backend.max_batch = 4
        for count in (len(batch), 10, 4):  # full chunks only, full chunks and a rest of 2, one chunk
            together = backend.run_outputs(batch[:count])
            for k, output in enumerate(together):
                assert np.array_equal(output, np.concatenate([a[k] for a in alone[:count]]))
        assert compiled_shapes == [f"[1,{SIZE},{SIZE},3]", f"[4,{SIZE},{SIZE},3]"], "each copy is compiled once"
        assert backend._batched is not None, "the batch-4 copy matched and is used"


def test_a_batched_copy_that_rounds_differently_is_not_used(tiny_edge_models, monkeypatch):
    """Where OpenVINO's kernels for 4 images give other numbers than for one, chunks run image by image."""
    from edge_runtime import backends

    real_infer = backends.OpenVINOBackend._infer

    def batch_rounds_differently(self, request, batch):
        outputs = real_infer(self, request, batch)
        return [o + np.float32(1e-3) for o in outputs] if len(batch) > 1 else outputs

    monkeypatch.setattr(backends.OpenVINOBackend, "_infer", batch_rounds_differently)
    batch = float_batch(test_images())[:4]
    backend = load_backend(tiny_edge_models.onnx, "openvino", threads=1)
    alone = [backend.run_outputs(batch[i:i + 1]) for i in range(len(batch))]
    backend.max_batch = 4
    for _ in range(2):
        together = backend.run_outputs(batch)
        for k, output in enumerate(together):
            assert np.array_equal(output, np.concatenate([a[k] for a in alone]))
    assert backend._batched is None and backend._batched_size == 4, "tried once, then left alone"


def test_float_models_are_held_to_float32_and_quantised_ones_keep_the_plugins_precision(
        tiny_edge_models, int8_onnx, monkeypatch):
    """The fp32 artifact is the reference, so it runs in float32; an int8 QDQ model leaves its float layers to
    the CPU plugin (bf16 where the CPU has it), as its export gates measured it."""
    import openvino as ov

    from edge_runtime import backends

    assert backends._openvino_config(ov.Core(), 2, quantized=False)["INFERENCE_PRECISION_HINT"] == "f32"
    assert "INFERENCE_PRECISION_HINT" not in backends._openvino_config(ov.Core(), 2, quantized=True)
    seen = {}
    real = backends._openvino_config

    def recording(core, threads, quantized=False):
        seen[threads] = quantized
        return real(core, threads, quantized)

    monkeypatch.setattr(backends, "_openvino_config", recording)
    load_backend(tiny_edge_models.onnx, "openvino", threads=1)
    load_backend(int8_onnx, "openvino", threads=2)
    assert seen == {1: False, 2: True}


def _strided_pointwise_block(path: Path) -> Path:
    """An int8 QDQ ResNet down-sampling block: a quantised activation read by two 1×1 stride-2 convolutions
    with int8 per-channel weights, their sum the output."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    channels, width = 16, 32
    inits = [numpy_helper.from_array(np.array(0.02, np.float32), "s"),
             numpy_helper.from_array(np.array(0, np.uint8), "z")]
    nodes = [helper.make_node("Relu", ["input"], ["a"]),
             helper.make_node("QuantizeLinear", ["a", "s", "z"], ["a_q"]),
             helper.make_node("DequantizeLinear", ["a_q", "s", "z"], ["a_dq"])]
    for branch in ("short", "main"):
        weights = rng.integers(-63, 64, (width, channels, 1, 1)).astype(np.int8)
        inits += [numpy_helper.from_array(weights, f"{branch}_w"),
                  numpy_helper.from_array(np.full(width, 0.01, np.float32), f"{branch}_ws"),
                  numpy_helper.from_array(np.zeros(width, np.int8), f"{branch}_wz")]
        nodes += [helper.make_node("DequantizeLinear", [f"{branch}_w", f"{branch}_ws", f"{branch}_wz"],
                                   [f"{branch}_wf"], axis=0),
                  helper.make_node("Conv", ["a_dq", f"{branch}_wf"], [branch], kernel_shape=[1, 1], strides=[2, 2])]
    nodes.append(helper.make_node("Add", ["short", "main"], ["output"]))
    graph = helper.make_graph(nodes, "block",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, channels, 28, 28])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, width, 14, 14])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_strided_pointwise_convolutions_with_a_subsampled_input_run_in_int8(tmp_path):
    """edge-export's rewrite of 1×1 stride-2 convolutions (export.qdq_graph) is what lets OpenVINO run them in
    int8; the per-layer profile (benchmarks.profile) names every convolution that did not."""
    import onnx

    from benchmarks.profile import profile_openvino
    from export.qdq_graph import subsample_strided_pointwise_inputs

    original = _strided_pointwise_block(tmp_path / "block.onnx")
    model = onnx.load(str(original))
    assert subsample_strided_pointwise_inputs(model) == 2
    rewritten = tmp_path / "block_subsampled.onnx"
    onnx.save(model, str(rewritten))

    profile = profile_openvino(rewritten, threads=1, runs=2)
    assert profile["not_int8"] == {}
    assert any(kind.startswith("Convolution") and "I8" in kind.upper() for kind in profile["by_op_type"])
    assert abs(sum(v["share"] for v in profile["by_op_type"].values()) - 1) < 1e-6
    x = np.random.default_rng(0).normal(0, 1, (1, 16, 28, 28)).astype(np.float32)
    import openvino as ov

    def run(path: Path) -> np.ndarray:
        return ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})({0: x})[0]

    np.testing.assert_allclose(run(rewritten), run(original), atol=1e-4)
