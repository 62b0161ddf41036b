"""GenICam cameras through harvesters: pixel formats, features, triggers, the whole pipeline to records.

The camera is the simulated GenTL producer that the ``genicam`` wheel ships (viky.cti: three devices, serials
0, 1, 2, 400x400 RGBa8 or Mono8, AcquisitionFrameRate 1..200 Hz, no trigger). The pixel-format conversion is
tested on small arrays against values worked out by hand; it needs neither harvesters nor a camera.
"""

from __future__ import annotations

import logging
import os
import time

import cv2
import numpy as np
import pytest

from conftest import classify
from edge_runtime.cli import main
from edge_runtime.errors import SourceError
from edge_runtime.sources import open_source
from edge_runtime.sources.base import SourceOptions
from edge_runtime.sources.features import CameraConfig, parse_settings
from edge_runtime.sources.genicam import GENTL_PATH_VARIABLE, find_producers, simulated_producer
from edge_runtime.sources.pixels import PIXEL_FORMATS, pixel_format, to_image


@pytest.fixture(autouse=True)
def _info_logs(caplog):
    caplog.set_level(logging.INFO)


# --- pixel formats --------------------------------------------------------------------------------------------


def test_mono_formats_keep_full_scale_at_8_bits():
    assert to_image(np.array([[0, 7, 255]], np.uint8), "Mono8", 3, 1).tolist() == [[0, 7, 255]]
    # 10 bits: value / 4, rounded half to even: 1023 -> 255.75 -> 255 (saturated), 512 -> 128, 6 -> 2, 1 -> 0
    assert to_image(np.array([1023, 512, 6, 1], "<u2"), "Mono10", 2, 2).tolist() == [[255, 128], [2, 0]]
    assert to_image(np.array([4095, 2048, 24, 7], "<u2"), "Mono12", 4, 1).tolist() == [[255, 128, 2, 0]]
    assert to_image(np.array([65535, 32768, 384, 127], "<u2"), "Mono16", 4, 1).tolist() == [[255, 128, 2, 0]]
    # stray bits above the format's depth saturate instead of wrapping around
    assert to_image(np.array([2047], "<u2"), "Mono10", 1, 1).tolist() == [[255]]


def test_an_8_bit_frame_is_copied_out_of_the_driver_buffer():
    buffer = np.arange(12, dtype=np.uint8)
    image = to_image(buffer, "Mono8", 4, 3)
    buffer[:] = 0  # the driver fills the buffer with the next frame
    assert image.ravel().tolist() == list(range(12)) and image.flags.writeable


def test_a_raw_little_endian_byte_buffer_is_read_as_16_bit_samples_and_row_padding_ignored():
    raw = np.array([4095, 0, 2048, 16], "<u2").tobytes() + b"\x00\x00"  # a trailing pad sample
    assert to_image(raw, "Mono12", 2, 2).tolist() == [[255, 0], [128, 1]]
    as_bytes = np.frombuffer(raw, np.uint8)  # what a driver hands over as a uint8 array
    assert to_image(as_bytes, "Mono12", 2, 2).tolist() == [[255, 0], [128, 1]]
    with pytest.raises(ValueError, match="too short"):
        to_image(raw[:4], "Mono12", 2, 2)


@pytest.mark.parametrize("name, data, expected_bgr", [
    ("RGB8", [10, 20, 30, 40, 50, 60], [[30, 20, 10], [60, 50, 40]]),
    ("BGR8", [10, 20, 30, 40, 50, 60], [[10, 20, 30], [40, 50, 60]]),
    ("RGBa8", [10, 20, 30, 255, 40, 50, 60, 0], [[30, 20, 10], [60, 50, 40]]),
    ("BGRa8", [10, 20, 30, 255, 40, 50, 60, 0], [[10, 20, 30], [40, 50, 60]]),
])
def test_colour_formats_become_bgr_without_alpha(name, data, expected_bgr):
    image = to_image(np.array(data, np.uint8), name, 2, 1)
    assert image.shape == (1, 2, 3) and image.dtype == np.uint8
    assert image[0].tolist() == expected_bgr


