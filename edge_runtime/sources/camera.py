"""Industrial cameras, whatever the consumer library: what a GenICam camera source shares.

A camera source is a :class:`~edge_runtime.sources.live.LiveSource` like ``--camera``: a reader thread keeps
only the newest frame (overwritten ones are counted as dropped), a lost camera is reopened with exponential
back-off (``--retries``), and every reopening sets the camera up again. :class:`CameraCapture` is one opened,
configured, acquiring camera, as the live source reads it; :class:`CameraSource` names the source after what
the camera reports once configured. The consumer-specific part is a small :class:`Device`: harvesters' in
:mod:`.genicam`, Aravis' in :mod:`.gige`.

Waiting never spins: every wait for a frame is a blocking wait in the driver with a timeout. In free run a
timeout (5 frame periods plus the exposure, at least 1 s) is a lost camera: it is reopened. With a hardware
trigger a timeout is normal (the line stopped): the camera is asked for a register; if it answers, the source
keeps waiting, otherwise it is reopened. With ``--trigger software`` the reader fires ``TriggerSoftware`` for
each frame, at ``--fps`` if given.
"""


from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edge_runtime.errors import DeviceLost, SourceError
from edge_runtime.sources.base import SourceOptions
from edge_runtime.sources.features import (
    CameraConfig,
    CameraReport,
    FeatureMap,
    configure,
    configured_rate,
)
from edge_runtime.sources.live import LiveSource
from edge_runtime.sources.pixels import pixel_format

log = logging.getLogger(__name__)

TRIGGER_WAIT_S = 1.0  # longest single wait for a triggered frame before the camera is asked whether it is there
MIN_FRAME_TIMEOUT_S = 1.0


@dataclass
class Grab:
    """One frame from a device: the converted image and the camera's frame id (None if it has none)."""

    image: np.ndarray
    frame_id: int | None = None


class Device:
    """One opened camera of a GenICam consumer (harvesters, Aravis): features, acquisition, frames.

    ``fetch`` waits (blocking in the driver) up to ``timeout_s`` and returns None when no frame came; every
    driver error is raised as :class:`DeviceLost` (or SourceError for a set-up mistake).
    """

    features: FeatureMap
    device: str = ""  # how the camera is identified in names and messages
    model: str = ""
    serial: str = ""
    close_lost_in_background = False  # closing a camera that stopped answering may wait for many time-outs
    incomplete = 0  # frames that arrived incomplete (packets lost on the wire) and were left out

    def start(self) -> None: ...

    def fetch(self, timeout_s: float) -> Grab | None: ...

    def trigger_software(self) -> None:
        self.features.execute("TriggerSoftware")

    def alive(self) -> bool: ...

    def close(self) -> None: ...


class CameraCapture:
    """An opened, configured, acquiring camera, read by the live source's reader thread (the Capture protocol).

    ``read()`` gives ``(True, image)`` for a frame, ``(True, None)`` when a triggered camera had nothing to give
    but still answers (the reader keeps waiting), ``(False, None)`` when the camera is lost (it is reopened).
    """

    may_idle = True  # (True, None) from read() means "no frame yet", not a failure (see LiveSource)

    def __init__(self, device: Device, config: CameraConfig, report: CameraReport, closing: threading.Event) -> None:
        self.device = device
        self.config = config
        self.report = report
        self._closing = closing
        self._next_trigger: float | None = None
        self.idle_waits = 0
        self.frame_ids_missed = 0
        self._last_frame_id: int | None = None
        self._opened = True
        self._lost = False
        exposure = next((v for k, v in report.features.items() if k.startswith("ExposureTime")
                         and isinstance(v, (int, float))), 0.0)
        rate = report.configured_fps
        self._frame_timeout = max(MIN_FRAME_TIMEOUT_S, (5.0 / rate if rate else 0.0) + float(exposure) / 1e6)

    def isOpened(self) -> bool:  # noqa: N802 (OpenCV's name, the Capture protocol)
        return self._opened

    def read(self) -> tuple[bool, np.ndarray | None]:
        try:
            if self.config.trigger == "software":
                if self._wait_for_trigger_slot():
                    return True, None  # closing
                self.device.trigger_software()
            wait = TRIGGER_WAIT_S if self.config.trigger == "hardware" else self._frame_timeout
            grab = self.device.fetch(wait)
            if grab is None:
                if self.config.trigger == "hardware" and self.device.alive():
                    self.idle_waits += 1
                    return True, None
                log.warning("%s: no frame within %.1f s", self.report.device, wait)
                self._lost = True
                return False, None
        except DeviceLost as exc:
            log.warning("%s: %s", self.report.device, exc)
            self._lost = True
            return False, None
        self._count_missed(grab.frame_id)
        return True, grab.image

    def release(self) -> None:
        if not self._opened:
            return
        self._opened = False
        if self._lost and self.device.close_lost_in_background:
            # every request to a camera that is gone waits for the transport's time-outs (GigE Vision: 2.5 s
            # each, about 10 s to stop and release one): the reader goes on reconnecting meanwhile
            threading.Thread(target=self.device.close, name=f"close {self.report.device}", daemon=True).start()
        else:
            self.device.close()

    def _wait_for_trigger_slot(self) -> bool:
        """With a software trigger at --fps: wait for the next slot (on the closing Event); True if closing."""
        if not self.config.fps:
            return self._closing.is_set()
        due = self._next_trigger
        now = time.monotonic()
        if due is not None and due > now and self._closing.wait(due - now):
            return True
        # the next slot on a fixed grid; after a slow frame, one interval from now (no burst to catch up)
        self._next_trigger = max(time.monotonic(), due or 0.0) + 1.0 / self.config.fps
        return False

    def _count_missed(self, frame_id: int | None) -> None:
        """Frames the camera numbered but never delivered (gaps in its frame ids; GigE Vision 1.x skips 0)."""
        if frame_id is None:
            return
        last, self._last_frame_id = self._last_frame_id, frame_id
        if last is None or frame_id <= last:
            return  # first frame, restarted camera, or a wrapped 16-bit block id
        self.frame_ids_missed += frame_id - last - 1


