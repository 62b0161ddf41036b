"""Throughput mode (edge_runtime.throughput): several inference requests on an ordered input, records in order.

The tiny TFLite/ONNX models come from conftest's ``tiny_edge_models``. Nothing here is timed: the tests check
that throughput mode gives the same records, in the same order, as latency mode, that bad files and stops behave
as they do there, and that live sources never take this path.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import classify, synthetic_image
from edge_runtime.classifier import Classifier
from edge_runtime.pipeline import StopFlag, classify_frames, run_pipeline
from edge_runtime.records import ModelInfo
from edge_runtime.sources.base import Frame, SourceOptions
from edge_runtime.sources.files import FolderSource, WatchedFolderSource
from edge_runtime.sources.live import LiveSource
from edge_runtime.sources.video import VideoFileSource
from edge_runtime.throughput import (
    LATENCY,
    THROUGHPUT,
    choose_mode,
    default_requests,
    ordered_parallel,
    threads_per_request,
)

COMPARED = ("file", "frame", "label", "predicted", "unknown", "error", "uncertain")


def write_folder(folder: Path, count: int, bad: dict[int, bytes] | None = None) -> list[Path]:
    """``count`` images named in order; ``bad`` puts raw bytes (an unreadable file) at the given positions."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"img_{i:03d}.jpg"
        if bad and i in bad:
            path.write_bytes(bad[i])
        else:
            cv2.imwrite(str(path), synthetic_image(i % 6, i))
        paths.append(path)
    return paths


def assert_same_records(latency: list[dict], throughput: list[dict]) -> None:
    assert [r["file"] for r in throughput] == [r["file"] for r in latency]
    for a, b in zip(latency, throughput):
        assert {k: b[k] for k in COMPARED} == {k: a[k] for k in COMPARED}, a["file"]
        if a["error"] is None:
            assert [t["label"] for t in b["top3"]] == [t["label"] for t in a["top3"]]
            np.testing.assert_allclose([t["confidence"] for t in b["top3"]], [t["confidence"] for t in a["top3"]],
                                       rtol=1e-5, atol=1e-6)


@pytest.fixture
def replica_calls(monkeypatch) -> list[int]:
    """Records the thread count of every Classifier.replica call (one per extra inference request)."""
    calls: list[int] = []
    real = Classifier.replica

    def replica(self, threads, max_batch=1):
        calls.append(threads)
        return real(self, threads, max_batch)

    monkeypatch.setattr(Classifier, "replica", replica)
    return calls


@pytest.mark.parametrize("engine", ["litert", "onnxruntime"])
def test_throughput_mode_gives_the_records_of_latency_mode_in_the_same_order(engine, tiny_edge_models, tmp_path,
                                                                              replica_calls):
    folder = tmp_path / "images"
    write_folder(folder, 37)  # not a multiple of the chunk size
    model = tiny_edge_models.tflite if engine == "litert" else tiny_edge_models.onnx
    common = ["--folder", folder, "--engine", engine, "--threads", "2"]
    code, latency, summary_l = classify([*common, "--mode", "latency"], model, tmp_path / "latency")
    assert code == 0 and replica_calls == []
    code, throughput, summary_t = classify([*common, "--mode", "throughput", "--requests", "2"], model,
                                           tmp_path / "throughput")
    assert code == 0 and replica_calls == [1, 1]  # two requests of one thread each
    assert len(latency) == 37 and all(r["error"] is None for r in latency)
    assert_same_records(latency, throughput)
    assert summary_t["frames"] == summary_t["classified"] == 37 and summary_t["fps"] > 0


