"""Alarm rules (``edge-classify --alarm RULE``): conditions on the results that the line must hear about.

Rules (several ``--alarm`` options may be given):

* ``label:LABEL[:HOLD_S]``: active when a result has this label (e.g. ``label:scratches``), cleared once
  HOLD_S seconds (default 10) have passed without it.
* ``unknown:PCT/N``: active while more than PCT % of the last N classified results are ``unknown``
  (``unknown:20/100``; evaluated once N results are in), cleared when the rate is back at or below PCT %.
* ``errors:PCT/N``: the same for error records (frames or files that could not be classified).
* ``camera-lost:S``: active when no result has come for S seconds (a camera or stream that stopped
  delivering), cleared when results flow again. A source lost for good fires it too, at the end of the run.

Each rule goes active once and is cleared once (no repeat while it stays active): :class:`Alarms` calls its
listeners with one event per change, a dict with ``time``, ``rule``, ``kind``, ``state`` (``active`` or
``cleared``), ``message``, ``frame`` (the last frame index seen) and ``value``. A source lost for good
(:meth:`Alarms.source_lost`) is always reported, configured or not.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from edge_runtime.records import Result
from edge_runtime.sinks.base import Sink

log = logging.getLogger(__name__)

DEFAULT_LABEL_HOLD_S = 10.0
WATCH_INTERVAL_S = 0.2
RULE_HELP = "label:LABEL[:HOLD_S], unknown:PCT/N, errors:PCT/N or camera-lost:S"

_RATE = re.compile(r"^(?P<pct>\d+(?:\.\d+)?)%?/(?P<n>\d+)$")
_SECONDS = re.compile(r"^(?P<s>\d+(?:\.\d+)?)s?$")

Listener = Callable[[dict[str, Any]], None]


@dataclass
class AlarmRule:
    """One parsed ``--alarm`` rule and its state."""

    text: str
    kind: str  # label | unknown | errors | camera-lost
    label: str | None = None
    seconds: float = 0.0
    percent: float = 0.0
    window: int = 0
    active: bool = False
    last_seen: float | None = None
    history: deque = field(default_factory=deque)

    @classmethod
    def parse(cls, text: str, labels: Iterable[str] | None = None) -> AlarmRule:
        """A rule from its text; ValueError naming the rule and the accepted forms."""
        kind, _, arg = text.strip().partition(":")
        kind = kind.lower()
        bad = ValueError(f"--alarm '{text}': not a rule; use {RULE_HELP}")
        if kind == "label":
            label, _, hold = arg.partition(":")
            if not label:
                raise bad
            known = list(labels or [])
            if known and label not in [*known, "unknown"]:
                raise ValueError(f"--alarm '{text}': the model has no label '{label}'; use one of "
                                 f"{', '.join([*known, 'unknown'])}")
            seconds = DEFAULT_LABEL_HOLD_S
            if hold:
                match = _SECONDS.match(hold)
                if not match or not float(match["s"]) > 0:
                    raise bad
                seconds = float(match["s"])
            return cls(text, kind, label=label, seconds=seconds)
        if kind in ("unknown", "errors"):
            match = _RATE.match(arg.replace(" ", ""))
            if not match or not 0 <= float(match["pct"]) < 100 or int(match["n"]) < 1:
                raise ValueError(f"--alarm '{text}': give a percentage below 100 and a window of at least one "
                                 f"result, e.g. {kind}:20/100")
            window = int(match["n"])
            return cls(text, kind, percent=float(match["pct"]), window=window, history=deque(maxlen=window))
        if kind in ("camera-lost", "stalled"):
            match = _SECONDS.match(arg)
            if not match or not float(match["s"]) > 0:
                raise ValueError(f"--alarm '{text}': give the seconds without results, e.g. camera-lost:10")
            return cls(text, "camera-lost", seconds=float(match["s"]))
        raise bad


class Alarms(Sink):
    """Evaluates the rules on every result (and, for time-based rules, on a watcher thread) and tells the
    listeners about every change. A listener that raises is logged and does not stop the others."""

    def __init__(self, rules: Iterable[str | AlarmRule], labels: Iterable[str] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        labels = list(labels or [])
        self.rules = [r if isinstance(r, AlarmRule) else AlarmRule.parse(r, labels) for r in rules]
        self.listeners: list[Listener] = []
        self._clock = clock
        self._lock = threading.Lock()
        self._last_frame: int | None = None
        self._last_result_at = clock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.fired = 0

    def listen(self, listener: Listener) -> None:
        self.listeners.append(listener)

    def __enter__(self) -> Alarms:
        if any(r.kind in ("camera-lost", "label") for r in self.rules):
            self._thread = threading.Thread(target=self._watch, name="alarm-watch", daemon=True)
            self._thread.start()
        return self

    def emit(self, result: Result) -> None:
        if not self.rules:
            return
        now = self._clock()
        prediction = result.prediction
        events = []
        with self._lock:
            self._last_result_at = now
            self._last_frame = result.frame.index
            for rule in self.rules:
                if rule.kind == "label":
                    if prediction is not None and prediction.label == rule.label:
                        rule.last_seen = now
                        if not rule.active:
                            events.append(self._change(rule, True, f"{rule.label} seen (confidence "
                                                       f"{prediction.confidence:.1%})", prediction.confidence))
                elif rule.kind in ("unknown", "errors"):
                    if rule.kind == "unknown" and prediction is None:
                        continue  # the unknown rate is over classified results
                    hit = prediction is None if rule.kind == "errors" else bool(prediction.unknown)
                    rule.history.append(hit)
                    if len(rule.history) < rule.window:
                        continue
                    rate = 100.0 * sum(rule.history) / len(rule.history)
                    what = "unknown" if rule.kind == "unknown" else "errors"
                    if rate > rule.percent and not rule.active:
                        events.append(self._change(rule, True, f"{rate:.0f} % {what} over the last {rule.window} "
                                                   f"results (limit {rule.percent:g} %)", round(rate, 2)))
                    elif rate <= rule.percent and rule.active:
                        events.append(self._change(rule, False, f"{rate:.0f} % {what} over the last "
                                                   f"{rule.window} results", round(rate, 2)))
                elif rule.kind == "camera-lost" and rule.active:
                    events.append(self._change(rule, False, "results flow again", 0.0))
        self._tell(events)

    def source_lost(self, reason: str) -> None:
        """The source is gone for good (the run ends): an alarm whether or not a rule asked for it."""
        rule = next((r for r in self.rules if r.kind == "camera-lost"), None)
        with self._lock:
            if rule is None:
                rule = AlarmRule("camera-lost", "camera-lost")
            event = self._change(rule, True, f"source lost: {reason}", None) if not rule.active else None
        if event is None:  # already active: report the final reason anyway
            event = self._event(rule, "active", f"source lost: {reason}", None)
        self._tell([event])

    def _watch(self) -> None:
        while not self._stop.wait(WATCH_INTERVAL_S):
            now = self._clock()
            events = []
            with self._lock:
                for rule in self.rules:
                    if rule.kind == "camera-lost" and not rule.active and now - self._last_result_at > rule.seconds:
                        events.append(self._change(rule, True, f"no result for {now - self._last_result_at:.0f} s",
                                                   round(now - self._last_result_at, 1)))
                    elif (rule.kind == "label" and rule.active and rule.last_seen is not None
                          and now - rule.last_seen > rule.seconds):
                        events.append(self._change(rule, False, f"{rule.label} not seen for {rule.seconds:g} s",
                                                   None))
            self._tell(events)

    def _change(self, rule: AlarmRule, active: bool, message: str, value: Any) -> dict[str, Any]:
        rule.active = active
        return self._event(rule, "active" if active else "cleared", message, value)

    def _event(self, rule: AlarmRule, state: str, message: str, value: Any) -> dict[str, Any]:
        if state == "active":
            self.fired += 1
        return {
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "rule": rule.text,
            "kind": rule.kind,
            "state": state,
            "message": message,
            "frame": self._last_frame,
            "value": value,
        }

    def _tell(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            (log.warning if event["state"] == "active" else log.info)("alarm %s %s: %s", event["rule"],
                                                                      event["state"], event["message"])
            for listener in self.listeners:
                try:
                    listener(event)
                except Exception as exc:  # noqa: BLE001 - one output's failure must not silence the others
                    log.warning("alarm output failed: %s", exc)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
