"""--engine auto: which (engine, model file) pairs compete, how the fastest is found, and the per-machine cache.

Engines here are fakes of known speed registered for a ``.fake`` suffix, so no real model is needed.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pytest

from edge_runtime import backends, shipped
from edge_runtime import engine_candidates as ec
from edge_runtime import engine_select as es
from edge_runtime.backends import Backend
from edge_runtime.classifier import Classifier
from edge_runtime.errors import BackendUnavailableError, ManifestError, ModelLoadError
from edge_runtime.fileio import file_sha256
from edge_runtime.metadata import ModelMetadata, embed_tflite_metadata, metadata_from_labels
from edge_runtime.onnx_metadata import read_metadata_props
from edge_runtime.records import ModelInfo

THREADS = 2
LABELS3 = ["crazing", "inclusion", "patches"]


class FakeBackend(Backend):
    """Sleeps ``delay_ms`` per call; every load is recorded in ``LOADS`` as (engine, file name)."""

    suffixes = (".fake",)
    package = "steel-edge-fake-engine"
    module = "json"  # always importable: the engine counts as installed
    delay_ms = 0.0

    def __init__(self, path: Path, threads: int) -> None:
        backends._import_engine(type(self))
        LOADS.append((self.name, path.name))
        super().__init__(path, threads, (1, 8, 8, 3), np.uint8, [3])

    def _invoke(self, batch: np.ndarray) -> list[np.ndarray]:
        time.sleep(self.delay_ms / 1000)
        return [np.full((len(batch), 3), 1 / 3, np.float32)]


LOADS: list[tuple[str, str]] = []


@pytest.fixture
def engines(monkeypatch, tmp_path):
    """Register fake engines with ``engines(name=delay_ms, ...)``; the real ones are left out of the way."""
    LOADS.clear()
    monkeypatch.setenv(es.CACHE_ENV, str(tmp_path / "cache"))
    for name in list(backends.ENGINES):
        monkeypatch.delitem(backends.ENGINES, name)
    monkeypatch.setitem(backends.SUFFIX_ENGINES, ".fake", "default")

    def register(module: str = "json", **delays: float) -> None:
        for name, delay in delays.items():
            cls = type(f"Fake_{name}", (FakeBackend,), {"name": name, "delay_ms": delay, "module": module})
            monkeypatch.setitem(backends.ENGINES, name, cls)

    return register


def model_file(folder: Path, name: str = "model.fake", content: bytes = b"weights") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(content)
    return path


def write_manifest(folder: Path, artifacts: dict[str, dict[str, str]], default: str | None = None) -> Path:
    """A manifest listing ``{file: {engine: status}}``; the files are created with distinct content."""
    entries = []
    for name, gates in artifacts.items():
        path = model_file(folder, name, name.encode())
        entries.append({"file": name, "format": "fake", "sha256": file_sha256(path), "gates": gates})
    data = {"schema": shipped.MANIFEST_SCHEMA, "default": default or next(iter(artifacts)), "artifacts": entries}
    (folder / shipped.MANIFEST_NAME).write_text(json.dumps(data))
    return folder


def auto(path: Path | None, models: Path | None = None, threads: int = THREADS, budget_s: float = 5.0) -> Backend:
    models = models or Path("/nonexistent/models")
    return es.load_auto(path, threads, models, models / "default.fake", budget_s=budget_s)


# --- choosing ------------------------------------------------------------------------------------------------


def test_auto_picks_the_engine_with_the_lowest_median_and_logs_every_median(engines, tmp_path, caplog):
    engines(default=8, fast=1, medium=4)
    caplog.set_level(logging.INFO, logger="edge_runtime.engine_select")
    backend = auto(model_file(tmp_path))
    assert backend.name == "fast"
    assert sorted(LOADS) == [("default", "model.fake"), ("fast", "model.fake"), ("medium", "model.fake")]
    message = next(r.getMessage() for r in caplog.records if "chose" in r.getMessage())
    assert "chose fast model.fake" in message
    assert all(f"{name} model.fake: " in message for name in ("default", "fast", "medium"))


def test_the_default_engine_is_measured_first_and_wins_a_tie(engines, tmp_path):
    engines(other=0, default=0)
    measurements, _ = es.measure_candidates(ec.file_candidates(model_file(tmp_path)), THREADS)
    assert [m.candidate.engine for m in measurements] == ["default", "other"]
    tie = [es.Measurement(m.candidate, median_ms=1.0, runs=1) for m in measurements]
    assert es.fastest(tie).candidate.engine == "default"


def test_engines_that_are_not_installed_are_skipped_with_the_reason_at_debug_level(engines, tmp_path, caplog):
    engines(default=1)
    engines(module="no_such_engine_package_xyz", missing=0)
    caplog.set_level(logging.DEBUG, logger="edge_runtime.engine_candidates")
    path = model_file(tmp_path)
    assert [c.engine for c in ec.file_candidates(path)] == ["default"]
    assert any("missing is not a candidate" in r.getMessage() and "not installed" in r.getMessage()
               and r.levelno == logging.DEBUG for r in caplog.records)
    assert auto(path).name == "default" and LOADS == [("default", "model.fake")]  # one candidate: no measuring


def test_without_any_installed_engine_the_default_engine_says_what_to_install(engines, tmp_path):
    engines(module="no_such_engine_package_xyz", default=0)
    with pytest.raises(BackendUnavailableError, match="pip install steel-edge-fake-engine"):
        auto(model_file(tmp_path))


def test_a_candidate_that_does_not_load_is_skipped_and_if_none_loads_the_first_error_is_raised(
    engines, tmp_path, monkeypatch
):
    engines(default=1, other=2)

    def broken_init(self, path, threads):
        raise ModelLoadError(path, "corrupt")

    monkeypatch.setattr(backends.ENGINES["default"], "__init__", broken_init)
    assert auto(model_file(tmp_path)).name == "other"
    monkeypatch.setattr(backends.ENGINES["other"], "__init__", broken_init)
    with pytest.raises(ModelLoadError, match="corrupt"):
        auto(model_file(tmp_path, "another.fake"))


def test_the_total_time_budget_is_respected(engines, tmp_path):
    engines(default=40, a=40, b=40, c=40)  # a candidate's least: one warm-up + one timed run = 80 ms
    start = time.perf_counter()
    measurements, backend = es.measure_candidates(ec.file_candidates(model_file(tmp_path)), THREADS, budget_s=0.2)
    elapsed = time.perf_counter() - start
    assert elapsed < 0.2 + 0.08 + 0.07  # over by at most the candidate in progress (+ scheduling slack)
    assert measurements[0].median_ms is not None and backend is not None  # the first always has a figure
    assert any(m.error == es.NOT_MEASURED for m in measurements)
    assert sum(m.runs for m in measurements) < 4 * es.TIMED_RUNS


def test_load_that_fades_during_the_probe_weighs_on_every_candidate_alike(engines, tmp_path, monkeypatch):
    """Another process holds the CPU when the probe starts and lets go gradually (each call 0.6 ms less extra
    than the one before, from 20 ms). Measured one after the other, the default engine would take the worst of
    it and lose to an engine twice as slow; timed in alternating order (A B, B A), it still wins."""
    engines(default=2, other=4)
    calls = [0]

    def invoke(self, batch):
        calls[0] += 1
        time.sleep((self.delay_ms + max(0.0, 20 - 0.6 * calls[0])) / 1000)
        return [np.full((len(batch), 3), 1 / 3, np.float32)]

    for name in ("default", "other"):
        monkeypatch.setattr(backends.ENGINES[name], "_invoke", invoke)
    measurements, backend = es.measure_candidates(ec.file_candidates(model_file(tmp_path)), THREADS, budget_s=5)
    assert backend.name == "default"
    assert [m.runs for m in measurements] == [es.TIMED_RUNS, es.TIMED_RUNS]


def test_with_enough_budget_every_candidate_gets_the_full_number_of_runs(engines, tmp_path):
    engines(default=1, other=1)
    measurements, _ = es.measure_candidates(ec.file_candidates(model_file(tmp_path)), THREADS, budget_s=5)
    assert [m.runs for m in measurements] == [es.TIMED_RUNS, es.TIMED_RUNS]


def test_the_probe_input_is_fixed_and_in_the_dtype_the_model_takes(engines, tmp_path):
    engines(default=0)
    backend = backends.load_backend(model_file(tmp_path), "default", 1)
    first, second = es.probe_input(backend), es.probe_input(backend)
    assert first.dtype == np.uint8 and first.shape == (1, 8, 8, 3) and np.array_equal(first, second)
    backend.input_dtype = np.dtype(np.float32)
    assert es.probe_input(backend).dtype == np.float32


# --- gates embedded in an explicit model file -----------------------------------------------------------------


def gated_meta(engines: dict | None = ..., validation: bool = True) -> ModelMetadata:
    """Metadata as edge-export writes it; ``engines`` ``{engine: passed}`` (``...``: no "engines" key)."""
    meta = metadata_from_labels(LABELS3, [1, 8, 8, 3], "uint8")
    if validation:
        meta.extra["validation"] = {"passed": True, "failures": []}
        if engines is not ...:
            meta.extra["validation"]["engines"] = {
                name: {"passed": passed, "failures": [] if passed else [f"agreement on {name} 0.91 < 0.98"]}
                for name, passed in engines.items()}
    return meta


def gated_file(folder: Path, meta: ModelMetadata, name: str = "model.fake") -> Path:
    """A fake model file with the metadata appended as a .tflite carries it."""
    return model_file(folder, name, embed_tflite_metadata(b"\0\0\0\0TFL3weights", meta))


def test_an_explicit_file_competes_only_on_the_engines_its_gates_passed_on(engines, tmp_path, caplog):
    engines(default=8, fast=1, medium=4, unchecked=0)
    caplog.set_level(logging.INFO, logger="edge_runtime")
    path = gated_file(tmp_path, gated_meta({"default": True, "fast": False, "medium": True}))
    assert [(c.engine, c.gate) for c in ec.file_candidates(path)] == [("default", "pass"), ("medium", "pass")]
    assert LOADS == []  # the metadata is read without loading the model
    assert auto(path).name == "medium"
    assert sorted(LOADS) == [("default", "model.fake"), ("medium", "model.fake")]  # fast would win: never run
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any("fast is not a candidate" in m and "failed its export gates" in m and "agreement on fast" in m
               for m in info)
    assert any("unchecked is not a candidate" in m and "did not run it on unchecked" in m for m in info)


@pytest.mark.parametrize("gates", [{"default": False, "fast": False}, {"fast": False}, {}, {"gone": True}])
def test_when_no_installed_engine_passed_the_file_runs_on_its_default_engine_with_a_warning(
    engines, tmp_path, caplog, gates
):
    engines(default=8, fast=0)
    engines(module="no_such_engine_package_xyz", gone=0)
    path = gated_file(tmp_path, gated_meta(gates))
    expected = "fail" if gates.get("default") is False else "not gated"
    assert [(c.engine, c.gate) for c in ec.file_candidates(path)] == [("default", expected)]
    assert auto(path).name == "default" and LOADS == [("default", "model.fake")]  # one candidate: not measured
    assert any("passed its export gates on no installed engine" in r.getMessage() and "running it on its default "
               "engine default" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert not es.cache_path().exists()


def test_a_gated_file_whose_default_engine_is_not_installed_says_what_to_install(engines, tmp_path):
    engines(fast=0)
    engines(module="no_such_engine_package_xyz", default=0)
    path = gated_file(tmp_path, gated_meta({"default": True, "fast": False}))
    assert ec.file_candidates(path) == []
    with pytest.raises(BackendUnavailableError, match="pip install steel-edge-fake-engine"):
        auto(path)


@pytest.mark.parametrize("meta", ["no metadata", "no validation", "no engines"])
def test_without_per_engine_gates_every_installed_engine_competes_as_before(engines, tmp_path, meta):
    engines(default=8, fast=1)
    if meta == "no metadata":
        path = model_file(tmp_path)
    else:
        path = gated_file(tmp_path, gated_meta(validation=meta == "no engines"))
    assert ec.embedded_engine_gates(path) is None
    assert [(c.engine, c.gate) for c in ec.file_candidates(path)] == [("default", "user file"), ("fast", "user file")]
    assert auto(path).name == "fast"


def test_a_malformed_engine_entry_counts_as_failed(engines, tmp_path):
    engines(default=0, fast=0)
    meta = gated_meta({"default": True})
    meta.extra["validation"]["engines"]["fast"] = {"passed": "yes"}
    path = gated_file(tmp_path, meta)
    assert ec.embedded_engine_gates(path)["fast"] == {"passed": False, "failures": []}
    assert [c.engine for c in ec.file_candidates(path)] == ["default"]


def write_onnx_protobuf(path: Path, props: dict[str, str]) -> Path:
    """A small ONNX model (a sizeable initializer before metadata_props, as exporters write them)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.arange(50_000, dtype=np.float32), "weights")
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.UINT8, [1, 8, 8, 3])],
                              [helper.make_tensor_value_info("output", TensorProto.UINT8, [1, 8, 8, 3])],
                              initializer=[weights])
    model = helper.make_model(graph, producer_name="test", doc_string="é" * 300)
    helper.set_model_props(model, props)
    onnx.save(model, str(path))
    return path