def test_auto_takes_throughput_for_folders_files_and_videos_and_latency_for_live_sources(tmp_path):
    write_folder(tmp_path / "f", 2)
    assert choose_mode("auto", FolderSource(tmp_path / "f")) == THROUGHPUT
    assert choose_mode("auto", VideoFileSource(tmp_path / "clip.avi")) == THROUGHPUT
    assert choose_mode("auto", WatchedFolderSource(tmp_path / "f", SourceOptions(watch=True))) == LATENCY
    # a video or folder paced with --max-fps stands in for a line: one frame at a time, as a camera would be
    assert choose_mode("auto", VideoFileSource(tmp_path / "clip.avi", SourceOptions(max_fps=60))) == LATENCY
    assert choose_mode("throughput", VideoFileSource(tmp_path / "clip.avi", SourceOptions(max_fps=60))) == THROUGHPUT
    camera = LiveSource("camera:0", lambda: None)
    assert choose_mode("auto", camera) == LATENCY
    assert choose_mode("latency", FolderSource(tmp_path / "f")) == LATENCY
    with pytest.raises(ValueError, match="newest frame"):
        choose_mode("throughput", camera)
    assert default_requests(2) == 2 and default_requests(1) == 1 and default_requests(64) == 8
    assert threads_per_request(2, 2) == 1 and threads_per_request(8, 3) == 2 and threads_per_request(1, 4) == 1


def test_a_bad_file_in_the_middle_gets_its_error_record_and_its_neighbours_their_labels(tiny_edge_models, tmp_path):
    folder = tmp_path / "images"
    bad = {5: b"", 6: b"this is a text file, not an image\n", 13: b"\xff\xd8\xff\xe0 cut short"}
    write_folder(folder, 20, bad)
    common = ["--folder", folder, "--engine", "onnxruntime", "--threads", "2"]
    _, latency, _ = classify([*common, "--mode", "latency"], tiny_edge_models.onnx, tmp_path / "latency")
    code, throughput, summary = classify([*common, "--mode", "throughput", "--requests", "2"], tiny_edge_models.onnx,
                                         tmp_path / "throughput")
    assert code == 0 and len(throughput) == 20
    for i, record in enumerate(throughput):
        if i in bad:
            assert record["label"] is None and f"img_{i:03d}.jpg" in record["error"], i
        else:
            assert record["error"] is None and record["label"] in tiny_edge_models.labels, i
    assert_same_records(latency, throughput)
    assert summary["errors"] == 3 and summary["classified"] == 17


def test_a_frame_that_fails_the_batch_is_found_and_the_others_are_classified(tiny_edge_models):
    classifier = Classifier.load(tiny_edge_models.onnx, threads=1)
    images = [synthetic_image(i % 6, i)[..., None].repeat(3, axis=2) for i in range(4)]
    images[2] = np.zeros((5, 5, 7), np.uint8)  # seven channels: preprocessing refuses it
    frames = [Frame(image, i, 0.0, "test") for i, image in enumerate(images)]
    results = classify_frames(frames, classifier)
    assert [r.error is None for r in results] == [True, True, False, True]
    assert "frame 2" in results[2].error
    alone = [classifier.predict(images[i]) for i in (0, 1, 3)]
    assert [results[i].prediction.label for i in (0, 1, 3)] == [p.label for p in alone]


def test_frames_stops_a_throughput_run_after_n_records_in_input_order(tiny_edge_models, tmp_path):
    folder = tmp_path / "images"
    paths = write_folder(folder, 30)
    code, records, summary = classify(["--folder", folder, "--mode", "throughput", "--requests", "2", "--frames", "7",
                                       "--engine", "litert"], tiny_edge_models.tflite, tmp_path)
    assert code == 0 and [r["file"] for r in records] == [str(p) for p in paths[:7]]
    assert summary["frames"] == 7 and summary["stop_reason"] == "--frames reached"


def test_a_stop_request_ends_a_throughput_run_after_the_current_record(tiny_edge_models, tmp_path):
    write_folder(tmp_path / "images", 40)
    classifier = Classifier.load(tiny_edge_models.tflite, threads=2)
    stop = StopFlag()
    seen: list[str] = []

    class StopAtThree:
        def emit(self, result) -> None:
            seen.append(result.frame.path)
            if len(seen) == 3:
                stop.request("signal SIGINT")

    with FolderSource(tmp_path / "images") as source:
        summary = run_pipeline(source, classifier, [StopAtThree()], ModelInfo.of(classifier), stop=stop,
                               mode="throughput", requests=2)
    assert len(seen) == 3 and summary.frames == 3 and summary.stop_reason == "signal SIGINT"
    assert seen == sorted(seen)
    assert not [t for t in threading.enumerate() if t.name.startswith(("throughput-reader", "inference"))]