def mosaic(pattern: str, red: int, green: int, blue: int, size: int = 8, dtype=np.uint8) -> np.ndarray:
    """A uniformly coloured scene as the sensor sees it through the Bayer filter ``pattern`` (top-left 2x2)."""
    value = {"R": red, "G": green, "B": blue}
    cells = [[pattern[0], pattern[1]], [pattern[2], pattern[3]]]
    image = np.zeros((size, size), dtype)
    for dy in range(2):
        for dx in range(2):
            image[dy::2, dx::2] = value[cells[dy][dx]]
    return image


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("pattern", ["RG", "GB", "GR", "BG"])
def test_bayer_patterns_are_demosaiced_with_the_genicam_naming(pattern, bits):
    cell = {"RG": "RGGB", "GB": "GBRG", "GR": "GRBG", "BG": "BGGR"}[pattern]
    red, green, blue = 200, 100, 50
    scale = 1 if bits == 8 else 256  # 16 bits: the same colour in the high byte
    raw = mosaic(cell, red * scale, green * scale, blue * scale, dtype=np.uint8 if bits == 8 else np.uint16)
    image = to_image(raw, f"Bayer{pattern}{bits}", 8, 8)
    assert image.shape == (8, 8, 3)
    inner = image[2:6, 2:6].reshape(-1, 3)  # away from the borders, bilinear demosaicing is exact on a flat scene
    assert (inner == [blue, green, red]).all(), f"Bayer{pattern}{bits}: {inner[:2].tolist()}"


def test_formats_are_found_by_name_or_pfnc_code_and_packed_ones_are_refused_naming_the_others():
    assert pixel_format("mono8") is PIXEL_FORMATS["Mono8"]
    assert pixel_format(0x01080009).name == "BayerRG8"
    assert pixel_format(0x02200016).name == "RGBa8"
    with pytest.raises(SourceError, match=r"'Mono12p' is not converted.*Mono8, Mono10, Mono12.*PixelFormat=Mono8"):
        pixel_format("Mono12p")
    with pytest.raises(SourceError, match="0x010C0047"):
        pixel_format(0x010C0047)


def test_set_options_are_parsed_into_feature_value_pairs():
    assert parse_settings(["ExposureTime=5000", " Gain = 2.5 ", "DeviceUserID=a=b"]) == (
        ("ExposureTime", "5000"), ("Gain", "2.5"), ("DeviceUserID", "a=b"))
    for bad in ("ExposureTime", "=5", "Gain="):
        with pytest.raises(ValueError, match="FEATURE=VALUE"):
            parse_settings([bad])
    with pytest.raises(ValueError, match="hardware trigger"):
        CameraConfig(trigger="hardware", fps=10)


# --- the simulated GenTL producer -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def viky() -> str:
    pytest.importorskip("harvesters.core", reason="harvesters is not installed (pip install '.[genicam]')")
    producer = simulated_producer()
    if producer is None:
        pytest.skip("the genicam package has no simulated producer (viky.cti) on this platform")
    return producer


def test_frames_from_the_simulated_producer_reach_records_with_the_camera_and_its_settings(viky, tiny_edge_models,
                                                                                           tmp_path, caplog):
    code, records, summary = classify(
        ["--genicam", viky, "--device", "1", "--set", "PixelFormat=Mono8", "--set", "AcquisitionFrameRate=40",
         "--duration", "2"], tiny_edge_models.tflite, tmp_path)
    assert code == 0
    assert len(records) >= 3
    assert all(r["error"] is None and r["label"] in tiny_edge_models.labels for r in records)
    assert [r["frame"] for r in records] == sorted(r["frame"] for r in records)
    source = records[0]["source"]
    assert source.startswith("genicam:VikyTL_DEV_green") and "PixelFormat=Mono8" in source
    assert "AcquisitionFrameRate=40" in source and "trigger free" in source
    camera = summary["camera"]
    assert camera["features"]["PixelFormat"] == "Mono8" and camera["features"]["AcquisitionFrameRate"] == 40.0
    assert camera["requested"] == {"PixelFormat": "Mono8", "AcquisitionFrameRate": "40"}
    assert camera["configured_fps"] == 40.0 and camera["delivered_fps"] > 0
    assert camera["delivered_vs_configured"] == pytest.approx(camera["delivered_fps"] / 40.0, abs=1e-3)
    assert summary["frames"] == len(records) and summary["stop_reason"] == "--duration reached"
    log = caplog.text
    assert "read back Mono8" in log and "frame rate: configured 40 fps, camera delivered" in log


def test_the_producer_comes_from_genicam_gentl64_path_and_a_device_by_id_in_colour(viky, tiny_edge_models,
                                                                                     tmp_path, monkeypatch):
    monkeypatch.setenv(GENTL_PATH_VARIABLE, os.pathsep.join([str(tmp_path / "nothing-here"), os.path.dirname(viky)]))
    assert find_producers(None) == [viky]
    code, records, summary = classify(["--genicam", "--device", "VikyTL_DEV_blue", "--fps", "50", "--frames", "3",
                                       "--engine", "onnxruntime"], tiny_edge_models.onnx, tmp_path)
    assert code == 0 and len(records) == 3
    assert records[0]["source"].startswith("genicam:VikyTL_DEV_blue")
    assert summary["camera"]["features"]["PixelFormat"] == "RGBa8"  # the camera's default, converted to BGR
    assert summary["camera"]["features"]["AcquisitionFrameRate"] == 50.0


