"""``/metrics``: the run's :class:`~edge_runtime.status.LiveStatus` in Prometheus' text format.

Built at scrape time from the live counters (nothing is updated per frame for it). Families (prefix
``edge_classify_``): ``frames_total``, ``classified_total``, ``errors_total``, ``unknown_total``,
``uncertain_total``, ``results_total{label}``, ``latency_seconds`` (histogram, capture -> result), ``fps``,
``unknown_rate``, ``source_dropped_total``, ``source_reconnects_total``, ``alarms_total{rule}``,
``alarm_active{rule}``, ``<output>_<counter>`` for the outputs' counters (``mqtt_published_total``,
``mqtt_queued``, ``mqtt_dropped_total``, ``mqtt_reconnects_total``, ...), ``up`` and ``info{model, engine, ...}``.
"""

from __future__ import annotations

from typing import Any

from edge_runtime.status import LATENCY_BUCKETS_S, LiveStatus

PREFIX = "edge_classify"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
GAUGE_COUNTERS = {"queued", "connected"}  # output counters that go up and down


class StatusCollector:
    """A prometheus_client collector over a LiveStatus."""

    def __init__(self, status: LiveStatus) -> None:
        self.status = status

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        s = self.status
        snapshot = s.snapshot()
        for name, key, text in (("frames", "frames", "results written (classified + errors)"),
                                ("classified", "classified", "frames or files classified"),
                                ("errors", "errors", "frames or files that could not be classified"),
                                ("unknown", "unknown", "results unlike every training image"),
                                ("uncertain", "uncertain", "results below --min-confidence")):
            yield CounterMetricFamily(f"{PREFIX}_{name}", text, value=snapshot[key])
        by_label = CounterMetricFamily(f"{PREFIX}_results", "results per label", labels=["label"])
        for label, count in snapshot["counts"].items():
            by_label.add_metric([label], count)
        yield by_label
        with s._lock:  # noqa: SLF001 - one consistent copy of the histogram
            buckets, total_s = list(s.latency_buckets), s.latency_sum_s
        cumulative, running = [], 0
        for bound, count in zip([*map(str, LATENCY_BUCKETS_S), "+Inf"], buckets):
            running += count
            cumulative.append((bound, running))
        yield HistogramMetricFamily(f"{PREFIX}_latency_seconds", "capture (or file read) to result",
                                    buckets=cumulative, sum_value=total_s)
        yield GaugeMetricFamily(f"{PREFIX}_fps", "results per second over the last 10 s", value=snapshot["fps"])
        if snapshot["unknown_rate"] is not None:
            yield GaugeMetricFamily(f"{PREFIX}_unknown_rate", "share of unknown among the last classified results",
                                    value=snapshot["unknown_rate"])
        yield CounterMetricFamily(f"{PREFIX}_source_dropped", "frames the source dropped (newest frame kept)",
                                  value=snapshot.get("source_dropped", 0))
        yield CounterMetricFamily(f"{PREFIX}_source_reconnects", "camera/stream reconnects",
                                  value=snapshot.get("source_reconnects", 0))
        with s._lock:  # noqa: SLF001
            totals, active = dict(s.alarms_total), set(s.active_alarms)
        fired = CounterMetricFamily(f"{PREFIX}_alarms", "alarms that went active, per rule", labels=["rule"])
        state = GaugeMetricFamily(f"{PREFIX}_alarm_active", "1 while the rule's alarm is active", labels=["rule"])
        for rule, count in totals.items():
            fired.add_metric([rule], count)
            state.add_metric([rule], int(rule in active))
        yield fired
        yield state
        for output, counters in s.counters().items():
            for key, value in counters.items():
                if not isinstance(value, (int, float)):
                    continue
                name = f"{PREFIX}_{output}_{key}"
                if key in GAUGE_COUNTERS:
                    yield GaugeMetricFamily(name, f"{output}: {key}", value=value)
                else:
                    yield CounterMetricFamily(name, f"{output}: {key}", value=value)
        yield GaugeMetricFamily(f"{PREFIX}_up", "1 while the classification loop runs",
                                value=int(snapshot["state"] == "running"))
        info = GaugeMetricFamily(f"{PREFIX}_info", "model and engine in use",
                                 labels=["model", "engine", "model_sha256", "source", "host"])
        info.add_metric([s.model.name, s.model.engine, s.model.sha256, s.source, s.host], 1)
        yield info


def render(status: LiveStatus) -> bytes:
    """The Prometheus text exposition of ``status``."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(status))
    return generate_latest(registry)
