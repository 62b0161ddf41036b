"""GenICam camera features: set the requested ones, read them back, and configure the trigger.

The same rules for every GenICam consumer (harvesters/GenTL in :mod:`.genicam`, Aravis in :mod:`.gige`), which
each provide a :class:`FeatureMap` over their node map. Every request is checked against the camera before it
is written, so that a mistake is one line naming what is available, raised as :class:`SourceError` before any
frame:

* a feature the camera does not have -> the close matches and the camera's writable features;
* a read-only feature, a command, a value of the wrong type -> what the feature takes;
* a number outside the camera's range (or off its increment) -> the range (and increment);
* an enumeration entry the camera does not offer -> the entries it offers.

Triggers (``--trigger``): ``free`` switches ``TriggerMode`` off (the camera runs at ``AcquisitionFrameRate``);
``software`` selects ``TriggerSource=Software`` and the source fires ``TriggerSoftware`` for each frame;
``hardware`` selects the first ``Line*`` trigger source (``--set TriggerSource=Line2`` picks another, as any
``--set`` is applied after the trigger set-up) and the camera waits for the line's encoder pulses. Where the
camera has ``TriggerSelector``, ``FrameStart`` is configured.
"""

from __future__ import annotations

import difflib
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from edge_runtime.errors import SourceError

log = logging.getLogger(__name__)

TRIGGERS = ("free", "software", "hardware")
KINDS = ("int", "float", "bool", "enum", "str", "command")
MAX_LISTED = 40  # features named in one error message
# Read back and reported whether requested or not (where the camera has them).
REPORTED = ("PixelFormat", "Width", "Height", "AcquisitionFrameRate", "ExposureTime", "ExposureTimeAbs", "Gain",
            "GainRaw")
FRAME_RATE_FEATURES = ("AcquisitionFrameRate", "AcquisitionFrameRateAbs")
FRAME_RATE_ENABLES = ("AcquisitionFrameRateEnable", "AcquisitionFrameRateEnabled")


class FeatureMap(Protocol):
    """What a GenICam node map offers; implemented per consumer (harvesters, Aravis)."""

    def kind(self, name: str) -> str | None:
        """One of :data:`KINDS`, or None when the camera does not implement ``name``."""

    def readable(self, name: str) -> bool: ...

    def writable(self, name: str) -> bool: ...

    def get(self, name: str) -> object: ...

    def set(self, name: str, value: object) -> None: ...

    def bounds(self, name: str) -> tuple[float, float]:
        """(min, max) of an int or float feature."""

    def increment(self, name: str) -> float | None: ...

    def choices(self, name: str) -> list[str]:
        """The entries of an enumeration that are available now."""

    def execute(self, name: str) -> None: ...

    def names(self) -> list[str]:
        """Every feature the camera implements (for error messages)."""


@dataclass(frozen=True)
class CameraConfig:
    """How to set up a GenICam camera: which device, which features, which trigger, the frame rate."""

    device: str | None = None  # serial number, device id, user-defined name, or index in the device list
    settings: tuple[tuple[str, str], ...] = ()  # (feature, value as text), applied in order
    trigger: str = "free"
    fps: float | None = None  # free run: AcquisitionFrameRate; software trigger: the trigger rate
    width: int | None = None
    height: int | None = None

    def __post_init__(self) -> None:
        if self.trigger not in TRIGGERS:
            raise ValueError(f"trigger must be one of {', '.join(TRIGGERS)}, got {self.trigger!r}")
        if self.fps is not None and self.trigger == "hardware":
            raise ValueError("--fps sets the camera's frame rate (free) or the software trigger rate; with a "
                             "hardware trigger the line's encoder sets the rate")


def parse_settings(items: Iterable[str] | None) -> tuple[tuple[str, str], ...]:
    """``["ExposureTime=5000", "Gain=2"]`` -> ``(("ExposureTime", "5000"), ("Gain", "2"))``; ValueError if malformed."""
    parsed = []
    for item in items or ():
        name, sep, value = str(item).partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise ValueError(f"--set takes FEATURE=VALUE (e.g. --set ExposureTime=5000), got {item!r}")
        parsed.append((name, value))
    return tuple(parsed)


