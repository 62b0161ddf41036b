"""``--serve [HOST:]PORT``: the operator page and the machine endpoints, served while the run goes on.

* ``/``: the page: the newest annotated frame (MJPEG), per-class counts, unknown rate, fps, latency, alarms,
  model, engine and the outputs' counters (refreshed every second from ``/status.json``).
* ``/stream.mjpg``: the annotated frames as MJPEG (at most :data:`STREAM_FPS` a second); ``/frame.jpg``: one.
* ``/status.json``: :meth:`edge_runtime.status.LiveStatus.snapshot`.
* ``/metrics``: Prometheus text format (:mod:`edge_runtime.metrics`).
* ``/healthz``: 200 while the loop runs and no ``camera-lost`` alarm is active, else 503 (JSON body).

HOST defaults to 127.0.0.1 (this machine only): there is no login, so expose it through a reverse proxy with
authentication or an SSH tunnel (docs/line-integration.md). A port that is taken is a setup error (exit 2).
Frames are annotated and encoded on the server's threads, only while someone watches, once per new frame.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import cv2

from edge_runtime.errors import SinkError
from edge_runtime.records import Result
from edge_runtime.sinks.base import Sink
from edge_runtime.status import Latest, LiveStatus

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
STREAM_FPS = 10.0
MIN_FRAME_WIDTH = 640  # small frames are enlarged (nearest neighbour) before the label is drawn
JPEG_QUALITY = 80
KEEPALIVE_S = 1.0  # without new frames, the stream repeats the last one this often


def parse_serve(spec: str) -> tuple[str, int]:
    """``PORT``, ``HOST:PORT`` or ``[IPv6]:PORT`` -> (host, port); ValueError naming the option."""
    text = str(spec).strip()
    match = re.fullmatch(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]:|(?P<host>[^:\[\]]+):)?(?P<port>\d{1,5})", text)
    if not match or int(match["port"]) > 65535:
        raise ValueError(f"--serve '{spec}': use PORT or HOST:PORT (e.g. 8080 or 0.0.0.0:8080)")
    return match["v6"] or match["host"] or DEFAULT_HOST, int(match["port"])


class _FrameCache:
    """The JPEG of the newest frame, made once per frame whoever asks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sequence = -1
        self._jpeg = b""

    def jpeg(self, latest: Latest) -> bytes:
        with self._lock:
            if latest.sequence != self._sequence:
                encoded = _encode(latest.result)
                if encoded is not None:
                    self._sequence, self._jpeg = latest.sequence, encoded
            return self._jpeg


def _encode(result: Result) -> bytes | None:
    from edge_runtime.sinks.images import annotate

    image = result.frame.image
    if image is None:
        return None
    if image.shape[1] < MIN_FRAME_WIDTH:
        scale = max(1, round(MIN_FRAME_WIDTH / image.shape[1]))
        image = cv2.resize(image, (image.shape[1] * scale, image.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
    ok, data = cv2.imencode(".jpg", annotate(image, result), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    return data.tobytes() if ok else None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], status: LiveStatus) -> None:
        import socket

        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.status = status
        self.frames = _FrameCache()
        self.stopping = threading.Event()
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "edge-classify"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = self.path.split("?", 1)[0]
        try:
            if path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, PAGE.encode(), "text/html; charset=utf-8")
            elif path == "/status.json":
                self._send_json(HTTPStatus.OK, self.server.status.snapshot())
            elif path == "/metrics":
                from edge_runtime.metrics import CONTENT_TYPE, render

                self._send(HTTPStatus.OK, render(self.server.status), CONTENT_TYPE)
            elif path == "/healthz":
                self._health()
            elif path == "/frame.jpg":
                latest = self.server.status.latest_image
                jpeg = self.server.frames.jpeg(latest) if latest is not None else b""
                if jpeg:
                    self._send(HTTPStatus.OK, jpeg, "image/jpeg")
                else:
                    self._send(HTTPStatus.NOT_FOUND, b"no frame yet\n", "text/plain")
            elif path == "/stream.mjpg":
                self._stream()
            else:
                self._send(HTTPStatus.NOT_FOUND, b"not found: try /, /status.json, /metrics, /healthz\n",
                           "text/plain")
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, code: int, data: Any) -> None:
        self._send(code, json.dumps(data, allow_nan=False).encode(), "application/json")

    def _health(self) -> None:
        status = self.server.status
        lost = sorted(rule for rule, event in status.active_alarms.items() if event.get("kind") == "camera-lost")
        healthy = status.state == "running" and not lost
        age = status.last_result_age_s()
        self._send_json(HTTPStatus.OK if healthy else HTTPStatus.SERVICE_UNAVAILABLE,
                        {"healthy": healthy, "state": status.state, "frames": status.frames,
                         "last_result_age_s": None if age is None else round(age, 2), "camera_lost": lost})

    def _stream(self) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        status, sequence, period, jpeg = self.server.status, 0, 1.0 / STREAM_FPS, b""
        while not self.server.stopping.is_set():
            started = time.monotonic()
            latest = status.wait_for_frame(sequence, timeout=KEEPALIVE_S)
            if latest is None:
                if status.state != "running":
                    return
                # no new frame (a quiet watched folder, a stalled camera): send the last one again, so that
                # browsers and proxies see a live connection
            else:
                sequence = latest.sequence
                jpeg = self.server.frames.jpeg(latest)
            if jpeg:
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg)
                                 + jpeg + b"\r\n")
                self.wfile.flush()
            rest = period - (time.monotonic() - started)
            if rest > 0:
                self.server.stopping.wait(rest)


