"""edge-classify end to end: records, bad inputs, model errors, camera stand-in, signals, resume, no TensorFlow.

The tiny TFLite/ONNX models come from conftest's ``tiny_edge_models`` (exported in the test session), so the
real model is never needed. Subprocess tests run ``python -m edge_runtime.cli`` like the console script.
"""

from __future__ import annotations

import csv
import inspect
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import REPO, synthetic_image
from edge_runtime import classifier as classifier_module
from edge_runtime import shipped
from edge_runtime import sources as sources_module
from edge_runtime.cli import build_parser, main, run
from edge_runtime.metadata import embed_tflite_metadata, strip_tflite_metadata
from edge_runtime.pipeline import StopFlag, run_pipeline
from edge_runtime.records import RECORD_FIELDS, ModelInfo
from edge_runtime.sinks.files import JsonlWriter, read_done_files
from edge_runtime.sources.files import FolderSource
from test_classify_sources import write_video
from test_runtime import tiny_metadata

SUMMARY_KEYS = {"frames", "errors", "dropped", "fps", "latency_p50_ms", "latency_p99_ms", "preprocess_ms_mean",
                "inference_ms_mean"}


@pytest.fixture(autouse=True)
def _info_logs(caplog):
    caplog.set_level(logging.INFO)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def write_images(folder: Path, count: int, prefix: str = "part", suffix: str = ".png") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{prefix}_{i:03d}{suffix}" for i in range(count)]
    for i, path in enumerate(paths):
        cv2.imwrite(str(path), synthetic_image(i % 6, i))
    return paths


def cli_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}


def start_cli(args: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edge_runtime.cli", *map(str, args)], cwd=REPO, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def wait_for_lines(path: Path, count: int, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= count:
            return
        if process.poll() is not None:
            raise AssertionError(f"edge-classify exited early: {process.communicate()}")
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"fewer than {count} records in {path} after {timeout} s: {process.communicate()}")


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM) -> tuple[int, str, str]:
    process.send_signal(sig)
    try:
        out, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return process.returncode, out, err


# --- bad input never stops a run ----------------------------------------------------------------------------

# file name -> what its record must say: None = classified, else a fragment of the error
BAD_INPUTS = {
    "good.jpg": None,
    "gray.png": None,
    "rgba.png": None,
    "deep16.png": None,
    "large.png": None,
    "empty.jpg": "empty (0 bytes)",
    "truncated.jpg": "truncated",
    "text.jpg": "not a decodable image",
    "huge.png": "megapixels",
    "unreadable.png": "Permission denied",
    "dangling.jpg": "No such file",
}


