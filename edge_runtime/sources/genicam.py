"""GenICam cameras (GigE Vision, USB3 Vision, ...) through the camera maker's GenTL producer and ``harvesters``.

    edge-classify --genicam /opt/vendor/lib/producer.cti --device 22012345 --set ExposureTime=800 --trigger hardware

A camera source is a :class:`~edge_runtime.sources.live.LiveSource` like ``--camera``: a reader thread keeps
only the newest frame (overwritten ones are counted as dropped), a lost camera is reopened with exponential
back-off (``--retries``), and every reopening sets the camera up again. What is common to every GenICam
consumer lives here: :class:`CameraCapture` (one opened, configured, acquiring camera, as the live source
reads it) and :class:`CameraSource` (names the source after what the camera reports once configured). The
consumer-specific part is a small :class:`Device`: :class:`HarvestersDevice` here, the Aravis one in
:mod:`.gige`.

Waiting never spins: every wait for a frame is a blocking wait in the driver with a timeout. In free run a
timeout (5 frame periods plus the exposure, at least 1 s) is a lost camera: it is reopened. With a hardware
trigger a timeout is normal (the line stopped): the camera is asked for a register; if it answers, the source
keeps waiting, otherwise it is reopened. With ``--trigger software`` the reader fires ``TriggerSoftware`` for
each frame, at ``--fps`` if given.

The producer: ``--genicam PATH`` (a ``.cti`` file or a folder of them), or every ``.cti`` in the folders of
``GENICAM_GENTL64_PATH`` (``GENICAM_GENTL32_PATH`` on 32-bit Pythons). The device: ``--device`` matches a serial
number, a device id or a user-defined name, else an index in the device list (default: the first device).
"""

from __future__ import annotations

import ctypes
import glob
import logging
import os
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edge_runtime.errors import SourceError
from edge_runtime.sources.base import SourceOptions, StopCheck, never_stop
from edge_runtime.sources.features import (
    CameraConfig,
    CameraReport,
    FeatureMap,
    configure,
    configured_rate,
)
from edge_runtime.sources.live import LiveSource
from edge_runtime.sources.pixels import pixel_format, to_image

log = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "steel-edge-inspect[genicam]"'
TRIGGER_WAIT_S = 1.0  # longest single wait for a triggered frame before the camera is asked whether it is there
MIN_FRAME_TIMEOUT_S = 1.0
GENTL_PATH_VARIABLE = "GENICAM_GENTL64_PATH" if struct.calcsize("P") == 8 else "GENICAM_GENTL32_PATH"


class DeviceLost(RuntimeError):
    """The camera stopped answering, or cannot be found now (reopened with back-off, like a lost stream)."""


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


# --- harvesters (GenTL producers) ----------------------------------------------------------------------------


def find_producers(producer: str | os.PathLike | None) -> list[str]:
    """The ``.cti`` files to load: ``producer`` (a file or folder), else those in $GENICAM_GENTL64_PATH's folders.

    Raises SourceError naming where it looked (and the simulated producer of the genicam package, if installed).
    """
    if producer not in (None, ""):
        path = os.path.abspath(os.fspath(producer))  # type: ignore[arg-type]
        if os.path.isfile(path):
            return [path]
        if os.path.isdir(path):
            found = sorted(glob.glob(os.path.join(path, "*.cti")))
            if found:
                return found
            raise SourceError(f"genicam: no .cti GenTL producer in folder '{path}'{_simulator_hint()}")
        raise SourceError(f"genicam: GenTL producer '{path}' does not exist; give the camera maker's .cti file"
                          f"{_simulator_hint()}")
    folders = [f for f in os.environ.get(GENTL_PATH_VARIABLE, "").split(os.pathsep) if f]
    found = sorted({p for folder in folders for p in glob.glob(os.path.join(folder, "*.cti"))})
    if found:
        return found
    where = f"in {GENTL_PATH_VARIABLE} ({os.pathsep.join(folders)})" if folders else f"({GENTL_PATH_VARIABLE} is unset)"
    raise SourceError(f"genicam: no GenTL producer: --genicam names no .cti file and there is none {where}; install "
                      f"the camera maker's SDK or give its .cti file{_simulator_hint()}")


def simulated_producer() -> str | None:
    """The simulated GenTL producer shipped in the ``genicam`` wheel (viky.cti), if that package is installed."""
    import importlib.util

    spec = importlib.util.find_spec("genicam")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = os.path.join(folder, "viky.cti")
        if os.path.isfile(candidate):
            return candidate
    return None


def _simulator_hint() -> str:
    simulated = simulated_producer()
    return f" (a simulated camera for trying things out: {simulated})" if simulated else ""


def _harvesters():
    try:
        from genicam import genapi, gentl
        from harvesters.core import Harvester
    except ImportError as exc:
        raise SourceError(f"--genicam needs the 'harvesters' and 'genicam' packages ({exc.name} is missing); "
                          f"install them with {INSTALL_HINT}") from None
    return Harvester, genapi, gentl


