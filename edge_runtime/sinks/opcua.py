"""``--opcua opc.tcp://HOST:PORT``: an OPC UA server with the newest result, counters and status as nodes that a
PLC or SCADA client reads or subscribes to (``pip install "steel-edge-inspect[opcua]"``).

Node tree (namespace ``urn:steel-edge-inspect:edge-classify``; string node ids ``ns=<i>;s=EdgeClassify.<path>``):

    Objects/EdgeClassify
      Latest/   Label (String), Confidence (Double), Unknown (Boolean), Uncertain (Boolean), Time (DateTime),
                Frame (Int64), File (String), Error (String), Sequence (UInt64: +1 per result)
      Counts/   Frames, Classified, Errors, Unknown (UInt64), and one UInt64 per label
      Status/   State, Model, ModelSha256, Engine, Source, Host (String), Fps, UnknownRate, LatencyP50Ms (Double),
                AlarmActive (Boolean), ActiveAlarms (String, comma-separated rules), LastAlarm (String, JSON)

The nodes carry the newest values: the server's thread refreshes them at most :data:`UPDATE_HZ` times a
second (a client subscribed with a shorter sampling interval sees every change up to that rate; the MQTT
result topic carries every single record). Security policy None, anonymous access: keep the port on the
line's network (docs/line-integration.md). A port that is taken is a setup error (exit 2).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from edge_runtime.errors import SinkError
from edge_runtime.records import Result
from edge_runtime.sinks.base import Sink

log = logging.getLogger(__name__)

NAMESPACE = "urn:steel-edge-inspect:edge-classify"
ROOT = "EdgeClassify"
UPDATE_HZ = 10.0
START_TIMEOUT_S = 60.0


def parse_endpoint(url: str) -> tuple[str, int]:
    """``opc.tcp://HOST:PORT`` -> (host, port); ValueError naming the option."""
    parts = urlsplit(str(url))
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "opc.tcp" or not parts.hostname or port is None:
        raise ValueError(f"--opcua '{url}': use opc.tcp://HOST:PORT, e.g. opc.tcp://0.0.0.0:4840")
    return parts.hostname, port