@pytest.fixture
def bad_folder(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "drop"
    folder.mkdir()
    rng = np.random.default_rng(0)
    cv2.imwrite(str(folder / "good.jpg"), synthetic_image(2, 0))
    cv2.imwrite(str(folder / "gray.png"), synthetic_image(3, 0))
    cv2.imwrite(str(folder / "rgba.png"), rng.integers(0, 256, (30, 40, 4), dtype=np.uint8))
    cv2.imwrite(str(folder / "deep16.png"), rng.integers(0, 65536, (30, 40), dtype=np.uint16))
    cv2.imwrite(str(folder / "large.png"), np.full((4000, 6000), 128, np.uint8))  # 24 MP, under the limit
    (folder / "empty.jpg").write_bytes(b"")
    jpeg = (folder / "good.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (folder / "text.jpg").write_text("this is a text file, not an image\n")
    cv2.imwrite(str(folder / "huge.png"), np.zeros((8, 8), np.uint8))
    huge = bytearray((folder / "huge.png").read_bytes())
    huge[16:24] = (40000).to_bytes(4, "big") + (30000).to_bytes(4, "big")  # header claims 1.2 gigapixels
    (folder / "huge.png").write_bytes(bytes(huge))
    cv2.imwrite(str(folder / "unreadable.png"), synthetic_image(1, 1))
    if os.geteuid() != 0:
        (folder / "unreadable.png").chmod(0)
    else:  # root reads anything: make reading this one file fail the way a permission problem does
        real = np.fromfile

        def fromfile(path, *args, **kwargs):
            if str(path).endswith("unreadable.png"):
                raise PermissionError(13, "Permission denied", str(path))
            return real(path, *args, **kwargs)

        monkeypatch.setattr(np, "fromfile", fromfile)
    os.symlink(folder / "no-such-target.jpg", folder / "dangling.jpg")
    return folder


def test_each_bad_input_gets_a_result_or_an_error_record_naming_it(bad_folder, tiny_edge_models, tmp_path):
    out = tmp_path / "out.jsonl"
    assert main(["--folder", str(bad_folder), "--model", str(tiny_edge_models.tflite), "--output", str(out)]) == 0
    records = {Path(r["file"]).name: r for r in read_jsonl(out)}
    assert set(records) == set(BAD_INPUTS)
    for name, problem in BAD_INPUTS.items():
        record = records[name]
        if problem is None:
            assert record["error"] is None and record["label"] in tiny_edge_models.labels, name
        else:
            assert record["label"] is None and problem in record["error"] and name in record["error"], name


def test_a_file_deleted_while_queued_gets_an_error_record(tiny_edge_models, tmp_path):
    paths = write_images(tmp_path / "drop", 3)
    classifier = classifier_module.Classifier.load(tiny_edge_models.onnx)
    model = ModelInfo.of(classifier)

    class DeleteNext:
        def emit(self, result):
            if result.frame.index == 0:
                paths[1].unlink()

    with FolderSource(tmp_path / "drop") as source, JsonlWriter(tmp_path / "out.jsonl") as writer:
        summary = run_pipeline(source, classifier, [writer, DeleteNext()], model)
    records = read_jsonl(tmp_path / "out.jsonl")
    assert [r["error"] is None for r in records] == [True, False, True]
    assert paths[1].name in records[1]["error"] and summary.errors == 1 and summary.frames == 3


def test_records_go_to_stdout_and_logs_with_the_summary_to_stderr(bad_folder, tiny_edge_models):
    process = subprocess.run(
        [sys.executable, "-m", "edge_runtime.cli", "--folder", str(bad_folder), "--model", str(tiny_edge_models.onnx),
         "--threads", "1"],
        cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=60,
    )
    assert process.returncode == 0, process.stderr
    records = [json.loads(line) for line in process.stdout.splitlines()]
    assert len(records) == len(BAD_INPUTS) and all(r["model"] == "tiny.onnx" for r in records)
    assert "summary: end of input" in process.stderr and "latency p50" in process.stderr
    assert f"frames {len(BAD_INPUTS)} " in process.stderr


# --- records: JSONL and CSV -------------------------------------------------------------------------------


def test_jsonl_and_csv_records_parse_and_mark_uncertain_results(tiny_edge_models, tmp_path):
    folder = tmp_path / "parts"
    write_images(folder, 8)
    jsonl, table = tmp_path / "r.jsonl", tmp_path / "r.csv"
    assert main(["--folder", str(folder), "--model", str(tiny_edge_models.tflite), "--output", str(jsonl)]) == 0
    confidences = sorted(r["confidence"] for r in read_jsonl(jsonl))
    threshold = (confidences[3] + confidences[4]) / 2
    for out in (jsonl, table):
        assert main(["--folder", str(folder), "--model", str(tiny_edge_models.tflite), "--output", str(out),
                     "--min-confidence", str(threshold), "--overwrite"]) == 0
    records, rows = read_jsonl(jsonl), read_csv(table)
    assert len(records) == len(rows) == 8 and list(rows[0]) == RECORD_FIELDS == list(records[0])
    sha = ModelInfo.of(classifier_module.Classifier.load(tiny_edge_models.tflite)).sha256
    for record, row in zip(records, rows):
        assert record["file"] == row["file"] and record["label"] == row["label"]
        assert record["uncertain"] == (record["confidence"] < threshold)  # the label is kept either way
        assert row["uncertain"] == str(record["uncertain"]).lower()
        assert [t["label"] for t in record["top3"]] == [t.split(":")[0] for t in row["top3"].split(";")]
        assert len(record["top3"]) == 3 and record["top3"][0]["label"] == record["label"]
        assert record["model_sha256"] == row["model_sha256"] == sha and record["engine"] == "litert"
        assert record["model"] == "tiny.tflite" and record["error"] is None
        for key in ("preprocess_ms", "inference_ms", "latency_ms", "read_ms"):
            assert record[key] >= 0 and float(row[key]) >= 0
        assert record["time"].endswith("+00:00") and record["source"] == f"folder:{folder}"
    assert sum(r["uncertain"] for r in records) == 4


def test_stuck_sensor_pixels_are_corrected_unless_the_camera_does_it_itself(tiny_edge_models, tmp_path,
                                                                           monkeypatch):
    clean = synthetic_image(2, 0)
    stuck = clean.copy()
    rng = np.random.default_rng(0)
    cells = rng.choice(19 * 19, 60, replace=False)  # every other row and column: no two stuck pixels touch
    stuck[2 * (cells // 19) + 1, 2 * (cells % 19) + 1] = rng.choice([0, 255], 60)
    model = classifier_module.Classifier.load(tiny_edge_models.tflite)
    assert model.defect_pixel_threshold == 40
    corrected = np.abs(model.prepare(stuck) - model.prepare(clean)).mean()
    model.defect_pixel_threshold = 0
    assert corrected < 0.2 * np.abs(model.prepare(stuck) - model.prepare(clean)).mean()

    loaded = []
    load = classifier_module.Classifier.load
    monkeypatch.setattr(classifier_module.Classifier, "load",
                        classmethod(lambda cls, *a, **k: loaded.append(load(*a, **k)) or loaded[-1]))
    cv2.imwrite(str(tmp_path / "stuck.png"), stuck)
    assert main([str(tmp_path / "stuck.png"), "--model", str(tiny_edge_models.tflite),
                 "--defect-pixel-threshold", "0", "--output", str(tmp_path / "r.jsonl")]) == 0
    assert loaded[-1].defect_pixel_threshold == 0


def test_the_summary_has_the_numbers_for_comparing_end_to_end_and_inference_time(tiny_edge_models, tmp_path):
    folder = tmp_path / "parts"
    write_images(folder, 4)
    summary_path = tmp_path / "summary.json"
    assert main(["--folder", str(folder), "--model", str(tiny_edge_models.onnx), "--engine", "onnxruntime",
                 "--output", str(tmp_path / "r.csv"), "--summary", str(summary_path)]) == 0
    summary = json.loads(summary_path.read_text())
    assert SUMMARY_KEYS <= set(summary) and summary["frames"] == 4 and summary["errors"] == 0
    assert summary["latency_p99_ms"] >= summary["latency_p50_ms"] > 0 and summary["inference_ms_mean"] > 0
    assert summary["engine"] == "onnxruntime" and summary["stop_reason"] == "end of input"


def test_sort_into_copies_by_label_save_dir_annotates_and_show_without_display_warns_once(
    bad_folder, tiny_edge_models, tmp_path, monkeypatch, caplog
):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    sorted_dir, annotated = bad_folder / "sorted", tmp_path / "annotated"  # inside the input: must be skipped
    assert main(["--folder", str(bad_folder), "--recursive", "--model", str(tiny_edge_models.tflite), "--output",
                 str(tmp_path / "r.jsonl"), "--sort-into", str(sorted_dir), "--save-dir", str(annotated),
                 "--show"]) == 0
    records = read_jsonl(tmp_path / "r.jsonl")
    assert len(records) == len(BAD_INPUTS), "the copies in --sort-into are not classified again"
    for record in records:
        name = Path(record["file"]).name
        folder = sorted_dir / (record["label"] or "_errors")
        if record["error"] is None or name not in ("dangling.jpg", "unreadable.png"):
            assert (folder / name).is_file(), name
    saved = sorted(annotated.glob("*.jpg"))
    assert len(saved) == sum(r["error"] is None for r in records)
    assert cv2.imread(str(saved[0])) is not None
    assert sum("--show: no display" in m for m in caplog.messages) == 1


# --- setup errors: exit 2 before any frame is read ------------------------------------------------------------


@pytest.fixture
def camera_spy(monkeypatch) -> list:
    """Replaces the camera opener; the list records every open attempt."""
    opened: list = []
    monkeypatch.setattr(sources_module, "camera_opener", lambda index, options: lambda: opened.append(index))
    return opened


def model_variant(kind: str, tiny_edge_models, tmp_path: Path) -> Path:
    raw = strip_tflite_metadata(tiny_edge_models.tflite.read_bytes())
    path = tmp_path / f"{kind}.tflite"
    if kind == "missing":
        return path
    if kind == "corrupt":
        path.write_bytes(np.random.default_rng(0).bytes(3000))
    elif kind == "no-metadata":
        path.write_bytes(raw)
    elif kind == "mismatch":
        path.write_bytes(embed_tflite_metadata(raw, tiny_metadata("tflite_fp32", labels=["a", "b", "c", "d"])))
    return path


@pytest.mark.parametrize(
    "kind, message",
    [("missing", "no such file"), ("corrupt", "not a TFLite flatbuffer"), ("no-metadata", "has no edge metadata"),
     ("mismatch", "does not match the model")],
)
def test_a_bad_model_is_a_clear_error_and_exit_2_before_any_frame(kind, message, tiny_edge_models, tmp_path,
                                                                  camera_spy, caplog):
    path = model_variant(kind, tiny_edge_models, tmp_path)
    out = tmp_path / "r.jsonl"
    assert main(["--camera", "0", "--model", str(path), "--output", str(out)]) == 2
    assert any(message in m and path.name in m for m in caplog.messages), caplog.messages
    assert camera_spy == [] and not out.exists()


def test_without_a_shipped_model_the_default_is_a_clear_error(tmp_path, monkeypatch, camera_spy, caplog):
    monkeypatch.setattr(shipped, "DEFAULT_MODEL", tmp_path / "models" / "default.tflite")
    assert main(["--camera", "0"]) == 2
    assert any("no default model ships" in m and "--model" in m for m in caplog.messages)
    assert camera_spy == []


def test_a_camera_that_never_opens_exits_2(tiny_edge_models, tmp_path, caplog):
    out = tmp_path / "r.jsonl"
    assert main(["--camera", "7", "--retries", "1", "--model", str(tiny_edge_models.tflite), "--output",
                 str(out)]) == 2  # a real OpenCV open of a camera that is not there (one 0.5 s back-off)
    assert any("camera:7: could not be opened" in m for m in caplog.messages)
    assert out.read_text() == ""


@pytest.mark.parametrize(
    "args, message",
    [
        (["--watch", "--camera", "0"], "--watch needs --folder"),
        (["a.png", "--camera", "0"], "exactly one source"),
        ([], "exactly one source"),
        (["--sort-into", "s", "--camera", "0"], "--sort-into copies input files"),
        (["a.png", "--output", "r.txt"], "use a .jsonl or .csv"),
    ],
)
def test_inconsistent_arguments_exit_2(args, message, tiny_edge_models, tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    cv2.imwrite("a.png", synthetic_image(0, 0))
    assert main([*args, "--model", str(tiny_edge_models.tflite)]) == 2
    assert any(message in m for m in caplog.messages), caplog.messages


@pytest.mark.parametrize("args", [["--every", "0", "a.png"], ["--min-confidence", "1.5", "a.png"],
                                  ["--folder", "d", "--camera", "0"], ["--threads", "-1", "a.png"],
                                  ["--defect-pixel-threshold", "300", "a.png"]])
def test_invalid_option_values_are_refused_by_the_parser(args, capsys):
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2 and "edge-classify: error" in capsys.readouterr().err


def test_an_output_with_other_columns_or_in_use_is_refused(tiny_edge_models, tmp_path, caplog):
    folder = tmp_path / "parts"
    write_images(folder, 1)
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    assert main(["--folder", str(folder), "--model", str(tiny_edge_models.tflite), "--output", str(other)]) == 2
    assert any("other columns" in m for m in caplog.messages)
    import fcntl

    busy = tmp_path / "busy.jsonl"
    with open(busy, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        assert main(["--folder", str(folder), "--model", str(tiny_edge_models.tflite), "--output", str(busy)]) == 2
    assert any("in use by another process" in m for m in caplog.messages)


def test_help_describes_records_resume_and_exit_codes():
    text = build_parser().format_help()
    for fragment in ("--camera", "--video", "--folder", "--watch", "--min-confidence", "--sort-into", "--max-fps",
                     "model_sha256", "resuming", "exit codes"):
        assert fragment in text


def test_every_option_has_the_default_of_the_run_parameter_it_sets():
    parameters = inspect.signature(run).parameters
    parser = build_parser()
    options = {action.dest: action for action in parser._actions if action.dest not in ("help", "verbose")}
    assert set(options) == set(parameters) - {"stop"}  # every option is a parameter of run and vice versa
    for name, action in options.items():
        assert action.default == parameters[name].default, name
    parsed = vars(parser.parse_args([]))
    assert all(parsed[name] == parameters[name].default for name in options)
    assert parameters["engine"].default == "auto"  # the command line's documented default


# --- cameras and videos ---------------------------------------------------------------------------------


def test_a_video_stands_in_for_the_camera_through_the_whole_cli(tiny_edge_models, tmp_path, monkeypatch):
    video = write_video(tmp_path / "line.avi", 15)
    monkeypatch.setattr(sources_module, "camera_opener",
                        lambda index, options: lambda: cv2.VideoCapture(str(video)))
    out = tmp_path / "r.csv"
    summary = run(camera=0, model=tiny_edge_models.tflite, output=out, frames=6, threads=1)
    rows = read_csv(out)
    assert len(rows) == 6 and {r["source"] for r in rows} == {"camera:0"} and not any(r["error"] for r in rows)
    indices = [int(r["frame"]) for r in rows]
    assert indices == sorted(set(indices)) and all(r["file"] == "" for r in rows)
    assert summary.frames == 6 and summary.stop_reason == "--frames reached" and not summary.failed
    # frames between the ones classified were dropped (the reader may capture more before it is closed)
    assert summary.dropped >= indices[-1] + 1 - 6


def test_a_video_file_with_every_n(tiny_edge_models, tmp_path):
    video = write_video(tmp_path / "clip.avi", 10)
    out = tmp_path / "r.jsonl"
    assert main(["--video", str(video), "--every", "2", "--model", str(tiny_edge_models.onnx), "--output",
                 str(out)]) == 0
    assert [r["frame"] for r in read_jsonl(out)] == [0, 2, 4, 6, 8]


def test_a_stream_lost_for_good_ends_the_run_with_exit_1_and_a_summary(tiny_edge_models, tmp_path, monkeypatch,
                                                                      caplog):
    video = write_video(tmp_path / "line.avi", 3)
    opens = []

    def opener():
        opens.append(1)
        return cv2.VideoCapture(str(video) if len(opens) == 1 else str(tmp_path / "gone.avi"))

    monkeypatch.setattr(sources_module, "camera_opener", lambda index, options: opener)
    out = tmp_path / "r.jsonl"
    assert main(["--camera", "0", "--retries", "1", "--model", str(tiny_edge_models.tflite), "--output",
                 str(out)]) == 1
    assert 1 <= len(read_jsonl(out)) <= 3
    assert any("no frames after 1 reconnect attempts" in m for m in caplog.messages)
    assert any("summary: source failed" in m for m in caplog.messages)


def test_duration_bounds_a_watch(tiny_edge_models, tmp_path):
    (tmp_path / "drop").mkdir()
    started = time.monotonic()
    summary = run(folder=tmp_path / "drop", watch=True, poll=0.05, duration=0.3, model=tiny_edge_models.tflite,
                  output=tmp_path / "r.jsonl")
    assert 0.3 <= time.monotonic() - started < 5 and summary.stop_reason == "--duration reached"


# --- lifecycle: signals, resume --------------------------------------------------------------------------


def test_sigterm_mid_folder_keeps_every_finished_record_and_a_restart_completes_it(tiny_edge_models, tmp_path):
    folder = tmp_path / "batch"
    paths = write_images(folder, 60)
    out = tmp_path / "r.jsonl"
    args = ["--folder", folder, "--model", tiny_edge_models.tflite, "--output", out, "--threads", "1"]
    process = start_cli([*args, "--max-fps", "10"])  # 6 s of work: the signal lands mid-folder
    wait_for_lines(out, 3, process)
    code, stdout, stderr = stop(process)
    assert code == 0, stderr
    assert "summary: signal SIGTERM" in stderr and stdout == ""
    first = read_jsonl(out)  # every line parses: nothing half-written
    assert 3 <= len(first) < 60 and f"frames {len(first)} " in stderr
    process = start_cli(args)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    records = read_jsonl(out)
    files = [r["file"] for r in records]
    assert sorted(files) == sorted(str(p) for p in paths), "every file exactly once"
    assert f"already done {len(first)}" in stderr


def test_sigint_stops_cleanly_too(tiny_edge_models, tmp_path):
    folder = tmp_path / "batch"
    write_images(folder, 60)
    out = tmp_path / "r.csv"
    process = start_cli(["--folder", folder, "--model", tiny_edge_models.onnx, "--output", out, "--max-fps", "10"])
    wait_for_lines(out, 3, process)  # header + 2 records
    code, _, stderr = stop(process, signal.SIGINT)
    assert code == 0 and "summary: signal SIGINT" in stderr
    rows = read_csv(out)
    assert rows and all(len(r["model_sha256"]) == 64 for r in rows)


def test_watch_processes_dropped_files_once_and_resumes_after_a_restart(tiny_edge_models, tmp_path):
    drop, out = tmp_path / "drop", tmp_path / "r.jsonl"
    drop.mkdir()
    args = ["--folder", drop, "--watch", "--poll", "0.05", "--model", tiny_edge_models.tflite, "--output", out]
    write_images(drop, 2, prefix="before")
    process = start_cli(args)
    wait_for_lines(out, 2, process)
    cv2.imwrite(str(tmp_path / "whole.jpg"), synthetic_image(4, 4, size=64))
    data = (tmp_path / "whole.jpg").read_bytes()
    slow = drop / "slow.jpg"
    with open(slow, "wb") as handle:  # a camera writing a file in two parts, 0.4 s apart
        handle.write(data[: len(data) // 2])
        handle.flush()
        time.sleep(0.4)
        handle.write(data[len(data) // 2:])
    wait_for_lines(out, 3, process)
    code, _, stderr = stop(process)
    assert code == 0, stderr
    write_images(drop, 2, prefix="while_stopped")
    process = start_cli(args)
    wait_for_lines(out, 5, process)
    write_images(drop, 1, prefix="after")
    wait_for_lines(out, 6, process)
    code, _, stderr = stop(process)
    assert code == 0, stderr
    records = read_jsonl(out)
    names = [Path(r["file"]).name for r in records]
    assert sorted(names) == sorted(["before_000.png", "before_001.png", "slow.jpg", "while_stopped_000.png",
                                    "while_stopped_001.png", "after_000.png"]), names
    assert all(r["error"] is None for r in records), "the slow file was read only once complete"
    assert "already done 3" in stderr


def test_resume_ignores_a_record_cut_off_by_a_power_loss(tiny_edge_models, tmp_path):
    folder = tmp_path / "batch"
    paths = write_images(folder, 3)
    out = tmp_path / "r.jsonl"
    args = ["--folder", str(folder), "--model", str(tiny_edge_models.tflite), "--output", str(out)]
    assert main(args) == 0
    text = out.read_text()
    out.write_text(text[: len(text) - 40])  # the last record is incomplete
    assert set(read_done_files(out)) == {str(p) for p in paths[:2]}
    assert main(args) == 0
    lines = out.read_text().splitlines()
    valid = []
    for line in lines:
        try:
            valid.append(json.loads(line))
        except ValueError:
            pass
    assert len(lines) == 4 and sorted(r["file"] for r in valid) == sorted(str(p) for p in paths)


# --- the device path stays free of TensorFlow -------------------------------------------------------------


def test_the_cli_path_never_imports_tensorflow(tiny_edge_models, tmp_path):
    folder = tmp_path / "parts"
    write_images(folder, 2)
    video = write_video(tmp_path / "clip.avi", 4)
    out = tmp_path / "r.jsonl"
    code = (
        "import sys\n"
        "from edge_runtime.cli import main\n"
        f"assert main(['--folder', {str(folder)!r}, '--model', {str(tiny_edge_models.tflite)!r}, "
        f"'--output', {str(out)!r}]) == 0\n"
        f"assert main(['--video', {str(video)!r}, '--model', {str(tiny_edge_models.onnx)!r}, "
        f"'--output', {str(out)!r}]) == 0\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'onnx', 'tf2onnx')]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=cli_env(), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert len(read_jsonl(out)) == 6


def test_stop_flag_is_set_by_deadline_and_requests():
    clock = [0.0]
    flag = StopFlag(clock=lambda: clock[0])
    flag.deadline = 1.0
    assert not flag.is_set()
    clock[0] = 1.0
    assert flag() and flag.reason == "--duration reached"
    flag.request("later")
    assert flag.reason == "--duration reached"


def test_polarity_auto_with_a_model_without_the_unknown_score_is_a_clear_error(tiny_edge_models, tmp_path,
                                                                               camera_spy, caplog):
    out = tmp_path / "r.jsonl"
    assert main(["--camera", "0", "--model", str(tiny_edge_models.tflite), "--polarity", "auto",
                 "--output", str(out)]) == 2
    assert any("polarity 'auto' needs a model with the unknown score" in m for m in caplog.messages), caplog.messages
    assert camera_spy == [] and not out.exists()