class WebServer(Sink):
    """Serves the page and endpoints on a thread of its own while entered; ``emit`` does nothing (the page
    reads the run's LiveStatus)."""

    def __init__(self, spec: str, status: LiveStatus) -> None:
        self.host, self.port = parse_serve(spec)
        self.status = status
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def __enter__(self) -> WebServer:
        try:
            self._server = _Server((self.host, self.port), self.status)
        except OSError as exc:
            raise SinkError(f"--serve {self.host}:{self.port}: cannot listen ({exc.strerror or exc}); choose "
                            "another port or stop what uses it") from exc
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="web-page", daemon=True)
        self._thread.start()
        log.info("operator page on %s (/status.json, /metrics, /healthz)", self.url)
        return self

    def emit(self, result: Result) -> None:
        pass

    def close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.stopping.set()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2.0)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>edge-classify</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
:root { --bg:#14181d; --card:#1e242b; --text:#e6e9ec; --dim:#8b96a2; --ok:#3fb950; --warn:#d29922; --bad:#f85149; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.4 system-ui, sans-serif; background:var(--bg); color:var(--text); }
header { display:flex; align-items:center; gap:16px; padding:10px 18px; background:#0d1014; flex-wrap:wrap; }
header h1 { font-size:18px; margin:0; }
.badge { padding:2px 10px; border-radius:10px; font-weight:600; background:var(--ok); color:#000; }
.badge.bad { background:var(--bad); }
.meta { color:var(--dim); }
main { display:grid; grid-template-columns: minmax(0, 3fr) minmax(300px, 2fr); gap:14px; padding:14px 18px; }
.card { background:var(--card); border-radius:8px; padding:12px 14px; }
.card h2 { font-size:13px; text-transform:uppercase; letter-spacing:.06em; color:var(--dim); margin:0 0 8px; }
#frame { display:block; width:100%; max-height:62vh; object-fit:contain; background:#000; border-radius:6px;
  min-height:200px; }
.result { display:flex; align-items:baseline; gap:14px; margin-top:10px; }
#latest { font-size:30px; font-weight:700; } #latest_conf { font-size:22px; color:var(--dim); }
.tiles { display:grid; grid-template-columns:repeat(3, 1fr); gap:10px; margin-top:10px; }
.tile .v { font-size:22px; font-weight:700; } .tile .k { color:var(--dim); font-size:12px; }
table { width:100%; border-collapse:collapse; } td { padding:3px 4px; }
td.n { text-align:right; font-variant-numeric:tabular-nums; width:70px; }
.bar { height:10px; background:#2f81f7; border-radius:3px; } tr[data-label="unknown"] .bar { background:var(--warn); }
#alarms li { margin:3px 0; } .active { color:var(--bad); font-weight:600; } .cleared { color:var(--dim); }
ul { margin:0; padding-left:18px; }
</style></head>
<body>
<header><h1>edge-classify</h1><span id="state" class="badge">connecting</span>
<span class="meta">model <b id="model">-</b> &middot; engine <b id="engine">-</b> &middot; source <b id="source">-</b>
&middot; host <b id="host">-</b> &middot; up <b id="uptime">-</b></span></header>
<main>
<section class="card"><h2>Newest frame</h2><img id="frame" alt="newest annotated frame">
<div class="result"><span id="latest">-</span><span id="latest_conf"></span></div>
<div class="tiles">
<div class="tile"><div class="v" id="latest_frame">-</div><div class="k">frame</div></div>
<div class="tile"><div class="v" id="fps">-</div><div class="k">frames per second</div></div>
<div class="tile"><div class="v" id="latency">-</div><div class="k">latency p50 / p99 (ms)</div></div>
</div></section>
<section>
<div class="card"><h2>Counts</h2>
<div class="tiles">
<div class="tile"><div class="v" id="frames">0</div><div class="k">frames</div></div>
<div class="tile"><div class="v" id="unknown_rate">-</div><div class="k">unknown rate (last <span id="unknown_window">0</span>)</div></div>
<div class="tile"><div class="v" id="errors">0</div><div class="k">errors</div></div>
</div>
<table id="counts"></table></div>
<div class="card" style="margin-top:14px"><h2>Alarms</h2><ul id="alarms"><li class="cleared">none</li></ul></div>
<div class="card" style="margin-top:14px"><h2>Outputs</h2><ul id="outputs"><li class="cleared">-</li></ul></div>
</section>
</main>
<script>
function set(id, text) { document.getElementById(id).textContent = text; }
function esc(s) { return String(s).replace(/[&<>"]/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c])); }
function fmt(v, d) { return v === null || v === undefined ? '-' : Number(v).toFixed(d); }
async function refresh() {
  let s;
  try { s = await (await fetch('/status.json', {cache: 'no-store'})).json(); }
  catch (e) { set('state', 'no connection'); document.getElementById('state').className = 'badge bad'; return; }
  const bad = s.state !== 'running' || s.alarms_active.length > 0;
  set('state', s.alarms_active.length ? 'ALARM' : s.state);
  document.getElementById('state').className = bad ? 'badge bad' : 'badge';
  set('model', s.model); set('engine', s.engine); set('source', s.source); set('host', s.host);
  set('uptime', Math.round(s.uptime_s) + ' s');
  set('frames', s.frames); set('errors', s.errors); set('fps', fmt(s.fps, 1));
  set('latency', fmt(s.latency_p50_ms, 1) + ' / ' + fmt(s.latency_p99_ms, 1));
  set('unknown_rate', s.unknown_rate === null ? '-' : (100 * s.unknown_rate).toFixed(1) + ' %');
  set('unknown_window', s.unknown_window);
  const l = s.latest;
  set('latest', !l ? '-' : (l.label === null ? 'error' : l.label));
  set('latest_conf', !l || l.label === null ? (l ? l.error : '') : 'confidence ' + (100 * l.confidence).toFixed(1) + ' %');
  set('latest_frame', l ? l.frame : '-');
  const total = Math.max(1, s.classified);
  document.getElementById('counts').innerHTML = Object.entries(s.counts).map(([k, v]) =>
    `<tr data-label="${esc(k)}"><td>${esc(k)}</td><td class="n">${v}</td>` +
    `<td style="width:40%"><div class="bar" style="width:${(100 * v / total).toFixed(1)}%"></div></td></tr>`).join('');
  document.getElementById('alarms').innerHTML = s.alarms.length ? s.alarms.map(a =>
    `<li class="${a.state}">${esc(a.time.slice(11, 19))} ${esc(a.rule)}: ${esc(a.state)} &ndash; ${esc(a.message)}</li>`).join('')
    : '<li class="cleared">none</li>';
  const outs = [];
  for (const name of ['mqtt', 'opcua']) if (s[name]) outs.push(`<li><b>${name}</b> ` +
    Object.entries(s[name]).map(([k, v]) => `${esc(k)} ${esc(v)}`).join(', ') + '</li>');
  document.getElementById('outputs').innerHTML = outs.join('') || '<li class="cleared">page and metrics only</li>';
}
window.addEventListener('load', () => {
  document.getElementById('frame').src = '/stream.mjpg';
  refresh(); setInterval(refresh, 1000);
});
</script></body></html>
"""
