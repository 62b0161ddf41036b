"""``--mqtt mqtt://[user:pass@]host[:port]/PREFIX``: every record to an MQTT broker, as it happens.

Topics (payloads are JSON):

* ``PREFIX/result``: every record (:data:`edge_runtime.records.RECORD_FIELDS`), QoS 1, in order; ``frame``
  (and ``file`` for files) identify it, so a duplicate that QoS 1 allows after a reconnect is recognisable.
* ``PREFIX/status``: retained; ``online`` with the model, engine, fps and counts every few seconds, and
  ``offline`` at the end of the run or, through the last will, when the connection is lost.
* ``PREFIX/alarm``: QoS 1; one message per alarm change (:mod:`edge_runtime.alarms`).

Delivery: ``emit`` only serialises the record and appends it to a bounded queue (it never waits for the
network). A publisher thread hands results to the MQTT client in order, at most ``inflight`` unacknowledged at
a time; the client re-sends unacknowledged ones after a reconnect. A broker that is down at the start or
restarts in the middle never stops classification: results wait in the queue and go out in order once the
broker is back. When the queue is full, the *oldest* waiting result is dropped (counted in ``dropped``, with
a warning): the line gets the newest results first when the broker comes back, and ``--output`` keeps them
all. At the end the sink waits up to ``flush_timeout`` seconds for the queue to go out; what is left is
reported as ``unsent``.

Setup errors (exit 2 before any frame): a malformed URL, credentials the broker refuses, a TLS certificate
that does not verify, TLS files that do not exist. An unreachable broker at start is only a warning.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from edge_runtime.errors import SinkError
from edge_runtime.records import Result
from edge_runtime.sinks.base import Sink

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
PASSWORD_ENV = "EDGE_MQTT_PASSWORD"
DEFAULT_QUEUE = 10_000
INFLIGHT = 20
STATUS_INTERVAL_S = 5.0
CONNECT_TIMEOUT_S = 5.0
FLUSH_TIMEOUT_S = 5.0
RECONNECT_DELAY_S = (0.5, 10.0)  # first retry, longest wait between retries (doubling)
KEEPALIVE_S = 15
# CONNACK reason codes that no retry will fix (v5 numbering; paho maps MQTT 3.1.1's onto them).
REFUSED_FOR_GOOD = {134: "bad user name or password", 135: "not authorised", 133: "client id not valid",
                    4: "bad user name or password", 5: "not authorised"}


@dataclass(frozen=True)
class MqttTarget:
    """What ``--mqtt URL`` names."""

    host: str
    port: int
    prefix: str
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> MqttTarget:
        parts = urlsplit(url)
        hint = "use mqtt://[user:pass@]host[:port]/PREFIX (mqtts:// for TLS)"
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"--mqtt '{_redact(url)}': {hint}")
        try:
            port = parts.port or DEFAULT_PORTS[parts.scheme]
        except ValueError as exc:
            raise ValueError(f"--mqtt '{_redact(url)}': bad port ({exc}); {hint}") from None
        prefix = parts.path.strip("/")
        if not prefix:
            raise ValueError(f"--mqtt '{_redact(url)}': no topic prefix; {hint}, e.g. mqtt://broker/line3/camera1")
        if re.search(r"[+#\x00]", prefix) or "//" in prefix or "#" in url or parts.query:
            raise ValueError(f"--mqtt '{_redact(url)}': the topic prefix '{prefix}' may not hold +, # or empty levels")
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
        if username and password is None:
            password = os.environ.get(PASSWORD_ENV)
        return cls(parts.hostname, port, prefix, username, password, parts.scheme == "mqtts")

    @property
    def where(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}/{self.prefix}"


def _redact(url: str) -> str:
    return re.sub(r"//([^:/@]*):[^@/]*@", r"//\1:***@", url)


class MqttSink(Sink):
    """Publishes results, status and alarms; see the module docstring. ``status`` is the run's
    :class:`~edge_runtime.status.LiveStatus` (the status topic's content)."""

    def __init__(self, url: str, status: Any = None, *, queue_size: int = DEFAULT_QUEUE,
                 tls_ca: str | Path | None = None, tls_cert: str | Path | None = None,
                 tls_key: str | Path | None = None, client_id: str | None = None, inflight: int = INFLIGHT,
                 connect_timeout: float = CONNECT_TIMEOUT_S, flush_timeout: float = FLUSH_TIMEOUT_S,
                 status_interval: float = STATUS_INTERVAL_S) -> None:
        self.target = MqttTarget.parse(url)
        if queue_size < 1:
            raise ValueError(f"--mqtt-queue must be >= 1, got {queue_size}")
        for option, path in (("--mqtt-tls-ca", tls_ca), ("--mqtt-tls-cert", tls_cert), ("--mqtt-tls-key", tls_key)):
            if path is not None and not Path(path).is_file():
                raise SinkError(f"{option} '{path}': no such file; give the PEM file's path")
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("--mqtt-tls-cert and --mqtt-tls-key go together (the client certificate and its key)")
        self.status = status
        self.tls_ca, self.tls_cert, self.tls_key = tls_ca, tls_cert, tls_key
        self.tls = self.target.tls or tls_ca is not None or tls_cert is not None
        prefix = self.target.prefix
        self.topics = {"result": f"{prefix}/result", "status": f"{prefix}/status", "alarm": f"{prefix}/alarm"}
        self.client_id = client_id or re.sub(r"[^A-Za-z0-9_-]", "-", f"edge-classify-{socket.gethostname()}-{prefix}")
        self.queue_size = queue_size
        self.inflight = inflight
        self.connect_timeout = connect_timeout
        self.flush_timeout = flush_timeout
        self.status_interval = status_interval
        # counters (read by LiveStatus / the summary)
        self.published = 0  # acknowledged by the broker
        self.dropped = 0  # oldest results dropped from a full queue
        self.rejected = 0  # the broker acknowledged with a failure code (e.g. not authorised for the topic)
        self.reconnects = 0
        self.unsent = 0  # left over at the end
        self.waited = 0  # results queued while the broker was not connected (they went out later, in order)
        self._queue: deque[tuple[str, bytes]] = deque()
        self._cond = threading.Condition()
        self._handed = 0  # results handed to the client
        self._acked = 0  # results acknowledged (published + rejected)
        self._result_mids: set[int] = set()
        self._other_mids: set[int] = set()
        self._early_acks: dict[int, bool] = {}  # acks that arrived before publish() returned the mid
        self._connected = False
        self._ever_connected = False
        self._refused: str | None = None
        self._first_outcome = threading.Event()
        self._halt = threading.Event()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._client: Any = None
        self._drop_warned_at = 0

    # --- set-up ---------------------------------------------------------------------------------------------

    def __enter__(self) -> MqttSink:
        try:
            import paho.mqtt.client as mqtt
        except ImportError as exc:
            raise SinkError('--mqtt needs the paho-mqtt package; install it with pip install '
                            '"steel-edge-inspect[edge]" (or just: pip install paho-mqtt)') from exc
        from paho.mqtt.properties import Properties
        from paho.mqtt.packettypes import PacketTypes

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=mqtt.MQTTv5)
        client.max_inflight_messages_set(self.inflight + 4)  # results plus a few status/alarm messages
        client.reconnect_delay_set(*RECONNECT_DELAY_S)
        if self.target.username:
            client.username_pw_set(self.target.username, self.target.password)
        if self.tls:
            try:
                client.tls_set(ca_certs=None if self.tls_ca is None else str(self.tls_ca),
                               certfile=None if self.tls_cert is None else str(self.tls_cert),
                               keyfile=None if self.tls_key is None else str(self.tls_key))
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise SinkError(f"--mqtt {self.target.where}: cannot use the TLS files ({exc}); check "
                                "--mqtt-tls-ca/--mqtt-tls-cert/--mqtt-tls-key") from exc
        will = json.dumps({"state": "offline", "reason": "connection lost", "host": socket.gethostname(),
                           "pid": os.getpid()})
        client.will_set(self.topics["status"], will, qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_connect_fail = self._on_connect_fail
        self._client = client
        self._properties = Properties(PacketTypes.CONNECT)
        self._properties.SessionExpiryInterval = 0
        try:
            client.connect(self.target.host, self.target.port, KEEPALIVE_S, clean_start=True,
                           properties=self._properties)
            reachable = True
        except ssl.SSLCertVerificationError as exc:
            raise SinkError(f"--mqtt {self.target.where}: the broker's TLS certificate does not verify "
                            f"({exc.verify_message}); give its CA with --mqtt-tls-ca") from exc
        except ssl.SSLError as exc:
            raise SinkError(f"--mqtt {self.target.where}: TLS handshake failed ({exc.reason or exc}); is the "
                            "port a TLS port? (mqtts:// and --mqtt-tls-* need one)") from exc
        except OSError as exc:
            reachable = False
            log.warning("--mqtt %s: broker not reachable (%s); classifying anyway, results wait in a queue "
                        "(%d at most) and go out once it is; retrying", self.target.where,
                        exc.strerror or exc, self.queue_size)
            client.connect_async(self.target.host, self.target.port, KEEPALIVE_S, clean_start=True,
                                 properties=self._properties)
        client.loop_start()
        if reachable:
            self._first_outcome.wait(self.connect_timeout)
            if self._refused is not None:
                client.loop_stop()
                raise SinkError(f"--mqtt {self.target.where}: the broker refused the connection "
                                f"({self._refused}); check the user and password in the URL (or "
                                f"${PASSWORD_ENV})")
            if not self._connected:
                log.warning("--mqtt %s: no answer from the broker within %.0f s; classifying anyway, results "
                            "wait in the queue", self.target.where, self.connect_timeout)
        if self.status is not None:
            self.status.add_counters("mqtt", self.counters)
        self._thread = threading.Thread(target=self._publish_loop, name="mqtt-publish", daemon=True)
        self._thread.start()
        return self

    # --- client callbacks (the client's network thread) -----------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        if reason_code.is_failure:
            code = reason_code.value
            reason = REFUSED_FOR_GOOD.get(code, str(reason_code))
            if not self._ever_connected and code in REFUSED_FOR_GOOD:
                self._refused = reason
            log.warning("--mqtt %s: connection refused (%s); retrying", self.target.where, reason)
            self._first_outcome.set()
            return
        with self._cond:
            if self._ever_connected:
                self.reconnects += 1
            self._ever_connected = True
            self._connected = True
            self._cond.notify_all()
        log.info("--mqtt %s: connected%s", self.target.where, " again" if self.reconnects else "")
        self._first_outcome.set()
        self._publish_status("online")

    def _on_connect_fail(self, client, userdata) -> None:  # noqa: ANN001
        self._first_outcome.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        with self._cond:
            was = self._connected
            self._connected = False
        if was and not self._closing:
            log.warning("--mqtt %s: connection lost (%s); results wait in the queue, reconnecting",
                        self.target.where, reason_code)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:  # noqa: ANN001
        failed = bool(getattr(reason_code, "is_failure", False))
        with self._cond:
            if mid in self._result_mids:
                self._result_mids.discard(mid)
                self._count_ack(failed)
            elif mid in self._other_mids:
                self._other_mids.discard(mid)
            else:
                self._early_acks[mid] = failed
            self._cond.notify_all()
        if failed:
            log.warning("--mqtt %s: the broker did not accept a message (%s)", self.target.where, reason_code)

    def _count_ack(self, failed: bool) -> None:
        self._acked += 1
        if failed:
            self.rejected += 1
        else:
            self.published += 1

    # --- the pipeline's side --------------------------------------------------------------------------------

    def emit(self, result: Result) -> None:
        payload = json.dumps(result.record, ensure_ascii=False, allow_nan=False).encode()
        self._enqueue(self.topics["result"], payload)

    def alarm(self, event: dict[str, Any]) -> None:
        """An alarm event (a listener of :class:`edge_runtime.alarms.Alarms`): in order with the results."""
        self._enqueue(self.topics["alarm"], json.dumps(event, allow_nan=False).encode())
        self._publish_status("online")

    def _enqueue(self, topic: str, payload: bytes) -> None:
        with self._cond:
            if len(self._queue) >= self.queue_size:
                self._queue.popleft()
                self.dropped += 1
                if self.dropped == 1 or self.dropped - self._drop_warned_at >= 1000:
                    self._drop_warned_at = self.dropped
                    log.warning("--mqtt %s: queue full (%d results); dropping the oldest (%d so far, all are in "
                                "--output)", self.target.where, self.queue_size, self.dropped)
            self._queue.append((topic, payload))
            if not self._connected:
                self.waited += 1
            self._cond.notify_all()

    def counters(self) -> dict[str, int]:
        with self._cond:
            return {"published": self.published, "queued": len(self._queue) + self._handed - self._acked,
                    "dropped": self.dropped, "rejected": self.rejected, "reconnects": self.reconnects,
                    "connected": int(self._connected), "unsent": self.unsent}

    # --- the publisher thread -------------------------------------------------------------------------------

    def _ready(self) -> bool:
        return self._connected and bool(self._queue) and self._handed - self._acked < self.inflight

    def _publish_loop(self) -> None:
        next_status = time.monotonic() + self.status_interval
        while not self._halt.is_set():
            batch: list[tuple[str, bytes]] = []
            with self._cond:
                self._cond.wait_for(lambda: self._halt.is_set() or self._ready(),
                                    max(0.0, min(0.5, next_status - time.monotonic())))
                while not self._halt.is_set() and self._ready() and len(batch) < self.inflight:
                    batch.append(self._queue.popleft())
                    self._handed += 1
            for topic, payload in batch:
                self._hand_over(topic, payload, counted=True)
            if time.monotonic() >= next_status:
                next_status = time.monotonic() + self.status_interval
                self._publish_status("online")

    def _hand_over(self, topic: str, payload: bytes, counted: bool, retain: bool = False) -> Any:
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        with self._cond:
            failed = self._early_acks.pop(info.mid, None)
            if failed is not None:
                if counted:
                    self._count_ack(failed)
            else:
                (self._result_mids if counted else self._other_mids).add(info.mid)
            self._cond.notify_all()
        return info

    def publish_status(self) -> None:
        """Publish the ``online`` status now (it also goes out every few seconds)."""
        self._publish_status("online")

    def _publish_status(self, state: str, reason: str | None = None) -> Any:
        if not self._connected or self._client is None:
            return None
        data: dict[str, Any] = {"state": state}
        if reason:
            data["reason"] = reason
        if self.status is not None:
            snapshot = self.status.snapshot()
            snapshot.pop("latest", None)
            snapshot.pop("alarms", None)
            snapshot.pop("state", None)
            data.update(snapshot)
        data["mqtt"] = self.counters()
        try:
            return self._hand_over(self.topics["status"], json.dumps(data, allow_nan=False).encode(),
                                   counted=False, retain=True)
        except (ValueError, RuntimeError) as exc:
            log.debug("status not published: %s", exc)
            return None

    # --- the end --------------------------------------------------------------------------------------------

    def close(self) -> None:
        if self._client is None:
            return
        client, deadline = self._client, time.monotonic() + self.flush_timeout
        with self._cond:
            self._cond.wait_for(lambda: not self._queue and self._handed == self._acked,
                                max(0.0, deadline - time.monotonic()))
            self._closing = True
        self._halt.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        info = self._publish_status("offline", "stopped")
        if info is not None:
            try:
                info.wait_for_publish(max(0.5, deadline - time.monotonic()))
            except (ValueError, RuntimeError):
                pass
        client.disconnect()
        client.loop_stop()
        self._client = None
        with self._cond:
            self.unsent = len(self._queue) + self._handed - self._acked
        if self.unsent:
            log.warning("--mqtt %s: %d result(s) not published before the end (the broker did not take them "
                        "within %.0f s); they are in --output", self.target.where, self.unsent, self.flush_timeout)

    def summary(self) -> dict[str, int]:
        """For the run's summary: published, queued (waited for the broker), dropped, rejected, unsent (left at
        the end), reconnects."""
        with self._cond:
            return {"published": self.published, "queued": self.waited, "dropped": self.dropped,
                    "rejected": self.rejected, "unsent": self.unsent, "reconnects": self.reconnects}
