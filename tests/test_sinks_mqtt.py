"""--mqtt against a real Mosquitto broker on loopback, started (and stopped by PID) by these tests.

The line's subscriber holds a persistent session (clean start off, QoS 1) on a broker with persistence, so it
gets what was published while it was away. Shared helpers (free ports, the broker, the 300-frame video, the
CLI in a subprocess) are imported by the OPC UA, page and service tests too.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import pytest

from conftest import REPO, synthetic_image
from edge_runtime.alarms import AlarmRule, Alarms
from edge_runtime.cli import main
from edge_runtime.sinks.mqtt import MqttTarget

MOSQUITTO = shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto",) if os.path.exists(p)), None)
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")
needs_mosquitto = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed (Debian package "
                                     "'mosquitto', listed in .ci/apt-packages.txt) and could not be installed")
PREFIX = "line3/cam1"
FRAMES = 300


# --- helpers shared with the other line tests ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def line_video(path: Path, frames: int = FRAMES, size: tuple[int, int] = (64, 48)) -> Path:
    """A small MJPG video whose frames look like the tiny model's classes (a different texture each)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, size)
    assert writer.isOpened()
    for i in range(frames):
        gray = cv2.resize(synthetic_image(i % 3, i), size, interpolation=cv2.INTER_LINEAR)
        writer.write(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
    writer.release()
    return path


def cli_env(**extra: str) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3", **extra}


def start_cli(args: list, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edge_runtime.cli", *map(str, args)], cwd=REPO,
                            env=kwargs.pop("env", cli_env()), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kwargs)


def count_lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def wait_until(condition, timeout: float, what: str, process: subprocess.Popen | None = None,
               interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if process is not None and process.poll() is not None:
            raise AssertionError(f"edge-classify exited early while waiting for {what}: {process.communicate()}")
        time.sleep(interval)
    if process is not None and process.poll() is None:
        process.kill()
        raise AssertionError(f"timed out waiting for {what}: {process.communicate()}")
    raise AssertionError(f"timed out waiting for {what}")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Broker:
    """Mosquitto on 127.0.0.1:port with persistence (and optionally a password file), started/stopped by PID."""

    def __init__(self, folder: Path, port: int, users: dict[str, str] | None = None) -> None:
        self.folder, self.port = folder, port
        folder.mkdir(parents=True, exist_ok=True)
        lines = [f"listener {port} 127.0.0.1", "persistence true", f"persistence_location {folder}/",
                 f"log_dest file {folder}/mosquitto.log", "max_queued_messages 100000", f"user {getpass.getuser()}"]
        if users:
            if MOSQUITTO_PASSWD is None:
                pytest.skip("mosquitto_passwd is not installed (Debian package 'mosquitto')")
            passwords = folder / "passwords"
            for n, (user, password) in enumerate(users.items()):
                subprocess.run([MOSQUITTO_PASSWD, *(["-c"] if n == 0 else []), "-b", str(passwords), user, password],
                               check=True, capture_output=True, timeout=10)
            lines += ["allow_anonymous false", f"password_file {passwords}"]
        else:
            lines.append("allow_anonymous true")
        self.config = folder / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen | None = None

    def start(self) -> Broker:
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
        wait_until(lambda: port_open(self.port) or self.process.poll() is not None, 10, "mosquitto to listen")
        if self.process.poll() is not None:
            raise AssertionError(f"mosquitto did not start: {self.process.stderr.read().decode()}")
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop by PID (SIGTERM: as a service restart does; the broker saves its sessions first)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None


@pytest.fixture
def broker(tmp_path):
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (Debian package 'mosquitto') and could not be installed")
    brokers: list[Broker] = []

    def make(users: dict[str, str] | None = None, start: bool = True) -> Broker:
        b = Broker(tmp_path / f"broker{len(brokers)}", free_port(), users)
        brokers.append(b)
        return b.start() if start else b

    yield make
    for b in brokers:
        b.stop()


class Subscriber:
    """The line's side: a persistent MQTT v5 session (clean start off, QoS 1) on PREFIX/#, reconnecting."""

    def __init__(self, port: int, prefix: str = PREFIX, client_id: str = "line-scada",
                 auth: tuple[str, str] | None = None) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if auth:
            self.client.username_pw_set(*auth)
        self.client.reconnect_delay_set(0.2, 1.0)
        self.client.on_connect = lambda c, u, f, rc, p: (c.subscribe(f"{prefix}/#", qos=1)
                                                         if not rc.is_failure else None)
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.on_message = self._on_message
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", port, 5, clean_start=False, properties=properties)
        self.client.loop_start()
        assert self.subscribed.wait(10), "the subscriber could not subscribe"

    def _on_message(self, client, userdata, message) -> None:
        with self.lock:
            self.messages.append((message.topic, message.payload, bool(message.retain)))

    def on(self, topic: str) -> list[dict]:
        with self.lock:
            return [json.loads(p) for t, p, _ in self.messages if t == f"{PREFIX}/{topic}"]

    def results(self) -> list[dict]:
        return self.on("result")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def check_all_results_in_order(results: list[dict], records: list[dict], frames: int = FRAMES) -> int:
    """Every frame once at least, first copies in frame order, duplicates identical to the original; returns
    the number of duplicates."""
    first: dict[int, dict] = {}
    order: list[int] = []
    duplicates = 0
    for record in results:
        frame = record["frame"]
        if frame in first:
            assert record == first[frame], f"frame {frame} came twice with different content"
            duplicates += 1
        else:
            first[frame] = record
            order.append(frame)
    assert order == list(range(frames)), "results missing or out of order"
    assert [first[r["frame"]] for r in records] == records  # the same records as --output
    return duplicates


# --- URL, alarm rules -----------------------------------------------------------------------------------


def test_the_mqtt_url_names_broker_credentials_and_prefix(monkeypatch):
    t = MqttTarget.parse("mqtt://line:s%40cret@10.0.0.7:1884/plant/line3/")
    assert (t.host, t.port, t.prefix, t.username, t.password, t.tls) == ("10.0.0.7", 1884, "plant/line3", "line",
                                                                         "s@cret", False)
    assert MqttTarget.parse("mqtts://broker/l3").port == 8883 and MqttTarget.parse("mqtts://broker/l3").tls
    monkeypatch.setenv("EDGE_MQTT_PASSWORD", "from-env")
    assert MqttTarget.parse("mqtt://line@broker/l3").password == "from-env"
    for bad, message in (("http://broker/x", "mqtt://"), ("mqtt://broker", "no topic prefix"),
                         ("mqtt://broker/a/#", "may not hold"), ("mqtt://broker:99999/x", "bad port")):
        with pytest.raises(ValueError, match=message):
            MqttTarget.parse(bad)
    with pytest.raises(ValueError) as error:
        MqttTarget.parse("ftp://user:topsecret@broker/x")
    assert "topsecret" not in str(error.value)  # a password never reaches a log line


def test_alarm_rules_parse_and_fire_once_per_change(tiny_edge_models):
    from types import SimpleNamespace

    with pytest.raises(ValueError, match="no label 'dent'"):
        AlarmRule.parse("label:dent", ["crazing"])
    for bad in ("unknown:120/10", "unknown:20", "camera-lost:soon", "colour:red"):
        with pytest.raises(ValueError, match="--alarm"):
            AlarmRule.parse(bad)
    events: list[dict] = []
    alarms = Alarms(["unknown:50/4", "label:crazing:0.3"], ["crazing", "inclusion"])
    alarms.listen(events.append)

    def result(label: str, index: int, unknown: bool = False):
        prediction = SimpleNamespace(label=label, unknown=unknown, confidence=0.9)
        return SimpleNamespace(prediction=prediction, frame=SimpleNamespace(index=index))

    with alarms:
        for i, (label, unknown) in enumerate([("inclusion", False)] * 2 + [("unknown", True)] * 3
                                             + [("inclusion", False)] * 4):
            alarms.emit(result(label, i, unknown))
        alarms.emit(result("crazing", 9))
        alarms.emit(result("crazing", 10))
        wait_until(lambda: len(events) == 4, 5, "the label alarm to clear")
    assert [(e["rule"], e["state"], e["frame"]) for e in events] == [
        ("unknown:50/4", "active", 4), ("unknown:50/4", "cleared", 6), ("label:crazing:0.3", "active", 9),
        ("label:crazing:0.3", "cleared", 10)]
    assert events[0]["value"] == 75.0


# --- the broker -----------------------------------------------------------------------------------------


@needs_mosquitto
def test_all_300_results_arrive_in_order_across_a_broker_restart(broker, tiny_edge_models, tmp_path):
    b = broker()
    subscriber = Subscriber(b.port)
    video = line_video(tmp_path / "line.avi")
    out, summary = tmp_path / "out.jsonl", tmp_path / "summary.json"
    process = start_cli(["--video", video, "--model", tiny_edge_models.tflite, "--output", out, "--summary", summary,
                         "--mqtt", f"mqtt://127.0.0.1:{b.port}/{PREFIX}", "--max-fps", 60,
                         "--alarm", "label:patches"])
    try:
        wait_until(lambda: count_lines(out) >= 80, 60, "80 records", process)
        b.stop()  # the broker goes away in the middle of the run ...
        at_stop = count_lines(out)
        wait_until(lambda: count_lines(out) >= at_stop + 40, 30, "40 more records while the broker is down", process)
        b.start()  # ... and comes back
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    records = read_jsonl(out)
    assert len(records) == FRAMES
    wait_until(lambda: len({r["frame"] for r in subscriber.results()}) >= FRAMES, 30, "all results at the subscriber")
    subscriber.close()
    duplicates = check_all_results_in_order(subscriber.results(), records)
    counts = json.loads(summary.read_text())["outputs"]["mqtt"]
    assert counts["published"] >= FRAMES and counts["dropped"] == 0 and counts["unsent"] == 0, counts
    assert counts["queued"] >= 40 and counts["reconnects"] >= 1, counts  # results waited for the broker
    assert "connection lost" in stderr and "mqtt: published" in stderr
    alarms = subscriber.on("alarm")
    assert alarms and alarms[0]["rule"] == "label:patches" and alarms[0]["state"] == "active"
    assert records[alarms[0]["frame"]]["label"] == "patches"
    status = subscriber.on("status")
    assert status[-1]["state"] == "offline" and status[-1]["frames"] == FRAMES
    assert any(s["state"] == "online" and s["model"] == "tiny.tflite" for s in status)
    print(f"broker restart: {counts}, {duplicates} duplicate(s)")


@needs_mosquitto
def test_a_broker_down_at_start_gets_every_result_once_it_is_up(broker, tiny_edge_models, tmp_path):
    b = broker()
    Subscriber(b.port).close()  # the line's subscriber has a persistent session on the broker ...
    b.stop()  # ... which is down when edge-classify starts
    video = line_video(tmp_path / "line.avi")
    out, summary = tmp_path / "out.jsonl", tmp_path / "summary.json"
    process = start_cli(["--video", video, "--model", tiny_edge_models.onnx, "--output", out, "--summary", summary,
                         "--mqtt", f"mqtt://127.0.0.1:{b.port}/{PREFIX}", "--max-fps", 60])
    try:
        wait_until(lambda: count_lines(out) >= 100, 60, "100 records with the broker down", process)
        b.start()
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert "broker not reachable" in stderr and "retrying" in stderr
    subscriber = Subscriber(b.port)
    wait_until(lambda: len({r["frame"] for r in subscriber.results()}) >= FRAMES, 30, "all results at the subscriber")
    subscriber.close()
    check_all_results_in_order(subscriber.results(), read_jsonl(out))
    counts = json.loads(summary.read_text())["outputs"]["mqtt"]
    assert counts["queued"] >= 100 and counts["published"] >= FRAMES and counts["dropped"] == 0, counts


@needs_mosquitto
def test_a_full_queue_drops_the_oldest_and_counts_them(broker, tiny_edge_models, tmp_path, capsys):
    b = broker(start=False)  # nothing listens: every result waits
    video = line_video(tmp_path / "line.avi", frames=30)
    summary = tmp_path / "summary.json"
    code = main(["--video", str(video), "--model", str(tiny_edge_models.tflite), "--summary", str(summary),
                 "--mqtt", f"mqtt://127.0.0.1:{b.port}/{PREFIX}", "--mqtt-queue", "10"])
    assert code == 0
    counts = json.loads(summary.read_text())["outputs"]["mqtt"]
    assert counts == {"published": 0, "queued": 30, "dropped": 20, "rejected": 0, "unsent": 10, "reconnects": 0}
    assert capsys.readouterr().out == ""  # --mqtt without --output: no records on stdout


@needs_mosquitto
def test_wrong_credentials_are_a_one_line_error_and_exit_2_before_any_frame(broker, tiny_edge_models, tmp_path,
                                                                           caplog):
    b = broker(users={"line3": "right-password"})
    video = line_video(tmp_path / "line.avi", frames=10)
    out = tmp_path / "out.jsonl"
    url = f"mqtt://line3:wrong-password@127.0.0.1:{b.port}/{PREFIX}"
    assert main(["--video", str(video), "--model", str(tiny_edge_models.tflite), "--output", str(out),
                 "--mqtt", url]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "refused" in errors[0] and "password" in errors[0], errors
    assert "\n" not in errors[0] and "wrong-password" not in errors[0]
    assert count_lines(out) == 0  # not a single frame was classified
    # the right password goes through the same broker
    subscriber = Subscriber(b.port, auth=("line3", "right-password"))
    assert main(["--video", str(video), "--model", str(tiny_edge_models.tflite), "--output", str(out),
                 "--mqtt", f"mqtt://line3:right-password@127.0.0.1:{b.port}/{PREFIX}"]) == 0
    wait_until(lambda: len(subscriber.results()) >= 10, 20, "10 results")
    subscriber.close()
    check_all_results_in_order(subscriber.results(), read_jsonl(out), frames=10)


def test_camera_lost_fires_without_results_and_clears_when_they_flow():
    from types import SimpleNamespace

    events: list[dict] = []
    alarms = Alarms(["camera-lost:0.3"])
    alarms.listen(events.append)
    result = SimpleNamespace(prediction=None, frame=SimpleNamespace(index=7))
    with alarms:
        alarms.emit(result)
        wait_until(lambda: len(events) == 1, 5, "the camera-lost alarm")
        alarms.emit(result)
        alarms.source_lost("camera 0: no frames after 5 reconnect attempts")
    assert [(e["rule"], e["state"]) for e in events] == [("camera-lost:0.3", "active"), ("camera-lost:0.3", "cleared"),
                                                         ("camera-lost:0.3", "active")]
    assert "no frames after 5 reconnect attempts" in events[-1]["message"]


def make_tls_files(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it (PEM files)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "line test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    server = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
              .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
              .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
              .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                             critical=False)
              .sign(ca_key, hashes.SHA256()))
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


@needs_mosquitto
def test_tls_with_the_brokers_ca_works_and_an_unverified_broker_is_exit_2(broker, tiny_edge_models, tmp_path,
                                                                        caplog):
    pytest.importorskip("cryptography", reason="cryptography makes the test certificates (pulled by asyncua)")
    b = broker(start=False)
    b.folder.mkdir(parents=True, exist_ok=True)
    ca, cert, key = make_tls_files(b.folder)
    b.config.write_text(b.config.read_text() + f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\n")
    b.start()
    video = line_video(tmp_path / "line.avi", frames=10)
    out, summary = tmp_path / "out.jsonl", tmp_path / "summary.json"
    url = f"mqtt://127.0.0.1:{b.port}/{PREFIX}"
    assert main(["--video", str(video), "--model", str(tiny_edge_models.tflite), "--output", str(out),
                 "--summary", str(summary), "--mqtt", url, "--mqtt-tls-ca", str(ca)]) == 0
    assert json.loads(summary.read_text())["outputs"]["mqtt"]["published"] == 10
    caplog.clear()
    assert main(["--video", str(video), "--model", str(tiny_edge_models.tflite), "--output", str(out),
                 "--overwrite", "--mqtt", f"mqtts://127.0.0.1:{b.port}/{PREFIX}"]) == 2  # system CAs: not ours
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "does not verify" in errors[0] and "--mqtt-tls-ca" in errors[0], errors
    assert count_lines(out) == 0
    assert main(["--video", str(video), "--model", str(tiny_edge_models.tflite), "--mqtt", url,
                 "--mqtt-tls-ca", str(tmp_path / "missing.pem")]) == 2


@needs_mosquitto
def test_a_killed_process_leaves_a_retained_offline_status_through_its_last_will(broker, tiny_edge_models, tmp_path):
    b = broker()
    video = line_video(tmp_path / "line.avi")
    out = tmp_path / "out.jsonl"
    process = start_cli(["--video", video, "--model", tiny_edge_models.tflite, "--output", out, "--max-fps", 20,
                         "--mqtt", f"mqtt://127.0.0.1:{b.port}/{PREFIX}"])
    try:
        wait_until(lambda: count_lines(out) >= 20, 60, "20 records", process)
        process.send_signal(signal.SIGKILL)  # no clean stop: only the broker can tell the line
        process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()

    def retained_status() -> list[dict]:
        late = Subscriber(b.port, client_id=f"late-{time.monotonic_ns()}")  # subscribes after the fact
        try:
            wait_until(lambda: late.on("status"), 5, "the retained status")
        except AssertionError:
            pass
        late.close()
        with late.lock:
            return [json.loads(p) for t, p, retained in late.messages if t == f"{PREFIX}/status" and retained]

    # the broker notices the dead connection within 1.5 keep-alive intervals (15 s) and publishes the will
    wait_until(lambda: any(s["state"] == "offline" for s in retained_status()), 40, "the last will", interval=1)
    status = retained_status()[-1]
    assert status["state"] == "offline" and status["reason"] == "connection lost" and status["pid"] == process.pid