class HarvestersFeatures:
    """:class:`~edge_runtime.sources.features.FeatureMap` over a GenApi node map (harvesters/genicam)."""

    def __init__(self, node_map, genapi) -> None:
        self._map = node_map
        self._genapi = genapi
        interface = genapi.EInterfaceType
        self._kinds = {interface.intfIInteger: "int", interface.intfIFloat: "float",
                       interface.intfIBoolean: "bool", interface.intfIEnumeration: "enum",
                       interface.intfIString: "str", interface.intfICommand: "command"}

    def _node(self, name: str):
        if not self._map.has_node(name):
            return None
        return self._map.get_node(name)

    def kind(self, name: str) -> str | None:
        node = self._node(name)
        if node is None or not node.node.is_feature():
            return None
        if self._access(node) == self._genapi.EAccessMode.NI:
            return None
        return self._kinds.get(node.node.principal_interface_type)

    def _access(self, node):
        return node.node.get_access_mode()

    def readable(self, name: str) -> bool:
        node = self._node(name)
        return node is not None and self._access(node) in (self._genapi.EAccessMode.RO, self._genapi.EAccessMode.RW)

    def writable(self, name: str) -> bool:
        node = self._node(name)
        return node is not None and self._access(node) in (self._genapi.EAccessMode.WO, self._genapi.EAccessMode.RW)

    def get(self, name: str) -> object:
        return self._call(lambda: self._map.get_node(name).value)

    def set(self, name: str, value: object) -> None:
        def write() -> None:
            self._map.get_node(name).value = value

        self._call(write)

    def bounds(self, name: str) -> tuple[float, float]:
        node = self._map.get_node(name)
        return self._call(lambda: (node.min, node.max))  # type: ignore[return-value]

    def increment(self, name: str) -> float | None:
        node = self._map.get_node(name)
        if self.kind(name) == "float" and not node.has_inc():
            return None
        return self._call(lambda: node.inc)  # type: ignore[return-value]

    def choices(self, name: str) -> list[str]:
        return list(self._call(lambda: self._map.get_node(name).symbolics))  # type: ignore[arg-type]

    def execute(self, name: str) -> None:
        self._call(lambda: self._map.get_node(name).execute())

    def names(self) -> list[str]:
        return [n.node.name for n in self._map.nodes if n.node.is_feature()]

    def _call(self, action: Callable[[], object]) -> object:
        try:
            return action()
        except self._genapi.GenericException as exc:  # the camera's own refusal, or a lost connection
            raise DeviceLost(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__) from exc


class HarvestersDevice(Device):
    """A camera opened through a GenTL producer with harvesters."""

    def __init__(self, harvester, acquirer, genapi, gentl, info) -> None:
        self._acquirer = acquirer
        self._gentl = gentl
        self.features = HarvestersFeatures(acquirer.remote_device.node_map, genapi)
        self.device = _info(info, "id_") or _info(info, "serial_number") or "?"
        self.model = f"{_info(info, 'vendor')} {_info(info, 'model')}".strip()
        self.serial = _info(info, "serial_number")

    def start(self) -> None:
        try:
            self._acquirer.start()
        except self._gentl.GenericException as exc:
            raise DeviceLost(f"cannot start acquisition: {exc}") from exc

    def fetch(self, timeout_s: float) -> Grab | None:
        # harvesters waits for the producer's new-buffer event in slices of this many ms (default 1: a thousand
        # wake-ups a second while a triggered camera waits); one slice as long as the whole wait blocks instead.
        wait_ms = max(1, round(timeout_s * 1000))
        if self._acquirer.timeout_period_on_update_event_data_call != wait_ms:
            self._acquirer.timeout_period_on_update_event_data_call = wait_ms
        try:
            with self._acquirer.fetch(timeout=timeout_s) as buffer:
                component = buffer.payload.components[0]
                fmt = pixel_format(component.data_format)
                image = to_image(component.data, fmt, component.width, component.height)
                frame_id = _frame_id(buffer)
        except self._gentl.TimeoutException:
            return None
        except (self._gentl.GenericException, self.features._genapi.GenericException) as exc:
            raise DeviceLost(f"fetching a frame failed: {exc}") from exc
        return Grab(image, frame_id)

    def alive(self) -> bool:
        try:
            self.features.get("Width")
            return True
        except DeviceLost:
            return False

    def close(self) -> None:
        acquirer, self._acquirer = self._acquirer, None
        if acquirer is None:
            return
        for step in (acquirer.stop, acquirer.destroy):
            try:
                step()
            except Exception as exc:  # noqa: BLE001 (a lost camera fails in many ways; closing goes on)
                log.debug("closing the camera: %s", exc)


