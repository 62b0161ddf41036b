"""GigE Vision through Aravis, against Aravis' camera simulator on loopback (real GVCP/GVSP packets).

``arv-fake-gv-camera-0.8 -i 127.0.0.1`` (Debian: aravis-tools) is started by the ``fake_camera`` fixture and
stopped by its PID; the cameras are opened by IP address, so nothing but loopback traffic is sent (no discovery
broadcast). The tests skip, naming the reason, only where the simulator or the Python bindings (Debian:
gir1.2-aravis-0.8, python3-gi) cannot be had; .ci/run installs them.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, classify, read_jsonl
from edge_runtime.errors import SourceError
from edge_runtime.sources.pixels import PIXEL_FORMATS

SIMULATOR = "arv-fake-gv-camera-0.8"
ADDRESS = "127.0.0.1"
SERIAL = "GV-TEST-01"
GVCP_PORT = 3956


@pytest.fixture(autouse=True)
def _info_logs(caplog):
    caplog.set_level(logging.INFO)


@pytest.fixture(scope="module")
def aravis():
    from edge_runtime.sources.gige import load_aravis

    try:
        return load_aravis()
    except SourceError as exc:
        pytest.skip(f"Aravis' Python bindings are not available: {exc}")


def gvcp_port_bound(address: str = ADDRESS, port: int = GVCP_PORT) -> bool:
    """Whether a UDP socket is bound to address:port (read from /proc/net/udp, without sending anything)."""
    wanted = f"{_hex_address(address)}:{port:04X}"
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(line.split()[1].upper() == wanted for line in lines)


def _hex_address(address: str) -> str:
    return "".join(f"{int(part):02X}" for part in reversed(address.split(".")))


class FakeCamera:
    """Aravis' GigE Vision camera simulator on loopback, started and stopped (by PID) by the tests."""

    def __init__(self, executable: str, log: Path) -> None:
        self.executable = executable
        self.log = log  # the simulator's messages (a file: a pipe nobody reads could fill and stall it)
        self.process: subprocess.Popen | None = None

    def start(self, *options: str) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen([self.executable, "-i", ADDRESS, "-s", SERIAL, *options], stdout=log,
                                            stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{SIMULATOR} exited: {self.log.read_text(errors='replace')[-2000:]}")
            if gvcp_port_bound():
                return
            time.sleep(0.05)
        raise RuntimeError(f"{SIMULATOR} did not bind {ADDRESS}:{GVCP_PORT} within 10 s")

    def kill(self) -> None:
        """Gone at once, like a camera losing power."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture
def fake_camera(aravis, tmp_path):
    executable = shutil.which(SIMULATOR)
    if executable is None:
        pytest.skip(f"{SIMULATOR} is not installed (Debian package aravis-tools)")
    if gvcp_port_bound():
        pytest.skip(f"another program already serves GigE Vision control on {ADDRESS}:{GVCP_PORT}")
    camera = FakeCamera(executable, tmp_path / "fake-camera.log")
    camera.start()
    try:
        yield camera
    finally:
        camera.kill()


def test_the_pfnc_codes_agree_with_aravis(aravis):
    Aravis, _ = aravis
    names = {"Mono8": "MONO_8", "Mono10": "MONO_10", "Mono12": "MONO_12", "Mono16": "MONO_16",
             "RGB8": "RGB_8_PACKED", "BGR8": "BGR_8_PACKED", "RGBa8": "RGBA_8_PACKED", "BGRa8": "BGRA_8_PACKED"}
    for fmt in PIXEL_FORMATS.values():
        if fmt.name.startswith("Bayer"):
            aravis_name = f"BAYER_{fmt.name[5:7]}_{fmt.name[7:]}"
        else:
            aravis_name = names[fmt.name]
        assert getattr(Aravis, f"PIXEL_FORMAT_{aravis_name}") == fmt.code, fmt.name


@pytest.mark.parametrize("pixel_format", ["Mono8", "BayerRG8", "RGB8", "Mono16"])
def test_frames_from_the_fake_camera_reach_records_with_the_features_read_back(
        fake_camera, pixel_format, tiny_edge_models, tmp_path, caplog):
    code, records, summary = classify(
        ["--gige", ADDRESS, "--set", f"PixelFormat={pixel_format}", "--set", "ExposureTimeAbs=2500",
         "--set", "GainRaw=3", "--frames", "4"], tiny_edge_models.tflite, tmp_path)
    assert code == 0 and len(records) == 4
    assert all(r["error"] is None and r["label"] in tiny_edge_models.labels for r in records)
    source = records[0]["source"]
    assert source == (f"gige:{ADDRESS} (Aravis Fake {SERIAL}; trigger free, PixelFormat={pixel_format}, "
                      "ExposureTimeAbs=2500, GainRaw=3)")
    camera = summary["camera"]
    assert camera["features"]["ExposureTimeAbs"] == 2500.0 and camera["features"]["GainRaw"] == 3
    assert camera["features"]["PixelFormat"] == pixel_format and camera["serial"] == SERIAL
    assert f"PixelFormat={pixel_format} (read back {pixel_format})" in caplog.text


def test_frames_cut_short_by_lost_packets_are_left_out_and_counted(fake_camera, tiny_edge_models, tmp_path):
    fake_camera.kill()
    fake_camera.start("--gvsp-lost-ratio", "2")  # 2 packets in 1000 lost: about a third of the 512x512 frames
    code, records, summary = classify(["--gige", ADDRESS, "--duration", "3"], tiny_edge_models.tflite, tmp_path)
    assert code == 0 and records and all(r["error"] is None for r in records)
    camera = summary["camera"]
    assert camera["frames_incomplete"] > 0 and camera["frames_missed"] > 0
    assert summary["reconnects"] == 0


def test_line_scan_sized_frames_are_classified_by_windows(fake_camera, tiny_edge_models, tmp_path, caplog):
    code, records, summary = classify(["--gige", ADDRESS, "--width", "2048", "--height", "1000", "--tiles", "auto",
                                       "--frames", "2"], tiny_edge_models.tflite, tmp_path)
    assert code == 0 and len(records) == 2 and all(r["error"] is None for r in records)
    assert summary["camera"]["features"]["Width"] == 2048 and summary["camera"]["features"]["Height"] == 1000
    assert "Width=2048, Height=1000" in records[0]["source"]


def test_the_source_converts_the_wire_format_once(fake_camera):
    from edge_runtime.sources import open_source
    from edge_runtime.sources.base import SourceOptions
    from edge_runtime.sources.features import CameraConfig

    for pixel_format, shape in (("BayerGB8", (64, 96, 3)), ("Mono16", (64, 96))):
        config = CameraConfig(settings=(("PixelFormat", pixel_format),), width=96, height=64)
        with open_source(ADDRESS, SourceOptions(), "gige", camera=config) as source:
            frame = next(iter(source))
        assert frame.image.shape == shape and frame.image.dtype == np.uint8
        assert frame.image.max() > frame.image.min()  # the simulator's test pattern, not a blank buffer


def test_the_summary_compares_the_delivered_frame_rate_with_the_configured_one(fake_camera, tiny_edge_models,
                                                                                tmp_path, caplog):
    code, records, summary = classify(["--gige", ADDRESS, "--fps", "10", "--duration", "2"],
                                      tiny_edge_models.tflite, tmp_path)
    assert code == 0 and records
    camera = summary["camera"]
    assert camera["features"]["AcquisitionFrameRate"] == 10.0 and camera["configured_fps"] == 10.0
    assert camera["delivered_fps"] > 0
    assert camera["delivered_vs_configured"] == pytest.approx(camera["delivered_fps"] / 10.0, abs=1e-3)
    assert camera["classified_fps"] == summary["fps"]
    assert re.search(r"frame rate: configured 10 fps, camera delivered \d+\.\d\d fps \(\d+ %\), classified",
                     caplog.text)


def test_a_software_trigger_takes_one_frame_per_trigger(fake_camera, tiny_edge_models, tmp_path):
    code, records, summary = classify(["--gige", ADDRESS, "--trigger", "software", "--fps", "5", "--duration", "2"],
                                      tiny_edge_models.tflite, tmp_path)
    assert code == 0 and records
    camera = summary["camera"]
    assert camera["features"]["TriggerMode"] == "On" and camera["features"]["TriggerSource"] == "Software"
    assert camera["configured_fps"] == 5.0
    # 5 triggers a second for about 2 s: never the camera's free-running 25 fps
    assert summary["dropped"] + summary["frames"] <= 5 * 2 + 2


def test_a_hardware_trigger_waits_for_the_line_without_polling_and_stops_cleanly(fake_camera, tiny_edge_models,
                                                                                  tmp_path):
    code, records, summary = classify(["--gige", ADDRESS, "--trigger", "hardware", "--duration", "3"],
                                      tiny_edge_models.tflite, tmp_path)
    assert code == 0 and records == []  # nothing pulses the simulator's Line0
    camera = summary["camera"]
    assert camera["features"]["TriggerMode"] == "On" and camera["features"]["TriggerSource"] == "Line0"
    assert summary["stop_reason"] == "--duration reached" and summary["reconnects"] == 0
    # one blocking wait of 1 s at a time (then the camera is asked whether it is still there): a handful in 3 s
    assert 1 <= camera["trigger_waits"] <= 3 / 1.0 + 2


def test_the_camera_killed_mid_run_and_started_again_is_reconnected_and_records_continue(
        fake_camera, tiny_edge_models, tmp_path):
    out, summary_path = tmp_path / "records.jsonl", tmp_path / "summary.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "edge_runtime.cli", "--gige", ADDRESS, "--duration", "20", "--retries", "8",
         "--model", str(tiny_edge_models.tflite), "--output", str(out), "--summary", str(summary_path)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        before = wait_for_records(out, 5, process, timeout=40)
        fake_camera.kill()
        time.sleep(2.0)
        fake_camera.start()
        wait_for_records(out, before + 10, process, timeout=30)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err[-3000:]
    summary = json.loads(summary_path.read_text())
    assert summary["reconnects"] >= 1 and summary["stop_reason"] == "--duration reached" and not summary["failed"]
    assert "reconnecting in" in err
    records = read_jsonl(out)
    assert len(records) >= before + 10 and all(r["error"] is None for r in records)
    frames = [r["frame"] for r in records]
    assert frames == sorted(frames) and len(set(frames)) == len(frames)  # numbering goes on across the gap


def test_a_camera_that_stays_away_ends_the_run_with_exit_1_and_the_summary(fake_camera, tiny_edge_models,
                                                                           tmp_path):
    out, summary_path = tmp_path / "records.jsonl", tmp_path / "summary.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "edge_runtime.cli", "--gige", ADDRESS, "--duration", "60", "--retries", "1",
         "--model", str(tiny_edge_models.tflite), "--output", str(out), "--summary", str(summary_path)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        before = wait_for_records(out, 3, process, timeout=40)
        fake_camera.kill()
        _, err = process.communicate(timeout=50)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 1, err[-3000:]
    summary = json.loads(summary_path.read_text())
    assert summary["failed"] and "no frames after 1 reconnect attempts" in summary["stop_reason"]
    assert summary["frames"] >= before and summary["camera"]["serial"] == SERIAL
    assert "(FAILED)" in err


def wait_for_records(path: Path, count: int, process: subprocess.Popen, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = len(path.read_text().splitlines()) if path.exists() else 0
        if lines >= count:
            return lines
        if process.poll() is not None:
            raise AssertionError(f"edge-classify exited early: {process.communicate()}")
        time.sleep(0.1)
    raise AssertionError(f"fewer than {count} records in {path} after {timeout} s")


@pytest.mark.parametrize("args, message", [
    (["--set", "Gain=2"], r"no feature 'Gain' \(did you mean GainRaw.*\); writable features: .*ExposureTimeAbs.*"
                          r"GainRaw.*PixelFormat"),
    (["--set", "ExposureTimeAbs=1"], r"ExposureTimeAbs=1 is out of range; the camera takes 10 to 1e\+07"),
    (["--set", "GainRaw=11"], r"GainRaw=11 is out of range; the camera takes 0 to 10"),
    (["--set", "PixelFormat=Mono12"], r"PixelFormat has no entry 'Mono12'; it takes: .*Mono8.*Mono16"),
    (["--set", "GainRaw=two"], r"GainRaw takes a number, got 'two'"),
    (["--set", "TriggerSoftware=1"], r"TriggerSoftware is a command, not a setting"),
])
def test_a_setup_mistake_is_one_line_naming_what_is_available_and_exit_2_before_any_frame(
        fake_camera, args, message, tiny_edge_models, tmp_path, caplog):
    code, records, summary = classify(["--gige", ADDRESS, *args], tiny_edge_models.tflite, tmp_path)
    assert code == 2 and records == [] and summary is None
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0]
    assert re.search(message, errors[0]), errors[0]


def test_an_address_where_no_camera_answers_is_exit_2_after_the_retries(aravis, tiny_edge_models, tmp_path, caplog):
    code, records, _ = classify(["--gige", "127.0.0.2", "--retries", "0"], tiny_edge_models.tflite, tmp_path)
    assert code == 2 and records == []
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert ("gige:127.0.0.2: could not be opened (1 attempts): no GigE Vision camera answers at 127.0.0.2"
            in errors[0])


def test_the_bindings_come_from_this_environment_or_from_debians_python3_gi(aravis):
    import gi

    from edge_runtime.sources.gige import SYSTEM_SITE

    assert Path(gi.__file__).is_relative_to(sys.prefix) or gi.__file__.startswith(SYSTEM_SITE + "/gi/")
    Aravis, _ = aravis
    assert Aravis._version == "0.8"


def test_without_the_bindings_gige_is_one_line_naming_the_debian_packages(tiny_edge_models, tmp_path):
    script = ("import sys, edge_runtime.sources.gige as gige\n"
              "gige.SYSTEM_SITE = sys.argv[1]\n"
              "from edge_runtime.cli import main\n"
              "raise SystemExit(main(['--gige', '127.0.0.1', '--model', sys.argv[2], '--output', sys.argv[3]]))\n")
    probe = subprocess.run([sys.executable, "-c", "import gi"], capture_output=True)
    if probe.returncode == 0:
        pytest.skip("this environment has PyGObject of its own; the Debian fallback is not used")
    out = tmp_path / "records.jsonl"
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "no-dist-packages"),
                             str(tiny_edge_models.tflite), str(out)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1
    assert "apt-get install gir1.2-aravis-0.8 python3-gi" in errors[0]
    assert not out.exists() or out.read_text() == ""