class OpcUaServer(Sink):
    """Serves the node tree on a thread with its own event loop; ``emit`` only marks that there is news."""

    def __init__(self, url: str, status: Any) -> None:
        self.host, self.port = parse_endpoint(url)
        self.status = status
        self.endpoint = f"opc.tcp://{self.host}:{self.port}/edge-classify/"
        self.namespace_index: int | None = None
        self.updates = 0
        self._news = False
        self._alarm: dict[str, Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: Any = None
        self._nodes: dict[str, tuple[Any, Any]] = {}  # path -> (NodeId, VariantType)
        self._written: dict[str, Any] = {}  # path -> the value last written (only changes are written)
        self._updater: asyncio.Task | None = None

    def __enter__(self) -> OpcUaServer:
        try:
            import asyncua  # noqa: F401
        except ImportError as exc:
            raise SinkError('--opcua needs the asyncua package; install it with pip install '
                            '"steel-edge-inspect[opcua]"') from exc
        for name in ("asyncua", "asyncua.server", "asyncua.server.address_space"):
            logging.getLogger(name).setLevel(logging.ERROR)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="opcua-server", daemon=True)
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(START_TIMEOUT_S)
        except OSError as exc:
            self._stop_loop()
            raise SinkError(f"--opcua {self.host}:{self.port}: cannot listen ({exc.strerror or exc}); choose "
                            "another port or stop what uses it") from exc
        except Exception:
            self._stop_loop()
            raise
        if self.status is not None:
            self.status.add_counters("opcua", lambda: {"updates": self.updates})
        log.info("OPC UA server on %s (namespace %s, index %s)", self.endpoint, NAMESPACE, self.namespace_index)
        return self

    async def _start(self) -> None:
        from asyncua import Server, ua

        server = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("edge-classify")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        idx = await server.register_namespace(NAMESPACE)
        self.namespace_index = idx
        root = await server.nodes.objects.add_object(ua.NodeId(ROOT, idx), ua.QualifiedName(ROOT, idx))
        status = self.status
        labels = list(status.labels) if status is not None else []
        model = status.model if status is not None else None
        V = ua.VariantType
        tree: dict[str, list[tuple[str, Any, Any]]] = {
            "Latest": [("Label", "", V.String), ("Confidence", 0.0, V.Double), ("Unknown", False, V.Boolean),
                       ("Uncertain", False, V.Boolean), ("Time", datetime.now(timezone.utc), V.DateTime),
                       ("Frame", -1, V.Int64), ("File", "", V.String), ("Error", "", V.String),
                       ("Sequence", 0, V.UInt64)],
            "Counts": [(name, 0, V.UInt64) for name in ("Frames", "Classified", "Errors", "Unknown")]
            + [(label, 0, V.UInt64) for label in labels],
            "Status": [("State", "starting", V.String), ("Model", model.name if model else "", V.String),
                       ("ModelSha256", model.sha256 if model else "", V.String),
                       ("Engine", model.engine if model else "", V.String), ("Source", "", V.String),
                       ("Host", status.host if status is not None else "", V.String), ("Fps", 0.0, V.Double),
                       ("UnknownRate", 0.0, V.Double), ("LatencyP50Ms", 0.0, V.Double),
                       ("AlarmActive", False, V.Boolean), ("ActiveAlarms", "", V.String),
                       ("LastAlarm", "", V.String)],
        }
        for folder, variables in tree.items():
            parent = await root.add_object(ua.NodeId(f"{ROOT}.{folder}", idx), ua.QualifiedName(folder, idx))
            for name, value, vtype in variables:
                path = f"{folder}.{name}"
                if path in self._nodes:  # a label named like a fixed counter ("Unknown")
                    continue
                node_id = ua.NodeId(f"{ROOT}.{path}", idx)
                await parent.add_variable(node_id, ua.QualifiedName(name, idx), ua.Variant(value, vtype))
                self._nodes[path] = (node_id, vtype)
        await server.start()
        self._server = server
        self._news = True
        self._updater = asyncio.get_running_loop().create_task(self._update_loop())

    # --- the pipeline's side --------------------------------------------------------------------------------

    def emit(self, result: Result) -> None:
        self._news = True  # the server's thread picks up the newest values (no work on this thread)

    def alarm(self, event: dict[str, Any]) -> None:
        self._alarm = event
        self._news = True

    # --- the server's thread --------------------------------------------------------------------------------

    async def _update_loop(self) -> None:
        period = 1.0 / UPDATE_HZ
        while True:
            await asyncio.sleep(period)
            if not self._news:
                continue
            self._news = False
            try:
                await self._write_all()
                self.updates += 1
            except Exception as exc:  # noqa: BLE001 - a failed refresh must not end the server
                log.warning("--opcua: cannot update the nodes: %s", exc)

    async def _write_all(self) -> None:
        from asyncua import ua

        s = self.status
        if s is None:
            return
        snap = s.snapshot()
        values: dict[str, Any] = {
            "Counts.Frames": snap["frames"], "Counts.Classified": snap["classified"],
            "Counts.Errors": snap["errors"], "Counts.Unknown": snap["unknown"],
            "Status.State": snap["state"], "Status.Source": snap["source"], "Status.Fps": float(snap["fps"]),
            "Status.UnknownRate": float(snap["unknown_rate"] or 0.0),
            "Status.LatencyP50Ms": float(snap["latency_p50_ms"] or 0.0),
            "Status.AlarmActive": bool(snap["alarms_active"]),
            "Status.ActiveAlarms": ",".join(snap["alarms_active"]),
        }
        for label, count in snap["counts"].items():
            values.setdefault(f"Counts.{label}", count)
        latest = snap["latest"]
        if latest is not None:
            seq = s.latest.sequence if s.latest is not None else 0
            values.update({
                "Latest.Label": latest["label"] or "", "Latest.Confidence": float(latest["confidence"] or 0.0),
                "Latest.Unknown": bool(latest["unknown"]), "Latest.Uncertain": bool(latest["uncertain"]),
                "Latest.Time": datetime.fromisoformat(latest["time"]), "Latest.Frame": int(latest["frame"]),
                "Latest.File": latest["file"] or "", "Latest.Error": latest["error"] or "", "Latest.Sequence": seq,
            })
        if self._alarm is not None:
            values["Status.LastAlarm"] = json.dumps(self._alarm)
        for path, value in values.items():
            entry = self._nodes.get(path)
            if entry is not None and self._written.get(path, self) != value:
                self._written[path] = value
                node_id, vtype = entry
                await self._server.write_attribute_value(node_id, ua.DataValue(ua.Variant(value, vtype)))

    # --- the end --------------------------------------------------------------------------------------------

    def close(self) -> None:
        if self._loop is None:
            return
        if self._server is not None:
            async def stop() -> None:
                if self._updater is not None:
                    self._updater.cancel()
                self._news = True
                self._updater = None
                await self._write_all()  # the final counts and state
                await self._server.stop()

            try:
                asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10.0)
            except Exception as exc:  # noqa: BLE001 - stopping is best effort
                log.warning("--opcua: server did not stop cleanly: %s", exc)
            self._server = None
        self._stop_loop()

    def _stop_loop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        if not loop.is_running():
            loop.close()

    def summary(self) -> dict[str, int]:
        return {"updates": self.updates}