@dataclass
class CameraReport:
    """What the camera was set to, as read back after configuration (the log, the summary, the records)."""

    kind: str  # "genicam" or "gige"
    device: str  # what identifies it (device id / address)
    model: str = ""
    serial: str = ""
    trigger: str = "free"
    requested: dict[str, str] = field(default_factory=dict)  # --set as given (after --fps/--width/--height)
    features: dict[str, object] = field(default_factory=dict)  # read back
    configured_fps: float | None = None  # AcquisitionFrameRate read back (free run), or the software trigger rate

    def settings_text(self) -> str:
        shown = {name: self.features.get(name, "?") for name in self.requested}
        parts = [f"{name}={_short(value)}" for name, value in shown.items()]
        return ", ".join([f"trigger {self.trigger}", *parts])

    def source_name(self) -> str:
        who = " ".join(x for x in (self.model, self.serial) if x)
        return f"{self.kind}:{self.device} ({who}; {self.settings_text()})" if who else \
            f"{self.kind}:{self.device} ({self.settings_text()})"

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "device": self.device, "model": self.model, "serial": self.serial,
                "trigger": self.trigger, "requested": dict(self.requested),
                "features": {k: _plain(v) for k, v in self.features.items()}, "configured_fps": self.configured_fps}


def _short(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _plain(value: object) -> object:
    return value if isinstance(value, (int, float, bool, str)) or value is None else str(value)


def configure(features: FeatureMap, config: CameraConfig, where: str) -> tuple[dict[str, str], dict[str, object]]:
    """Set up the trigger, then the frame rate/size and every ``--set``; returns (requested, read back).

    Raises SourceError (naming what is available) for anything the camera cannot take; ``where`` names the
    camera in messages.
    """
    requested = list(_size_and_rate(features, config))
    requested += list(config.settings)
    for name, value in _trigger_settings(features, config.trigger, where, [n for n, _ in config.settings]):
        _apply(features, name, value, where)
    for name, value in requested:
        _apply(features, name, value, where)
    reported = dict(requested)
    read_back: dict[str, object] = {}
    for name in [*reported, *REPORTED, "TriggerMode", "TriggerSource"]:
        if name in read_back or features.kind(name) in (None, "command") or not features.readable(name):
            continue
        try:
            read_back[name] = features.get(name)
        except (RuntimeError, OSError, ValueError) as exc:
            log.debug("%s: cannot read back %s: %s", where, name, exc)
    return reported, read_back


def configured_rate(features: FeatureMap, config: CameraConfig, read_back: dict[str, object]) -> float | None:
    """The frame rate the camera is set to run at: the trigger rate (software), AcquisitionFrameRate (free)."""
    if config.trigger == "software":
        return config.fps
    if config.trigger == "hardware":
        return None
    for name in FRAME_RATE_FEATURES:
        value = read_back.get(name)
        if value is None and features.kind(name) == "float" and features.readable(name):
            value = features.get(name)
        if isinstance(value, (int, float)) and value > 0:
            return float(value)
    return None


def _size_and_rate(features: FeatureMap, config: CameraConfig) -> Iterable[tuple[str, str]]:
    if config.width is not None:
        yield "Width", str(config.width)
    if config.height is not None:
        yield "Height", str(config.height)
    if config.fps is not None and config.trigger == "free":
        for enable in FRAME_RATE_ENABLES:
            if features.kind(enable) == "bool" and features.writable(enable):
                yield enable, "true"
        name = next((n for n in FRAME_RATE_FEATURES if features.kind(n) is not None), FRAME_RATE_FEATURES[0])
        fps = float(config.fps)
        yield name, str(int(fps)) if fps.is_integer() else repr(fps)


def _trigger_settings(features: FeatureMap, trigger: str, where: str,
                      overridden: Sequence[str]) -> list[tuple[str, str]]:
    if features.kind("TriggerMode") != "enum":
        if trigger == "free":
            return []
        raise SourceError(f"{where}: the camera has no TriggerMode feature, so no {trigger} trigger; use "
                          "--trigger free")
    steps: list[tuple[str, str]] = []
    if features.kind("TriggerSelector") == "enum" and "FrameStart" in features.choices("TriggerSelector"):
        steps.append(("TriggerSelector", "FrameStart"))
    if trigger == "free":
        return [*steps, ("TriggerMode", "Off")]
    sources = features.choices("TriggerSource") if features.kind("TriggerSource") == "enum" else []
    if trigger == "software":
        if "Software" not in sources:
            raise SourceError(f"{where}: TriggerSource has no 'Software' entry (it has: {', '.join(sources) or '-'}); "
                              "use --trigger hardware or free")
        steps.append(("TriggerSource", "Software"))
    elif "TriggerSource" not in overridden:
        lines = [s for s in sources if s.lower().startswith("line")] or [s for s in sources if s != "Software"]
        if not lines:
            raise SourceError(f"{where}: TriggerSource offers no hardware input (it has: {', '.join(sources) or '-'})"
                              "; use --trigger software or free")
        steps.append(("TriggerSource", lines[0]))
    return [*steps, ("TriggerMode", "On")]


def _apply(features: FeatureMap, name: str, text: str, where: str) -> None:
    value = check_value(features, name, text, where)
    try:
        features.set(name, value)
    except (RuntimeError, OSError, ValueError) as exc:  # the camera refused it after all (e.g. a locked feature)
        raise SourceError(f"{where}: cannot set {name}={text}: {_first_line(exc)}") from exc
    log.debug("%s: %s=%s", where, name, text)


def check_value(features: FeatureMap, name: str, text: str, where: str) -> object:
    """The value ``text`` as the feature's type, checked against the camera; SourceError naming what it takes."""
    kind = features.kind(name)
    if kind is None:
        raise SourceError(f"{where}: no feature {name!r}{_suggest(name, features)}; writable features: "
                          f"{_listed(_writable(features))}")
    if kind == "command":
        raise SourceError(f"{where}: {name} is a command, not a setting")
    if not features.writable(name):
        raise SourceError(f"{where}: {name} cannot be written now (read-only, or locked by another setting)")
    if kind == "enum":
        choices = features.choices(name)
        match = next((c for c in choices if c == text), None) or next(
            (c for c in choices if c.lower() == text.lower()), None)
        if match is None:
            raise SourceError(f"{where}: {name} has no entry {text!r}; it takes: {', '.join(choices)}")
        return match
    if kind == "bool":
        lowered = text.lower()
        if lowered not in ("1", "0", "true", "false", "on", "off", "yes", "no"):
            raise SourceError(f"{where}: {name} is on/off; give true or false, got {text!r}")
        return lowered in ("1", "true", "on", "yes")
    if kind == "str":
        return text
    try:
        number = float(text)
    except ValueError:
        raise SourceError(f"{where}: {name} takes a number, got {text!r}") from None
    if not math.isfinite(number):
        raise SourceError(f"{where}: {name} takes a finite number, got {text!r}")
    low, high = features.bounds(name)
    step = features.increment(name) if kind == "int" else None
    if kind == "int":
        if number != int(number):
            raise SourceError(f"{where}: {name} takes a whole number, got {text!r}")
        number = int(number)
    if not low <= number <= high:
        raise SourceError(f"{where}: {name}={text} is out of range; the camera takes {_short(low)} to "
                          f"{_short(high)}" + (f" in steps of {_short(step)}" if step and step > 1 else ""))
    if kind == "int" and step and step > 1 and (number - int(low)) % int(step):
        raise SourceError(f"{where}: {name}={text} is not a valid step; the camera takes {_short(low)} to "
                          f"{_short(high)} in steps of {_short(step)}")
    return number


def _writable(features: FeatureMap) -> list[str]:
    names = []
    for name in features.names():
        try:
            if features.kind(name) not in (None, "command") and features.writable(name):
                names.append(name)
        except (RuntimeError, OSError, ValueError):
            continue
    return sorted(set(names))


def _suggest(name: str, features: FeatureMap) -> str:
    close = difflib.get_close_matches(name, features.names(), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def _listed(names: Sequence[str]) -> str:
    if not names:
        return "none"
    if len(names) <= MAX_LISTED:
        return ", ".join(names)
    return ", ".join(names[:MAX_LISTED]) + f", ... ({len(names) - MAX_LISTED} more)"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
