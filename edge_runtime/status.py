"""The live state of a run, read by everything that reports it while it runs: the MQTT status topic, the OPC UA
nodes, the operator page, ``/status.json``, ``/metrics`` and ``/healthz``.

:class:`LiveStatus` is a sink (``emit`` adds each result; a few counters and one reference to the newest
frame, so a call costs microseconds) and a thread-safe reader (:meth:`LiveStatus.snapshot`). Other outputs
register their own counters with :meth:`LiveStatus.add_counters` (MQTT: published, queued, dropped, ...).
"""

from __future__ import annotations

import bisect
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from edge_runtime.records import ModelInfo, Result
from edge_runtime.sinks.base import Sink

# End-to-end latency buckets (seconds) of the /metrics histogram: from a fast int8 model to a stalled frame.
LATENCY_BUCKETS_S = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
FPS_WINDOW_S = 10.0  # fps is over the results of the last 10 s
UNKNOWN_WINDOW = 100  # the unknown rate shown is over the last 100 classified results
LATENCY_WINDOW = 1000  # p50/p99 on the page over the last 1000 results
ALARM_HISTORY = 50


@dataclass
class Latest:
    """The newest result, as reported: its record and the frame image (a reference, never copied here)."""

    sequence: int
    record: dict[str, Any]
    result: Result


class LiveStatus(Sink):
    """Counts, rates and the newest result of the running pipeline; see the module docstring."""

    def __init__(self, model: ModelInfo, labels: Sequence[str], source: str = "",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.model = model
        self.labels = list(labels)
        self.source = source
        self.source_stats: Any = None  # the source's SourceStats once it is open (dropped, reconnects)
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self._clock = clock
        self._lock = threading.Condition()
        self.started = clock()
        self.started_wall = time.time()
        self.frames = self.classified = self.errors = self.unknown = self.uncertain = 0
        self.counts: dict[str, int] = {label: 0 for label in [*self.labels, "unknown"]}
        self.latency_buckets = [0] * (len(LATENCY_BUCKETS_S) + 1)  # last: +Inf
        self.latency_sum_s = 0.0
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._times: deque[float] = deque()
        self._unknown_window: deque[bool] = deque(maxlen=UNKNOWN_WINDOW)
        self.latest: Latest | None = None
        self.latest_image: Latest | None = None  # the newest result that has an image (error records may not)
        self.last_result_at: float | None = None
        self.alarms: deque[dict[str, Any]] = deque(maxlen=ALARM_HISTORY)
        self.alarms_total: dict[str, int] = {}
        self.active_alarms: dict[str, dict[str, Any]] = {}
        self.state = "running"
        self._counters: dict[str, Callable[[], dict[str, Any]]] = {}

    # --- writing (pipeline thread, alarm engine) ------------------------------------------------------------

    def emit(self, result: Result) -> None:
        record = result.record or {}
        now = self._clock()
        latency_s = (result.latency_ms or 0.0) / 1000.0
        with self._lock:
            self.frames += 1
            prediction = result.prediction
            if prediction is None:
                self.errors += 1
            else:
                self.classified += 1
                self.uncertain += bool(result.uncertain)
                self.unknown += bool(prediction.unknown)
                self.counts[prediction.label] = self.counts.get(prediction.label, 0) + 1
                self._unknown_window.append(bool(prediction.unknown))
            self.latency_buckets[bisect.bisect_left(LATENCY_BUCKETS_S, latency_s)] += 1
            self.latency_sum_s += latency_s
            self._latencies.append(result.latency_ms or 0.0)
            self._times.append(now)
            while self._times and now - self._times[0] > FPS_WINDOW_S:
                self._times.popleft()
            self.latest = Latest(self.frames, record, result)
            if result.frame.image is not None:
                self.latest_image = self.latest
            self.last_result_at = now
            self._lock.notify_all()

    def add_alarm(self, event: dict[str, Any]) -> None:
        """Record an alarm event (``rule``, ``state`` active/cleared, ``message`` ...)."""
        with self._lock:
            self.alarms.append(event)
            rule = event["rule"]
            if event["state"] == "active":
                self.alarms_total[rule] = self.alarms_total.get(rule, 0) + 1
                self.active_alarms[rule] = event
            else:
                self.active_alarms.pop(rule, None)
                self.alarms_total.setdefault(rule, 0)
            self._lock.notify_all()

    def add_counters(self, name: str, counters: Callable[[], dict[str, Any]]) -> None:
        """Report ``counters()`` (a flat dict of numbers) under ``name`` in snapshots and metrics."""
        self._counters[name] = counters

    def stop(self, reason: str) -> None:
        with self._lock:
            self.state = f"stopping: {reason}"
            self._lock.notify_all()

    # --- reading (any thread) -------------------------------------------------------------------------------

    def wait_for_frame(self, after: int, timeout: float) -> Latest | None:
        """The newest result with an image once its sequence is beyond ``after``, or None after ``timeout``
        seconds."""
        with self._lock:
            self._lock.wait_for(lambda: (self.latest_image is not None and self.latest_image.sequence > after)
                                or self.state != "running", timeout)
            latest = self.latest_image
        return latest if latest is not None and latest.sequence > after else None

    def fps(self) -> float:
        with self._lock:
            now = self._clock()
            times = [t for t in self._times if now - t <= FPS_WINDOW_S]
        if len(times) < 2:
            return 0.0
        span = max(now - times[0], times[-1] - times[0])
        return (len(times) - 1) / span if span > 0 else 0.0

    def last_result_age_s(self) -> float | None:
        at = self.last_result_at
        return None if at is None else self._clock() - at

    def counters(self) -> dict[str, dict[str, Any]]:
        return {name: read() for name, read in list(self._counters.items())}

    def snapshot(self) -> dict[str, Any]:
        """Everything reported, as JSON-ready values (the body of /status.json and of the MQTT status)."""
        fps = self.fps()
        age = self.last_result_age_s()
        with self._lock:
            window = list(self._unknown_window)
            latencies = sorted(self._latencies)
            latest = self.latest.record if self.latest is not None else None
            data: dict[str, Any] = {
                "state": self.state,
                "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                "started": datetime.fromtimestamp(self.started_wall, timezone.utc).isoformat(timespec="seconds"),
                "uptime_s": round(self._clock() - self.started, 1),
                "host": self.host,
                "pid": self.pid,
                "source": self.source,
                "model": self.model.name,
                "model_sha256": self.model.sha256,
                "engine": self.model.engine,
                "labels": list(self.labels),
                "frames": self.frames,
                "classified": self.classified,
                "errors": self.errors,
                "unknown": self.unknown,
                "uncertain": self.uncertain,
                "counts": dict(self.counts),
                "unknown_rate": round(sum(window) / len(window), 4) if window else None,
                "unknown_window": len(window),
                "fps": round(fps, 2),
                "latency_p50_ms": _percentile(latencies, 0.50),
                "latency_p99_ms": _percentile(latencies, 0.99),
                "last_result_age_s": None if age is None else round(age, 2),
                "latest": latest,
                "alarms_active": sorted(self.active_alarms),
                "alarms": list(self.alarms)[-10:][::-1],
            }
        stats = self.source_stats
        if stats is not None:
            data["source_dropped"] = stats.dropped
            data["source_reconnects"] = stats.reconnects
        data.update(self.counters())
        return data


def _percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)
