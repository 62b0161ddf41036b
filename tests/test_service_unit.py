"""The systemd service: deploy/edge-classify.service passes `systemd-analyze verify`, and edge-classify speaks
the notify protocol (READY=1, WATCHDOG=1 only while results flow, STOPPING=1) over $NOTIFY_SOCKET."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

from conftest import REPO, synthetic_image
from edge_runtime.sdnotify import Notifier, watchdog_interval_s
from test_sinks_mqtt import cli_env, count_lines, start_cli, wait_until

UNIT = REPO / "deploy" / "edge-classify.service"
ENV_EXAMPLE = REPO / "deploy" / "edge-classify.env"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def unit_settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_the_unit_restarts_the_service_and_watches_it():
    s = unit_settings(UNIT.read_text())
    assert s["Type"] == ["notify"] and s["Restart"] == ["always"] and s["StartLimitIntervalSec"] == ["0"]
    assert int(s["WatchdogSec"][0]) > 0 and s["NotifyAccess"] == ["main"]
    assert s["User"] == ["edge-classify"] and s["User"][0] != "root"
    assert s["ExecStart"][0].split()[0].endswith("/edge-classify") and "$EDGE_CLASSIFY_ARGS" in s["ExecStart"][0]
    assert s["EnvironmentFile"] == ["/etc/edge-classify/edge-classify.env"]
    # the example options parse with edge-classify's own parser
    from edge_runtime.cli import build_parser

    env = unit_settings(ENV_EXAMPLE.read_text())
    args = build_parser().parse_args(env["EDGE_CLASSIFY_ARGS"][0].split())
    assert args.camera == 0 and args.mqtt.startswith("mqtt://") and args.serve.startswith("127.0.0.1:")


def test_systemd_analyze_verifies_the_unit(tmp_path):
    if SYSTEMD_ANALYZE is None:
        pytest.skip("systemd-analyze is not installed (Debian package 'systemd') and could not be installed")
    # the unit as shipped, with its program path pointing at this environment's edge-classify (verify checks
    # that the program exists) and the options file made optional (verify reads it)
    program = Path(sys.executable).with_name("edge-classify")
    if not program.exists():
        pytest.skip(f"edge-classify is not installed next to {sys.executable} (pip install -e .)")
    text = UNIT.read_text().replace("/opt/steel-edge-inspect/venv/bin/edge-classify", str(program))
    text = text.replace("EnvironmentFile=/etc", "EnvironmentFile=-/etc")
    unit = tmp_path / "edge-classify.service"
    unit.write_text(text)
    done = subprocess.run([SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    complaints = [line for line in (done.stdout + done.stderr).splitlines() if "edge-classify.service" in line]
    assert done.returncode == 0 and not complaints, done.stdout + done.stderr
    # the check is real: a unit with a wrong value is reported
    broken = tmp_path / "broken.service"
    broken.write_text(text.replace("Type=notify", "Type=notfy"))
    done = subprocess.run([SYSTEMD_ANALYZE, "verify", str(broken)], capture_output=True, text=True, timeout=60)
    assert "notfy" in done.stdout + done.stderr


class NotifySocket:
    """What systemd listens on: a Unix datagram socket; ``messages()`` collects what has arrived."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.received: list[tuple[float, str]] = []

    def messages(self) -> list[str]:
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                break
            self.received.append((time.monotonic(), data.decode()))
        return [m for _, m in self.received]

    def lines(self) -> list[str]:
        return [line for message in self.messages() for line in message.split("\n")]

    def close(self) -> None:
        self.sock.close()


def test_the_notifier_speaks_to_abstract_and_path_sockets(tmp_path):
    listener = NotifySocket(tmp_path / "notify")
    assert Notifier(listener.path).send("READY=1", "STATUS=ok")
    assert listener.messages() == ["READY=1\nSTATUS=ok"]
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    abstract.bind(f"\0edge-classify-test-{os.getpid()}")
    abstract.settimeout(5)
    assert Notifier(f"@edge-classify-test-{os.getpid()}").send("WATCHDOG=1")
    assert abstract.recv(100) == b"WATCHDOG=1"
    abstract.close()
    assert not Notifier("").enabled and not Notifier("").send("READY=1")  # not under systemd: nothing happens
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None  # another process's


def test_watchdog_pings_come_only_while_results_flow(tiny_edge_models, tmp_path):
    folder, out = tmp_path / "drop", tmp_path / "out.jsonl"
    folder.mkdir()
    listener = NotifySocket(tmp_path / "notify")
    env = cli_env(NOTIFY_SOCKET=listener.path, WATCHDOG_USEC="1000000")  # systemd's WatchdogSec=1
    process = start_cli(["--folder", folder, "--watch", "--poll", 0.1, "--model", tiny_edge_models.tflite,
                         "--output", out], env=env)
    try:
        wait_until(lambda: any(line == "READY=1" for line in listener.lines()), 90, "READY=1", process)
        # a source that delivers nothing (a hung camera, here an empty folder): no ping, systemd would restart it
        time.sleep(2.5)
        assert "WATCHDOG=1" not in listener.lines()
        for i in range(40):
            cv2.imwrite(str(folder / f"part_{i:02d}.png"), synthetic_image(i % 3, i))
            time.sleep(0.05)
        wait_until(lambda: count_lines(out) >= 40, 60, "40 records", process)
        wait_until(lambda: "WATCHDOG=1" in listener.lines(), 10, "a watchdog ping")
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
        lines = listener.lines()
    finally:
        if process.poll() is None:
            process.kill()
        listener.close()
    assert process.returncode == 0, stderr
    assert lines[0] == "READY=1" and lines[1].startswith("STATUS=classifying ") and str(folder) in lines[1], lines[:3]
    assert any(line.startswith("STATUS=") and "frames" in line for line in lines)
    assert lines.index("STOPPING=1") > max(i for i, line in enumerate(lines) if line == "WATCHDOG=1")
    assert "told systemd: ready" in stderr
