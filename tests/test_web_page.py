"""--serve: the operator page in headless Chromium, /status.json, /metrics (parsed by prometheus_client),
/healthz and the MJPEG stream, while edge-classify runs in a subprocess."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from html import unescape

import cv2
import numpy as np
import pytest

from conftest import synthetic_image
from edge_runtime.cli import main
from edge_runtime.sinks.web import parse_serve
from test_sinks_mqtt import count_lines, free_port, line_video, read_jsonl, start_cli, wait_until

CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(name)), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium (Debian package 'chromium', "
                                    "listed in .ci/apt-packages.txt) and it could not be installed")


def chromium(url: str, *args: str, timeout: float = 90) -> str:
    """Headless Chromium on ``url``, given 3 s of page time (the page's script and the MJPEG stream run)."""
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
               "--disable-extensions", "--window-size=1280,800", "--virtual-time-budget=3000", *args, url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def get(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers.get("Content-Type", "")


def first_mjpeg_frame(url: str) -> np.ndarray:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("multipart/x-mixed-replace")
        data = b""
        while b"\xff\xd9" not in data[data.find(b"\xff\xd8"):] or b"\xff\xd8" not in data:
            chunk = response.read1(65536)
            assert chunk, "the stream ended before a whole frame"
            data += chunk
            assert len(data) < 10_000_000
    start = data.find(b"\xff\xd8")
    jpeg = data[start:data.find(b"\xff\xd9", start) + 2]
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def test_the_serve_option_is_checked():
    assert parse_serve("8080") == ("127.0.0.1", 8080)  # this machine only, unless a host is given
    assert parse_serve("0.0.0.0:9000") == ("0.0.0.0", 9000)
    assert parse_serve("[::1]:9000") == ("::1", 9000)
    for bad in ("http://x:80", "80000", "host:", ":80x"):
        with pytest.raises(ValueError, match="--serve"):
            parse_serve(bad)


@needs_chromium
def test_the_page_in_chromium_shows_what_the_process_is_doing(tiny_edge_models, tmp_path):
    """A screenshot and the page's DOM (after its script ran) while a 300-frame video is classified."""
    video = line_video(tmp_path / "line.avi")
    out, port = tmp_path / "out.jsonl", free_port()
    process = start_cli(["--video", video, "--model", tiny_edge_models.tflite, "--output", out, "--max-fps", 20,
                         "--serve", port, "--alarm", "label:patches:600"])
    shot = tmp_path / "page.png"
    try:
        wait_until(lambda: count_lines(out) >= 50, 60, "50 records", process)
        chromium(f"http://127.0.0.1:{port}/", f"--screenshot={shot}")
        dom = unescape(chromium(f"http://127.0.0.1:{port}/", "--dump-dom"))
        during = count_lines(out)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert 50 <= during < 300  # both taken while the video was being classified
    # the screenshot: the enlarged, annotated frame in its panel, text in the counts panel
    page = cv2.imread(str(shot))
    assert page.shape == (800, 1280, 3)
    frame = page[100:560, 40:740]
    assert frame.mean() > 40 and frame.std() > 10, (frame.mean(), frame.std())
    green = (frame[..., 1] > 150) & (frame[..., 0] < 100) & (frame[..., 2] < 100)
    assert green.sum() > 50  # the label drawn on the frame
    assert page[60:340, 780:1260].std() > 10
    # the DOM: its numbers are those of the first N records the process wrote
    records = read_jsonl(out)
    shown = int(re.search(r'id="frames">(\d+)<', dom)[1])
    assert 50 <= shown <= during
    for label in ["crazing", "inclusion", "patches", "unknown"]:
        count = sum(r["label"] == label for r in records[:shown])
        assert re.search(rf'<tr data-label="{label}"><td>{label}</td><td class="n">{count}</td>', dom), label
    latest = int(re.search(r'id="latest_frame">(\d+)<', dom)[1])
    assert latest == shown - 1 and re.search(rf'id="latest">{records[latest]["label"]}<', dom)
    assert 'id="model">tiny.tflite<' in dom and f'id="engine">{records[0]["engine"]}<' in dom
    assert re.search(rf'id="source">[^<]*{re.escape(str(video))}<', dom)
    assert "label:patches:600: active" in dom and 'class="badge bad">ALARM<' in dom
    assert 'id="errors">0<' in dom
    print(f"screenshot: {shot}")


def test_status_metrics_health_and_stream_match_the_records(tiny_edge_models, tmp_path):
    folder, out, port = tmp_path / "drop", tmp_path / "out.jsonl", free_port()
    folder.mkdir()
    for i in range(12):
        cv2.imwrite(str(folder / f"part_{i:02d}.png"), synthetic_image(i % 3, i))
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    process = start_cli(["--folder", folder, "--watch", "--poll", 0.1, "--settle", 0.2,
                         "--model", tiny_edge_models.onnx, "--output", out, "--serve", f"127.0.0.1:{port}",
                         "--alarm", "label:patches:600"])
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: count_lines(out) >= 13, 90, "13 records", process)
        records = read_jsonl(out)
        status = json.loads(get(f"{base}/status.json")[1])
        code, metrics_text, content_type = get(f"{base}/metrics")
        health = get(f"{base}/healthz")
        frame = first_mjpeg_frame(f"{base}/stream.mjpg")
        single = get(f"{base}/frame.jpg")
        page = get(f"{base}/")
        missing = get(f"{base}/nothing-here")
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    labels = ["crazing", "inclusion", "patches", "unknown"]
    expected = {label: sum(r["label"] == label for r in records) for label in labels}
    assert sum(r["error"] is not None for r in records) == 1 and sum(expected.values()) == 12
    assert status["frames"] == 13 and status["errors"] == 1
    assert {label: status["counts"][label] for label in labels} == expected
    assert status["latest"] == records[-1] and status["alarms_active"] == ["label:patches:600"]
    assert status["model"] == "tiny.onnx" and status["engine"] == records[0]["engine"]
    # Prometheus text format, parsed by prometheus_client's own parser
    from prometheus_client.parser import text_string_to_metric_families

    assert code == 200 and content_type.startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(metrics_text.decode())}
    value = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert value[("edge_classify_frames_total", ())] == 13
    assert value[("edge_classify_errors_total", ())] == 1
    for label, count in expected.items():
        assert value[("edge_classify_results_total", (("label", label),))] == count
    assert families["edge_classify_latency_seconds"].type == "histogram"
    assert value[("edge_classify_latency_seconds_count", ())] == 13
    assert value[("edge_classify_latency_seconds_bucket", (("le", "+Inf"),))] == 13
    assert value[("edge_classify_alarm_active", (("rule", "label:patches:600"),))] == 1
    assert "edge_classify_source_reconnects" in families and "edge_classify_up" in families
    # health, the MJPEG stream (the newest frame that has an image), the single frame, the page, a 404
    assert health[0] == 200 and json.loads(health[1])["healthy"] is True
    assert frame.shape[1] >= 640 and frame.std() > 5
    assert single[0] == 200 and single[2] == "image/jpeg"
    assert page[0] == 200 and b"<title>edge-classify</title>" in page[1]
    assert missing[0] == 404


def test_a_port_in_use_is_a_one_line_error_and_exit_2(tiny_edge_models, tmp_path, caplog):
    video = line_video(tmp_path / "line.avi", frames=5)
    out = tmp_path / "out.jsonl"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["--video", str(video), "--model", str(tiny_edge_models.tflite), "--output", str(out),
                     "--serve", str(port)]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR" and r.name == "edge-classify"]
    assert len(errors) == 1 and f"--serve 127.0.0.1:{port}: cannot listen" in errors[0], errors
    assert count_lines(out) == 0