def _info(info, attribute: str) -> str:
    """A device-list entry's attribute as text; "" where the producer does not provide it (it raises then)."""
    try:
        return str(getattr(info, attribute) or "")
    except Exception:  # noqa: BLE001 (GenTL's NotAvailableException and kin)
        return ""


def _frame_id(buffer) -> int | None:
    try:
        return int(buffer.frame_id)
    except Exception:  # noqa: BLE001 (optional information; producers without it raise their own errors)
        return None


class HarvestersConnector:
    """Opens the configured device through the producers; kept for reconnections (the producers stay loaded)."""

    def __init__(self, producers: list[str], config: CameraConfig) -> None:
        Harvester, self._genapi, self._gentl = _harvesters()
        self.producers = producers
        self.config = config
        self._harvester = Harvester()
        for path in producers:
            try:
                ctypes.CDLL(path)  # what harvesters' own check does, without its traceback in the log
            except OSError as exc:
                self.close()
                raise SourceError(f"genicam: '{path}' is not a loadable GenTL producer ({exc}); give the camera "
                                  f"maker's .cti file for this machine's architecture{_simulator_hint()}") from None
            self._harvester.add_file(path, check_existence=True, check_validity=False)

    def __call__(self, closing: threading.Event) -> CameraCapture:
        try:
            self._harvester.update()
        except self._gentl.GenericException as exc:
            raise DeviceLost(f"listing the devices failed: {exc}") from exc
        devices = list(self._harvester.device_info_list)
        info = _pick_device(devices, self.config.device, self.where)
        try:
            acquirer = self._harvester.create(devices.index(info))
        except (self._gentl.GenericException, self._genapi.GenericException, ValueError) as exc:
            raise DeviceLost(f"{self.where}: cannot open device {_info(info, 'id_')}: {exc}") from exc
        device = HarvestersDevice(self._harvester, acquirer, self._genapi, self._gentl, info)
        return open_camera("genicam", device, self.config, closing)

    @property
    def where(self) -> str:
        return "genicam:" + ",".join(os.path.basename(p) for p in self.producers)

    def close(self) -> None:
        try:
            self._harvester.reset()
        except Exception as exc:  # noqa: BLE001 (unloading a producer must not hide the run's own outcome)
            log.debug("unloading the GenTL producers: %s", exc)


def _pick_device(devices: list, wanted: str | None, where: str):
    if not devices:
        raise DeviceLost(f"{where}: no camera found (check the cable/network, and that no other program holds it)")
    if wanted in (None, ""):
        return devices[0]
    for attribute in ("serial_number", "id_", "user_defined_name"):
        for info in devices:
            if _info(info, attribute) == wanted:
                return info
    if wanted.isdigit() and int(wanted) < len(devices):
        return devices[int(wanted)]
    listed = "; ".join(f"{i}: {_info(d, 'id_')} (serial {_info(d, 'serial_number')}, {_info(d, 'vendor')} "
                       f"{_info(d, 'model')})" for i, d in enumerate(devices))
    raise DeviceLost(f"{where}: no device {wanted!r}; available: {listed}")


class GenICamSource(CameraSource):
    """``--genicam``: a camera through GenTL producers and harvesters (see module docstring)."""

    def __init__(self, connector: HarvestersConnector, options: SourceOptions | None = None, **kwargs) -> None:
        super().__init__(connector.where, connector, options, **kwargs)
        self._harvesters = connector

    def __enter__(self) -> GenICamSource:
        try:
            super().__enter__()
        except BaseException:
            self._harvesters.close()
            raise
        return self

    def close(self) -> None:
        super().close()
        thread = self._thread
        if thread is None or not thread.is_alive():
            self._harvesters.close()


def genicam_source(producer: str | os.PathLike | None, config: CameraConfig, options: SourceOptions | None = None,
                   should_stop: StopCheck = never_stop) -> GenICamSource:
    """The source for ``--genicam [PRODUCER]``; the producers are found and loaded now (SourceError if none)."""
    producers = find_producers(producer)
    return GenICamSource(HarvestersConnector(producers, config), options, should_stop=should_stop)


CAMERA_KINDS = ("genicam", "gige")


def open_camera_source(kind: str, spec: object, options: SourceOptions | None = None,
                       config: CameraConfig | None = None, should_stop: StopCheck = never_stop) -> CameraSource:
    """``kind`` "genicam" (``spec``: producer .cti, folder, or None for $GENICAM_GENTL64_PATH) or "gige"
    (``spec``: the camera's address), set up by ``config``."""
    config = config or CameraConfig()
    if kind == "genicam":
        return genicam_source(None if spec in (None, "") else str(spec), config, options, should_stop)
    if kind == "gige":
        from edge_runtime.sources.gige import gige_source

        return gige_source(str(spec or ""), config, options, should_stop)
    raise ValueError(f"unknown camera kind {kind!r}; use {' or '.join(CAMERA_KINDS)}")