class CameraSource(LiveSource):
    """A GenICam camera as a live source; named, once configured, after what the camera reports.

    ``connect(closing)`` opens the device, configures it and starts acquisition; it is called for the first
    opening and for every reconnection. ``camera`` is the latest :class:`CameraReport`; :meth:`camera_summary`
    compares the frame rate achieved with the configured one.
    """

    def __init__(self, name: str, connect: Callable[[threading.Event], CameraCapture],
                 options: SourceOptions | None = None, **kwargs) -> None:
        super().__init__(name, self._connect, options, **kwargs)
        self._connector = connect
        self.camera: CameraReport | None = None
        self._capture_now: CameraCapture | None = None
        self._idle_waits = 0
        self._missed = 0
        self._incomplete = 0
        self._first_frame_at: float | None = None

    def _connect(self) -> CameraCapture:
        previous = self._capture_now
        if previous is not None:
            self._idle_waits += previous.idle_waits
            self._missed += previous.frame_ids_missed
            self._incomplete += previous.device.incomplete
        try:
            capture = self._connector(self._closing)
        except SourceError as exc:
            if self.camera is None:
                raise  # a set-up mistake at the start: the run stops before any frame (exit 2)
            raise DeviceLost(str(exc)) from exc  # these settings worked before: the camera is not back yet
        self._capture_now = capture
        if self.camera is None:
            log.info("%s: %s", capture.report.source_name(), _features_text(capture.report))
        self.camera = capture.report
        self.name = capture.report.source_name()
        return capture

    def camera_summary(self, elapsed_s: float, classified_fps: float) -> dict[str, object]:
        """The camera's settings and rates: configured, delivered by the camera, classified."""
        report = self.camera
        current = self._capture_now
        delivered = self.stats.captured / elapsed_s if elapsed_s > 0 else 0.0
        data: dict[str, object] = report.to_dict() if report else {}
        data.update({
            "delivered_fps": round(delivered, 3),
            "classified_fps": round(classified_fps, 3),
            "delivered_vs_configured": (round(delivered / report.configured_fps, 3)
                                        if report and report.configured_fps else None),
            "trigger_waits": self._idle_waits + (current.idle_waits if current else 0),
            "frames_missed": self._missed + (current.frame_ids_missed if current else 0),
            "frames_incomplete": self._incomplete + (current.device.incomplete if current else 0),
        })
        return data


def camera_summary_text(data: dict[str, object]) -> str:
    """Two lines for the run's summary: the camera's settings, and the configured vs achieved frame rate."""
    features = data.get("features") or {}
    settings = ", ".join(f"{k}={_fmt(v)}" for k, v in features.items())  # type: ignore[union-attr]
    configured = data.get("configured_fps")
    rate = (f"configured {configured:g} fps, camera delivered {data['delivered_fps']:.2f} fps "
            f"({100 * data['delivered_vs_configured']:.0f} %)" if configured and data.get("delivered_vs_configured")
            is not None else f"no configured rate ({data.get('trigger')} trigger), camera delivered "
            f"{data['delivered_fps']:.2f} fps")
    return (f"  camera {data.get('kind')}:{data.get('device')} ({data.get('model')} {data.get('serial')}), "
            f"trigger {data.get('trigger')}: {settings}\n"
            f"  frame rate: {rate}, classified {data['classified_fps']:.2f} fps; frames the camera numbered but "
            f"never delivered {data['frames_missed']} (incomplete on arrival {data['frames_incomplete']}); waits "
            f"for a trigger {data['trigger_waits']}")


def _fmt(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _features_text(report: CameraReport) -> str:
    return "set " + (", ".join(f"{k}={report.requested[k]} (read back {_fmt(report.features.get(k, '?'))})"
                               for k in report.requested) or "nothing") + \
        "; camera now " + ", ".join(f"{k}={_fmt(v)}" for k, v in report.features.items() if k not in report.requested)


def open_camera(kind: str, device: Device, config: CameraConfig, closing: threading.Event) -> CameraCapture:
    """Configure an opened device, read its settings back and start acquisition (closes it on failure)."""
    try:
        requested, read_back = configure(device.features, config, f"{kind}:{device.device}")
        if isinstance(read_back.get("PixelFormat"), str):
            pixel_format(read_back["PixelFormat"])  # a format not converted stops the run now, not at a frame
        report = CameraReport(kind, device.device, device.model, device.serial, config.trigger, requested,
                              read_back, configured_rate(device.features, config, read_back))
        capture = CameraCapture(device, config, report, closing)
        device.start()
        return capture
    except BaseException:
        device.close()
        raise


CAMERA_KINDS = ("genicam", "gige")