def _video(path: Path, frames: int) -> Path:
    """An MJPG clip of ``frames`` synthetic 40x40 defect images."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (40, 40))
    for i in range(frames):
        writer.write(cv2.cvtColor(synthetic_image(i % 6, i), cv2.COLOR_GRAY2BGR))
    writer.release()
    return path


def test_a_video_file_gives_the_same_records_in_both_modes(tiny_edge_models, tmp_path):
    video = _video(tmp_path / "clip.avi", 23)
    common = ["--video", video, "--engine", "onnxruntime", "--threads", "2"]
    _, latency, _ = classify([*common, "--mode", "latency"], tiny_edge_models.onnx, tmp_path / "l")
    _, throughput, _ = classify([*common, "--requests", "2"], tiny_edge_models.onnx, tmp_path / "t")  # auto
    assert [r["frame"] for r in throughput] == list(range(23))
    assert_same_records(latency, throughput)


class SpyClassifier:
    """Wraps a Classifier and records the batch size of every call (a live source must only ever send one)."""

    def __init__(self, classifier: Classifier) -> None:
        self._classifier = classifier
        self.batches: list[int] = []
        self.replicas = 0

    def __getattr__(self, name):
        return getattr(self._classifier, name)

    def predict(self, image):
        self.batches.append(1)
        return self._classifier.predict(image)

    def predict_batch(self, images):
        self.batches.append(len(images))
        return self._classifier.predict_batch(images)

    def replica(self, threads, max_batch=1):
        self.replicas += 1
        return self._classifier.replica(threads, max_batch)


def test_a_live_source_keeps_the_newest_frame_path_with_batch_1(tiny_edge_models, tmp_path):
    video = _video(tmp_path / "line.avi", 10)
    spy = SpyClassifier(Classifier.load(tiny_edge_models.tflite, threads=2))
    reopen = LiveSource("camera:video", lambda: cv2.VideoCapture(str(video)), SourceOptions(retries=100),
                        sleep=lambda _seconds: None)  # the end of the file is a lost camera, reopened at once
    with reopen as source:
        summary = run_pipeline(source, spy, [], ModelInfo.of(spy._classifier), mode="auto", requests=2,
                               max_frames=5)
    assert summary.frames == 5 and spy.batches == [1] * 5 and spy.replicas == 0


def test_throughput_is_refused_for_a_camera_before_anything_opens(tiny_edge_models, tmp_path, caplog):
    code, records, summary = classify(["--camera", "0", "--mode", "throughput"], tiny_edge_models.tflite, tmp_path)
    assert code == 2 and records == [] and summary is None
    assert any("--mode throughput applies to" in m for m in caplog.messages)


def test_ordered_parallel_keeps_the_order_of_uneven_workers_and_raises_source_errors_in_place():
    rng = random.Random(0)

    def work(chunk, worker):
        time.sleep(rng.random() * 0.003)
        return [(worker, item * 10) for item in chunk]

    out = list(ordered_parallel(iter(range(103)), ["a", "b", "c"], work, batch=4))
    assert [value for _, value in out] == [i * 10 for i in range(103)]
    assert {worker for worker, _ in out} <= {"a", "b", "c"}

    def failing():
        yield from range(9)
        raise RuntimeError("stream lost")

    got = []
    with pytest.raises(RuntimeError, match="stream lost"):
        for _, value in ordered_parallel(failing(), ["a", "b"], work, batch=2):
            got.append(value)
    assert got == [i * 10 for i in range(9)]
    assert list(ordered_parallel(iter(range(50)), ["a"], work, batch=3, limit=6)) == [("a", i * 10) for i in range(6)]
    assert not [t for t in threading.enumerate() if t.name.startswith(("throughput-reader", "inference"))]