def test_the_newest_frame_is_kept_and_overwritten_ones_are_counted_as_dropped(viky):
    config = CameraConfig(device="0", settings=(("AcquisitionFrameRate", "100"), ("PixelFormat", "Mono8")))
    taken = []
    with open_source(viky, SourceOptions(), "genicam", camera=config) as source:
        for frame in source:
            taken.append(frame)
            assert frame.image.shape == (400, 400) and frame.image.dtype == np.uint8
            if len(taken) == 4:
                break
            time.sleep(0.2)  # a slow consumer: the camera delivers about 20 frames meanwhile
    assert source.stats.dropped > 0
    assert source.stats.captured > len(taken)
    assert all(b.index - a.index > 1 for a, b in zip(taken, taken[1:]))  # stale frames were skipped


def test_a_wait_for_a_frame_is_one_blocking_wait_in_the_producer_not_a_polling_loop(viky):
    config = CameraConfig(device="2", settings=(("AcquisitionFrameRate", "5"),))
    with open_source(viky, SourceOptions(), "genicam", camera=config) as source:
        frames = iter(source)
        next(frames), next(frames)
        acquirer = source._capture_now.device._acquirer
        # 5 fps: a frame is waited for up to 5 frame periods (1 s) in one call into the producer, where
        # harvesters' default is a new call every millisecond
        assert acquirer.timeout_period_on_update_event_data_call == 1000


@pytest.mark.parametrize("args, message", [
    (["--set", "ExposureTime=800"], r"no feature 'ExposureTime'; writable features: .*AcquisitionFrameRate.*Width"),
    (["--set", "AcquisitionFrameRate=500"], r"AcquisitionFrameRate=500 is out of range; the camera takes 1 to 200"),
    (["--set", "Width=99"], r"Width=99 is out of range; the camera takes 100 to 800"),
    (["--set", "PixelFormat=Mono12"], r"PixelFormat has no entry 'Mono12'; it takes: RGBa8, Mono8"),
    (["--set", "PayloadSize=5"], r"PayloadSize cannot be written"),
    (["--trigger", "hardware"], r"no TriggerMode feature, so no hardware trigger; use --trigger free"),
    (["--device", "7", "--retries", "0"],
     r"could not be opened \(1 attempts\): genicam:viky.cti: no device '7'; available: 0: VikyTL_DEV_red "
     r"\(serial 0, .*\); 1: VikyTL_DEV_green.*2: VikyTL_DEV_blue"),
])
def test_a_setup_mistake_is_one_line_naming_what_is_available_and_exit_2_before_any_frame(
        viky, args, message, tiny_edge_models, tmp_path, caplog):
    code, records, summary = classify(["--genicam", viky, *args], tiny_edge_models.tflite, tmp_path)
    assert code == 2
    assert records == [] and summary is None
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0]
    assert __import__("re").search(message, errors[0]), errors[0]


def test_no_producer_is_a_one_line_error_naming_where_it_looked_and_the_simulator(tiny_edge_models, tmp_path,
                                                                                  monkeypatch, caplog):
    monkeypatch.delenv(GENTL_PATH_VARIABLE, raising=False)
    code, records, _ = classify(["--genicam"], tiny_edge_models.tflite, tmp_path)
    assert code == 2 and records == []
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and f"({GENTL_PATH_VARIABLE} is unset)" in errors[0]
    if simulated_producer():
        assert "viky.cti" in errors[0]
    monkeypatch.setenv(GENTL_PATH_VARIABLE, str(tmp_path))
    with pytest.raises(SourceError, match=f"none in {GENTL_PATH_VARIABLE}"):
        find_producers(None)
    with pytest.raises(SourceError, match="does not exist"):
        find_producers(tmp_path / "vendor.cti")


def test_camera_options_need_a_genicam_camera(tiny_edge_models, tmp_path, caplog):
    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "a.png"), np.zeros((8, 8), np.uint8))
    assert main(["--folder", str(frames), "--set", "Gain=2", "--model", str(tiny_edge_models.tflite)]) == 2
    assert "--device, --set and --trigger apply to --genicam and --gige" in caplog.text
    assert main(["--gige", "127.0.0.1", "--device", "1", "--model", str(tiny_edge_models.tflite)]) == 2
    assert "--device applies to --genicam" in caplog.text


def test_a_file_that_is_no_producer_is_a_one_line_error(viky, tiny_edge_models, tmp_path, caplog):
    bogus = tmp_path / "vendor.cti"
    bogus.write_bytes(b"not a shared library")
    code, records, _ = classify(["--genicam", bogus], tiny_edge_models.tflite, tmp_path)
    assert code == 2 and records == []
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and f"'{bogus}' is not a loadable GenTL producer" in errors[0]