def test_onnx_metadata_is_read_from_the_protobuf_without_onnxruntime(engines, tmp_path, monkeypatch):
    """Gate results of an .onnx file come from its metadata_props; no engine loads it to read them."""
    import onnx

    for name in ("onnxruntime", "openvino"):
        cls = type(f"Fake_{name}", (FakeBackend,), {"name": name, "delay_ms": 0.0, "suffixes": (".onnx",)})
        monkeypatch.setitem(backends.ENGINES, name, cls)
    meta = gated_meta({"onnxruntime": True, "openvino": False})
    props = {"edge_metadata": meta.to_json(), "other": "x" * 200}
    path = write_onnx_protobuf(tmp_path / "model.onnx", props)
    assert read_metadata_props(path) == props == {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert [c.engine for c in ec.file_candidates(path)] == ["onnxruntime"] and LOADS == []
    assert read_metadata_props(write_onnx_protobuf(tmp_path / "bare.onnx", {})) == {}
    assert ec.embedded_engine_gates(tmp_path / "bare.onnx") is None
    truncated = model_file(tmp_path, "truncated.onnx", path.read_bytes()[:-50])
    with pytest.raises(ValueError, match="truncated"):
        read_metadata_props(truncated)
    assert ec.embedded_engine_gates(truncated) is None  # unreadable: as before, every engine competes
    assert ec.embedded_engine_gates(model_file(tmp_path, "junk.onnx", b"\xff" * 20)) is None


def test_the_shipped_files_record_the_gates_the_manifest_lists():
    manifest = shipped.read_manifest(shipped.DEFAULT_MODEL.parent / shipped.MANIFEST_NAME)
    for artifact in manifest.artifacts:
        embedded = ec.embedded_engine_gates(manifest.directory / artifact.file)
        assert embedded is not None, artifact.file
        for engine, status in artifact.gates.items():
            if status == "pass":
                assert embedded[engine]["passed"], f"{artifact.file} on {engine}"


# --- the shipped models ---------------------------------------------------------------------------------------


def test_shipped_candidates_are_only_pairs_gated_pass_or_waived(engines, tmp_path):
    engines(default=5, fast=0)
    models = write_manifest(tmp_path / "models", {
        "a.fake": {"default": "pass", "fast": "fail"},  # fast would win: it must never run this file
        "b.fake": {"default": "waived"},  # fast is not gated on b: no candidate either
        "c.fake": {"default": "fail", "fast": "fail"},
    })
    candidates = ec.shipped_candidates(models, models / "a.fake")
    assert [(c.engine, c.path.name, c.gate) for c in candidates] == [("default", "a.fake", "pass"),
                                                                     ("default", "b.fake", "waived")]
    backend = auto(None, models)
    assert backend.name == "default" and all(engine != "fast" for engine, _ in LOADS)


def test_a_faster_shipped_artifact_is_chosen_over_the_default_file(engines, tmp_path):
    engines(default=6, fast=1)
    models = write_manifest(tmp_path / "models", {"default.fake": {"default": "pass"},
                                                  "other.fake": {"fast": "pass", "default": "pass"}})
    backend = auto(None, models)
    assert (backend.name, backend.path.name) == ("fast", "other.fake")


def test_the_manifest_default_is_measured_first(engines, tmp_path):
    engines(default=0)
    models = write_manifest(tmp_path / "models", {"x.fake": {"default": "pass"}, "y.fake": {"default": "pass"}},
                            default="y.fake")
    assert [c.path.name for c in ec.shipped_candidates(models, models / "y.fake")] == ["y.fake", "x.fake"]


def test_a_shipped_file_that_differs_from_its_manifest_entry_is_left_out(engines, tmp_path, caplog):
    engines(default=4, fast=1)
    models = write_manifest(tmp_path / "models", {"a.fake": {"default": "pass"}, "b.fake": {"fast": "pass"}})
    (models / "b.fake").write_bytes(b"replaced after the gates ran")
    assert auto(None, models).path.name == "a.fake" and ("fast", "b.fake") not in LOADS
    assert any("not the file the manifest lists" in r.getMessage() for r in caplog.records)


def test_without_a_manifest_the_default_file_runs_on_its_default_engine(engines, tmp_path):
    engines(default=3, fast=0)
    default = model_file(tmp_path / "models", "default.fake")
    candidates = ec.shipped_candidates(tmp_path / "models", default)
    assert [(c.engine, c.path) for c in candidates] == [("default", default)]
    with pytest.raises(ModelLoadError, match="no default model ships"):
        ec.shipped_candidates(tmp_path / "empty", tmp_path / "empty" / "default.fake")


def test_an_invalid_manifest_is_refused_with_a_warning_and_the_default_file_is_used(engines, tmp_path, caplog):
    engines(default=0)
    models = write_manifest(tmp_path / "models", {"default.fake": {"default": "maybe"}})
    with pytest.raises(ManifestError, match="'gates' must map engines"):
        shipped.read_manifest(models / shipped.MANIFEST_NAME)
    assert [c.gate for c in ec.shipped_candidates(models, models / "default.fake")] == ["no manifest"]
    assert any("reinstall the package" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_when_no_shipped_pair_may_run_the_error_lists_why(engines, tmp_path):
    engines(default=0)
    models = write_manifest(tmp_path / "models", {"a.fake": {"default": "fail"}})
    with pytest.raises(ModelLoadError, match="default a.fake: gate status fail"):
        ec.shipped_candidates(models, models / "a.fake")


def test_an_explicit_engine_without_a_model_runs_the_shipped_file_gated_for_it(engines, tmp_path):
    engines(default=0, fast=0)
    models = write_manifest(tmp_path / "models", {"a.fake": {"default": "pass", "fast": "fail"},
                                                  "b.fake": {"fast": "waived"}})
    assert shipped.shipped_model_for("fast", models, models / "a.fake").name == "b.fake"
    assert shipped.shipped_model_for("default", models, models / "a.fake").name == "a.fake"
    write_manifest(models, {"a.fake": {"default": "pass", "fast": "fail"}})
    with pytest.raises(ModelLoadError, match="no shipped model passed its accuracy gates on the fast engine"):
        shipped.shipped_model_for("fast", models, models / "a.fake")


def test_the_shipped_manifest_matches_the_shipped_files():
    manifest = shipped.read_manifest(shipped.DEFAULT_MODEL.parent / shipped.MANIFEST_NAME)
    assert manifest.default == shipped.DEFAULT_MODEL.name
    for artifact in manifest.artifacts:
        path = manifest.directory / artifact.file
        assert file_sha256(path) == artifact.sha256, f"{artifact.file} changed: update manifest.json"
        assert set(artifact.gates) <= set(backends.ENGINES)


# --- Classifier.load ------------------------------------------------------------------------------------------


def test_the_python_api_measures_only_when_asked_and_records_name_what_runs(engines, tmp_path):
    engines(default=4, fast=1)
    path = model_file(tmp_path)
    plain = Classifier.load(path, labels=LABELS3)  # engine None: the suffix's default engine, nothing measured
    assert plain.backend.name == "default" and LOADS == [("default", "model.fake")]
    assert not es.cache_path().exists()
    chosen = Classifier.load(path, engine="auto", labels=LABELS3)
    assert chosen.backend.name == "fast" and es.cache_path().exists()
    assert (ModelInfo.of(chosen).engine, ModelInfo.of(chosen).name) == ("fast", "model.fake")


def test_auto_without_a_model_may_load_another_shipped_file_than_the_default(engines, tmp_path, monkeypatch):
    engines(default=4, fast=1)
    models = write_manifest(tmp_path / "models", {"default.fake": {"default": "pass"},
                                                  "model_int8.fake": {"fast": "pass"}})
    monkeypatch.setattr(shipped, "DEFAULT_MODEL", models / "default.fake")
    assert Classifier.load(labels=LABELS3).path.name == "default.fake"
    chosen = Classifier.load(engine="auto", labels=LABELS3)
    assert (chosen.backend.name, chosen.path.name) == ("fast", "model_int8.fake")
    assert Classifier.load(engine="fast", labels=LABELS3).path.name == "model_int8.fake"


# --- the per-machine cache -----------------------------------------------------------------------------------


def test_a_cache_hit_skips_measuring(engines, tmp_path, caplog):
    engines(default=3, fast=1)
    path = model_file(tmp_path)
    assert auto(path).name == "fast" and len(LOADS) == 2
    LOADS.clear()
    caplog.set_level(logging.INFO, logger="edge_runtime.engine_select")
    assert auto(path).name == "fast"
    assert LOADS == [("fast", "model.fake")]  # loaded once, nothing measured
    assert any("cached choice fast model.fake" in r.getMessage() for r in caplog.records)
    entry = next(iter(json.loads(es.cache_path().read_text())["entries"].values()))
    assert entry["choice"] == {"engine": "fast", "file": "model.fake"} and entry["key"]["threads"] == THREADS


@pytest.mark.parametrize("change", ["cpu model", "cpu generation", "isa flags", "threads", "engine version",
                                    "model file"])
def test_the_cache_is_invalidated_when_its_key_changes(engines, tmp_path, monkeypatch, change):
    engines(default=3, fast=1)
    path = model_file(tmp_path)
    auto(path)
    LOADS.clear()
    threads = THREADS
    if change in ("cpu model", "cpu generation", "isa flags"):
        info = dict(es.cpu_info())
        info.update({"cpu model": {"model": "Other CPU"}, "cpu generation": {"generation": "family 99, model 1"},
                     "isa flags": {"isa": ["avx512f"]}}[change])
        monkeypatch.setattr(es, "cpu_info", lambda: info)
    elif change == "threads":
        threads = THREADS + 1
    elif change == "engine version":
        monkeypatch.setattr(es, "engine_versions", lambda: {"default": "2.0", "fast": "1.0"})
    else:
        path.write_bytes(b"retrained weights")
    auto(path, threads=threads)
    assert len(LOADS) == 2, f"a changed {change} must measure again"


def test_a_changed_candidate_set_is_measured_again(engines, tmp_path, monkeypatch):
    engines(default=3, fast=1)
    path = model_file(tmp_path)
    auto(path)
    engines(newer=0)
    LOADS.clear()
    assert auto(path).name == "newer" and len(LOADS) == 3


@pytest.mark.parametrize("content", ["{not json", '{"schema": "something else"}', '{"schema": "%s", "entries": [1]}'
                                     % es.CACHE_SCHEMA, ""])
def test_a_corrupt_cache_file_is_ignored_with_a_warning_and_rewritten(engines, tmp_path, caplog, content):
    engines(default=3, fast=1)
    es.cache_path().parent.mkdir(parents=True)
    es.cache_path().write_text(content)
    path = model_file(tmp_path)
    assert auto(path).name == "fast" and len(LOADS) == 2
    assert any("ignoring the engine-choice cache" in r.getMessage() for r in caplog.records
               if r.levelno == logging.WARNING)
    LOADS.clear()
    assert auto(path).name == "fast" and LOADS == [("fast", "model.fake")]  # rewritten: now a hit


def test_an_unwritable_cache_only_warns(engines, tmp_path, monkeypatch, caplog):
    engines(default=3, fast=1)
    blocker = model_file(tmp_path, "not-a-folder")
    monkeypatch.setenv(es.CACHE_ENV, str(blocker))
    assert auto(model_file(tmp_path)).name == "fast"
    assert any("cannot write the engine-choice cache" in r.getMessage() for r in caplog.records)


def test_the_cache_location_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(es.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert es.cache_path() == tmp_path / "xdg" / "steel-edge-inspect" / "engine-choice.json"
    monkeypatch.setenv(es.CACHE_ENV, str(tmp_path / "override"))
    assert es.cache_path() == tmp_path / "override" / "engine-choice.json"


def test_the_cache_keeps_the_newest_entries_only(engines, tmp_path):
    engines(default=0, fast=0)
    entries = {str(i): {"choice": {"engine": "fast", "file": "x"}, "measured_at": f"2026-01-01T00:00:{i:02d}"}
               for i in range(es.MAX_CACHE_ENTRIES + 5)}
    es.write_cache(es.cache_path(), entries)
    kept = es.read_cache(es.cache_path())
    assert len(kept) == es.MAX_CACHE_ENTRIES and "0" not in kept and str(es.MAX_CACHE_ENTRIES + 4) in kept


# --- edge-bench --select -------------------------------------------------------------------------------------


def test_edge_bench_select_measures_every_pair_and_marks_what_auto_would_choose(engines, tmp_path, capsys):
    from benchmarks.cli import main

    engines(default=4, fast=1)
    models = write_manifest(tmp_path / "export", {"a.fake": {"default": "pass", "fast": "fail"},
                                                  "b.fake": {"default": "fail"}})
    assert main(["--select", str(models), "--threads", "1", "--out", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "select.json").read_text())
    rows = {(r["engine"], r["file"]): r for r in result["rows"]}
    assert set(rows) == {("default", "a.fake"), ("fast", "a.fake"), ("default", "b.fake"), ("fast", "b.fake")}
    assert all(r["median_ms"] > 0 for r in rows.values())  # the failed and ungated pairs are timed too ...
    assert not rows[("fast", "a.fake")]["eligible"] and rows[("fast", "b.fake")]["gate"] == "not gated"
    assert [key for key, r in rows.items() if r["chosen"]] == [("default", "a.fake")]  # ... but never chosen
    assert result["chosen"] == {"engine": "default", "file": "a.fake"} and result["threads"] == 1
    text = capsys.readouterr().out
    assert f"CPU: {es.cpu_info()['model']}" in text and "ISA flags:" in text and text.count("**chosen**") == 1
    assert not es.cache_path().exists()  # the cache is bypassed


def test_edge_bench_select_takes_one_thread_count():
    from benchmarks.cli import main

    with pytest.raises(SystemExit):
        main(["--select", "--threads", "1", "2"])


def test_edge_bench_select_takes_the_gates_per_engine_from_an_export_report(engines, tmp_path):
    from benchmarks.select import export_dir_pairs

    engines(default=0, fast=0)
    export = tmp_path / "export"
    for name in ("a.fake", "b.fake"):
        model_file(export, name)
    rows = [{"format": "a.fake", "file": "a.fake", "engine": "default", "passed": True},
            {"format": "a.fake", "file": "a.fake", "engine": "fast", "passed": False},
            {"format": "b.fake", "file": "b.fake", "engine": "default", "passed": False}]
    (export / "export_report.json").write_text(json.dumps({"artifacts": rows}))
    gates = {(c.engine, c.path.name): (c.gate, reason is None) for c, reason in export_dir_pairs(export)}
    assert gates == {("default", "a.fake"): ("pass", True), ("fast", "a.fake"): ("fail", False),
                     ("default", "b.fake"): ("fail", False), ("fast", "b.fake"): ("not gated", False)}
