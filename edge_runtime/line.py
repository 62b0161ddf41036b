"""The outputs that bring results to the line while the run goes on: MQTT, OPC UA, the operator page with
``/metrics``, alarm rules and systemd's notifications. :func:`edge_runtime.cli.run` enters one
:class:`LineOutputs`; it is a no-op when none of them is asked for (and the process is not a systemd service).

Every server binds and every broker connection is tried on ``__enter__``, before the first frame: a taken port
or refused credentials are setup errors (exit 2), a broker that is down only a warning.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runtime.alarms import Alarms
from edge_runtime.records import ModelInfo
from edge_runtime.sdnotify import ServiceNotifier
from edge_runtime.sinks.base import Sink
from edge_runtime.status import LiveStatus

log = logging.getLogger(__name__)


@dataclass
class LineOptions:
    """run()'s line options, as given."""

    mqtt: str | None = None
    mqtt_queue: int = 10_000
    mqtt_tls_ca: str | Path | None = None
    mqtt_tls_cert: str | Path | None = None
    mqtt_tls_key: str | Path | None = None
    alarms: Sequence[str] | None = None
    opcua: str | None = None
    serve: str | None = None

    def __post_init__(self) -> None:
        """Check every option's form (ValueError naming it) before the model is loaded."""
        from edge_runtime.alarms import AlarmRule

        for rule in self.alarms or []:
            AlarmRule.parse(rule)
        if self.mqtt is not None:
            from edge_runtime.sinks.mqtt import MqttTarget

            MqttTarget.parse(self.mqtt)
        if self.mqtt_queue < 1:
            raise ValueError(f"--mqtt-queue must be >= 1, got {self.mqtt_queue}")
        if self.serve is not None:
            from edge_runtime.sinks.web import parse_serve

            parse_serve(self.serve)
        if self.opcua is not None:
            from edge_runtime.sinks.opcua import parse_endpoint

            parse_endpoint(self.opcua)


class LineOutputs:
    """Context manager: builds and enters the requested outputs; ``sinks`` go to the pipeline."""

    def __init__(self, options: LineOptions, model: ModelInfo, labels: Sequence[str]) -> None:
        self.options = options
        self.model = model
        self.labels = list(labels)
        self.sinks: list[Sink] = []
        self.status: LiveStatus | None = None
        self.alarms: Alarms | None = None
        self.notifier: ServiceNotifier | None = None
        self._outputs: dict[str, Any] = {}
        self._stack = ExitStack()
        self._alarm_rules = list(options.alarms or [])
        if self._alarm_rules:
            Alarms(self._alarm_rules, self.labels)  # ValueError for a label the model does not have

    @property
    def enabled(self) -> bool:
        o = self.options
        return (any(x is not None for x in (o.mqtt, o.opcua, o.serve)) or bool(self._alarm_rules)
                or bool(os.environ.get("NOTIFY_SOCKET")))

    def __enter__(self) -> LineOutputs:
        if not self.enabled:
            return self
        o, stack = self.options, self._stack
        try:
            self.status = stack.enter_context(LiveStatus(self.model, self.labels))
            self.alarms = stack.enter_context(Alarms(self._alarm_rules, self.labels))
            self.alarms.listen(self.status.add_alarm)
            self.sinks = [self.status, self.alarms]
            if o.mqtt is not None:
                from edge_runtime.sinks.mqtt import MqttSink

                mqtt = stack.enter_context(MqttSink(o.mqtt, self.status, queue_size=o.mqtt_queue,
                                                    tls_ca=o.mqtt_tls_ca, tls_cert=o.mqtt_tls_cert,
                                                    tls_key=o.mqtt_tls_key))
                self.alarms.listen(mqtt.alarm)
                self.sinks.append(mqtt)
                self._outputs["mqtt"] = mqtt
            if o.opcua is not None:
                from edge_runtime.sinks.opcua import OpcUaServer

                opcua = stack.enter_context(OpcUaServer(o.opcua, self.status))
                self.alarms.listen(opcua.alarm)
                self.sinks.append(opcua)
                self._outputs["opcua"] = opcua
            if o.serve is not None:
                from edge_runtime.sinks.web import WebServer

                self.sinks.append(stack.enter_context(WebServer(o.serve, self.status)))
            self.notifier = stack.enter_context(ServiceNotifier(self._status_line))
            if self.notifier.enabled:
                self.sinks.append(self.notifier)
        except BaseException:
            stack.close()
            raise
        return self

    def started(self, source: Any) -> None:
        """The source is open: its name and counters go into the status; systemd hears READY=1."""
        if self.status is None:
            return
        self.status.source = source.name
        self.status.source_stats = source.stats
        mqtt = self._outputs.get("mqtt")
        if mqtt is not None:
            mqtt.publish_status()  # the retained status names the source from the start
        if self.notifier is not None:
            self.notifier.ready(f"classifying {source.name}")

    def finished(self, summary: Any) -> None:
        """The loop has ended (outputs still open): a lost source raises its alarm, systemd hears STOPPING=1."""
        if self.status is None:
            return
        if summary.failed and str(summary.stop_reason).startswith("source failed") and self.alarms is not None:
            self.alarms.source_lost(str(summary.stop_reason).removeprefix("source failed: "))
        self.status.stop(summary.stop_reason)
        if self.notifier is not None:
            self.notifier.stopping(summary.stop_reason)

    def summary(self) -> dict[str, dict[str, Any]]:
        """Each output's final counters (call after exit, when queues have been flushed)."""
        return {name: output.summary() for name, output in self._outputs.items()}

    def _status_line(self) -> str:
        s = self.status
        if s is None:
            return ""
        return (f"{s.frames} frames ({s.errors} errors, {s.unknown} unknown), {s.fps():.1f} fps"
                + (f"; alarms: {', '.join(sorted(s.active_alarms))}" if s.active_alarms else ""))

    def __exit__(self, *exc_info: object) -> None:
        if self.status is not None and self.status.state == "running":
            self.status.stop("stopped")
        self._stack.close()
