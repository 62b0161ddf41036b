"""GigE Vision (and USB3 Vision) cameras through Aravis, without a camera maker's GenTL producer.

    edge-classify --gige 192.168.10.20 --set ExposureTimeAbs=800 --trigger hardware

``ADDRESS`` is the camera's IP address, or an Aravis device id (``arv-tool-0.8`` lists them). Everything else
(newest-frame reader, reconnection, features, triggers, pixel formats) is the GenICam camera source of
:mod:`.genicam`; this module only adapts Aravis.

Aravis is reached through GObject introspection: the ``Aravis-0.8`` typelib (Debian: ``gir1.2-aravis-0.8``) and
PyGObject's ``gi`` module. PyGObject has no Linux wheel on PyPI; :func:`load_aravis` uses a ``gi`` importable in
this Python if there is one, and otherwise Debian's ``python3-gi`` from ``/usr/lib/python3/dist-packages`` --
only the ``gi`` package itself is loaded from there (not the rest of the system's packages), and only when it
was built for this Python's version (Debian 12's is for CPython 3.11). Anything missing is one line naming the
Debian packages to install.
"""

from __future__ import annotations

import importlib.machinery
import ipaddress
import importlib.util
import logging
import os
import sys
import threading
from collections.abc import Callable

from edge_runtime.errors import DeviceLost, SourceError
from edge_runtime.sources.base import SourceOptions, StopCheck, never_stop
from edge_runtime.sources.features import CameraConfig
from edge_runtime.sources.camera import CameraCapture, CameraSource, Device, Grab, open_camera
from edge_runtime.sources.pixels import pixel_format, to_image

log = logging.getLogger(__name__)

DEBIAN_PACKAGES = ("gir1.2-aravis-0.8", "python3-gi")
SYSTEM_SITE = "/usr/lib/python3/dist-packages"
BUFFERS = 4  # frame buffers queued in the stream
# Looked up by name for error messages, in case the camera's category tree leaves them out.
COMMON_FEATURES = ("Width", "Height", "OffsetX", "OffsetY", "PixelFormat", "ExposureTime", "ExposureTimeAbs",
                   "ExposureTimeRaw", "ExposureAuto", "Gain", "GainRaw", "GainAbs", "GainAuto", "GainSelector",
                   "BlackLevel", "Gamma", "AcquisitionMode", "AcquisitionFrameRate", "AcquisitionFrameRateAbs",
                   "AcquisitionFrameRateEnable", "TriggerSelector", "TriggerMode", "TriggerSource",
                   "TriggerActivation", "TriggerDelay", "LineSelector", "ReverseX", "ReverseY", "BinningHorizontal",
                   "BinningVertical")
INCOMPLETE_LIMIT = 100  # incomplete buffers in a row within one fetch before the camera counts as lost

_lock = threading.Lock()
_aravis = None


def load_aravis():
    """The Aravis module (``gi.repository.Aravis`` 0.8) and GLib; SourceError naming what to install if absent."""
    global _aravis
    with _lock:
        if _aravis is None:
            _aravis = _import_aravis()
    return _aravis


def _import_aravis():
    hint = f"apt-get install {' '.join(DEBIAN_PACKAGES)}"
    gi = _import_gi()
    if gi is None:
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        raise SourceError(f"--gige needs Aravis' Python bindings (PyGObject 'gi' for Python {version}); install "
                          f"the Debian packages {', '.join(DEBIAN_PACKAGES)} ({hint}), or PyGObject in this "
                          "environment (pip install PyGObject, which builds against libgirepository1.0-dev)")
    try:
        gi.require_version("Aravis", "0.8")
        from gi.repository import Aravis, GLib
    except (ValueError, ImportError) as exc:
        raise SourceError(f"--gige needs the Aravis 0.8 typelib ({exc}); install the Debian package "
                          f"gir1.2-aravis-0.8 ({hint})") from None
    return Aravis, GLib


def _import_gi():
    try:
        import gi

        return gi
    except ImportError:
        pass
    spec = importlib.machinery.PathFinder.find_spec("gi", [SYSTEM_SITE])
    if spec is None or spec.loader is None or not spec.submodule_search_locations:
        return None
    folder = spec.submodule_search_locations[0]
    suffixes = importlib.machinery.EXTENSION_SUFFIXES
    if not any(os.path.exists(os.path.join(folder, "_gi" + suffix)) for suffix in suffixes):
        log.debug("%s has no _gi extension built for this Python (%s)", folder, suffixes[0])
        return None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gi"] = module
    try:
        spec.loader.exec_module(module)
    except ImportError as exc:
        del sys.modules["gi"]
        log.debug("the system's gi does not import here: %s", exc)
        return None
    log.debug("using the system's PyGObject from %s", folder)
    return module


class AravisFeatures:
    """:class:`~edge_runtime.sources.features.FeatureMap` over an Aravis device's GenICam node map."""

    def __init__(self, device, aravis, glib) -> None:
        self._device = device
        self._aravis = aravis
        self._glib = glib
        self._types = [(aravis.GcCommand, "command"), (aravis.GcEnumeration, "enum"), (aravis.GcBoolean, "bool"),
                       (aravis.GcFloat, "float"), (aravis.GcInteger, "int"), (aravis.GcString, "str")]

    def detach(self) -> None:
        """Drop the device (see AravisDevice.close); the map is unusable afterwards."""
        self._device = None

    def _node(self, name: str):
        node = self._device.get_feature(name)
        if node is None or not isinstance(node, self._aravis.GcFeatureNode):
            return None
        return node

    def kind(self, name: str) -> str | None:
        node = self._node(name)
        if node is None or not self._call(lambda: self._device.is_feature_implemented(name)):
            return None
        return next((kind for cls, kind in self._types if isinstance(node, cls)), None)

    def _mode(self, name: str):
        node = self._node(name)  # (the device's get_feature_access_mode answers WO for RW features in 0.8.26)
        return None if node is None else self._call(node.get_actual_access_mode)

    def readable(self, name: str) -> bool:
        mode = self._aravis.GcAccessMode
        return self._node(name) is not None and self._mode(name) in (mode.RO, mode.RW)

    def writable(self, name: str) -> bool:
        mode = self._aravis.GcAccessMode
        return self._node(name) is not None and self._mode(name) in (mode.WO, mode.RW) and bool(
            self._call(lambda: self._device.is_feature_available(name)))

    def get(self, name: str) -> object:
        kind = self.kind(name)
        getter = {"int": self._device.get_integer_feature_value, "float": self._device.get_float_feature_value,
                  "bool": self._device.get_boolean_feature_value}.get(kind, self._device.get_string_feature_value)
        return self._call(lambda: getter(name))

    def set(self, name: str, value: object) -> None:
        kind = self.kind(name)
        setter: Callable[[str, object], None] = {
            "int": self._device.set_integer_feature_value, "float": self._device.set_float_feature_value,
            "bool": self._device.set_boolean_feature_value}.get(kind, self._device.set_string_feature_value)
        self._call(lambda: setter(name, value))

    def bounds(self, name: str) -> tuple[float, float]:
        if self.kind(name) == "int":
            return self._call(lambda: self._device.get_integer_feature_bounds(name))  # type: ignore[return-value]
        return self._call(lambda: self._device.get_float_feature_bounds(name))  # type: ignore[return-value]

    def increment(self, name: str) -> float | None:
        if self.kind(name) == "int":
            return self._call(lambda: self._device.get_integer_feature_increment(name))  # type: ignore[return-value]
        return None

    def choices(self, name: str) -> list[str]:
        return list(self._call(lambda: self._device.dup_available_enumeration_feature_values_as_strings(name)) or [])

    def execute(self, name: str) -> None:
        self._call(lambda: self._device.execute_command(name))

    def names(self) -> list[str]:
        """The features of the camera's category tree (what arv-tool-0.8 lists), plus the common SFNC features
        it has outside the tree (some cameras leave e.g. GainRaw uncategorised)."""
        names = set(self._categorised())
        names.update(name for name in COMMON_FEATURES if self._node(name) is not None)
        return sorted(name for name in names if self.kind(name) is not None)

    def _categorised(self) -> list[str]:
        genicam = self._device.get_genicam()
        found: list[str] = []
        pending, seen = ["Root"], set()
        while pending:  # the category tree, breadth first
            name = pending.pop(0)
            if name in seen:
                continue
            seen.add(name)
            node = genicam.get_node(name)
            if isinstance(node, self._aravis.GcCategory):
                pending.extend(node.get_features() or [])
            elif node is not None:
                found.append(name)
        return found

    def _call(self, action: Callable[[], object]) -> object:
        try:
            return action()
        except self._glib.Error as exc:
            raise DeviceLost(exc.message) from exc



class AravisDevice(Device):
    """A camera opened with Aravis: a stream with a few queued buffers, frames popped with a timeout."""

    close_lost_in_background = True  # each GVCP request to a dead camera takes 2.5 s (5 retries of 500 ms)

    def __init__(self, camera, aravis, glib, address: str) -> None:
        self._camera = camera
        self._aravis = aravis
        self._glib = glib
        self._stream = None
        self.features = AravisFeatures(camera.get_device(), aravis, glib)
        self.device = address
        self.model = " ".join(x for x in (self._get(camera.get_vendor_name), self._get(camera.get_model_name)) if x)
        self.serial = self._get(camera.get_device_serial_number)
        self.incomplete = 0

    def _get(self, getter) -> str:
        try:
            return str(getter() or "")
        except self._glib.Error:
            return ""

    def start(self) -> None:
        try:
            stream = self._camera.create_stream(None, None)
            if stream is None:
                raise DeviceLost("cannot create a stream")
            payload = self._camera.get_payload()
            for _ in range(BUFFERS):
                stream.push_buffer(self._aravis.Buffer.new_allocate(payload))
            self._stream = stream
            self._camera.start_acquisition()
        except self._glib.Error as exc:
            raise DeviceLost(f"cannot start acquisition: {exc.message}") from exc

    def fetch(self, timeout_s: float) -> Grab | None:
        stream, status = self._stream, self._aravis.BufferStatus
        for _ in range(INCOMPLETE_LIMIT):
            buffer = stream.timeout_pop_buffer(max(1, int(timeout_s * 1e6)))
            if buffer is None:
                return None
            try:
                if buffer.get_status() != status.SUCCESS:
                    self.incomplete += 1  # missing packets, a frame cut short: not a frame to classify
                    continue
                fmt = pixel_format(int(buffer.get_image_pixel_format()))
                image = to_image(buffer.get_data(), fmt, buffer.get_image_width(), buffer.get_image_height())
                return Grab(image, int(buffer.get_frame_id()))
            finally:
                stream.push_buffer(buffer)
        raise DeviceLost(f"{INCOMPLETE_LIMIT} incomplete frames in a row (packet loss: check the network, "
                         "packet size and the camera's bandwidth)")

    def alive(self) -> bool:
        try:
            self._camera.get_integer("Width")
            return True
        except self._glib.Error:
            return False

    def close(self) -> None:
        camera, self._camera = self._camera, None
        if camera is None:
            return
        try:
            camera.stop_acquisition()
        except self._glib.Error as exc:
            log.debug("stopping the acquisition: %s", exc.message)
        # The last reference to the device releases the camera's control channel: a reopening (or another
        # program) can take it at once instead of after the camera's heartbeat timeout.
        self._stream = None
        self.features.detach()
        del camera


class AravisConnector:
    """Opens the camera at ``address`` with Aravis; called again for every reconnection."""

    def __init__(self, address: str, config: CameraConfig) -> None:
        self.aravis, self.glib = load_aravis()
        self.address = address
        self.config = config
        self._listed: str | None = None

    @property
    def where(self) -> str:
        return f"gige:{self.address}"

    def __call__(self, closing: threading.Event) -> CameraCapture:
        aravis, glib = self.aravis, self.glib
        try:  # by IP address: GVCP to that address only (a device id makes Aravis broadcast a discovery)
            camera = aravis.Camera.new(self.address)
        except glib.Error as exc:
            raise DeviceLost(f"no GigE Vision camera answers at {self.address} ({exc.message}); "
                             f"{self._found()}") from exc
        device = AravisDevice(camera, aravis, glib, self.address)
        del camera  # the device holds the only reference: closing it releases the camera (even on a set-up error)
        return open_camera("gige", device, self.config, closing)

    def _found(self) -> str:
        """The cameras a discovery finds (once; not for loopback addresses, which need no discovery)."""
        if _is_loopback(self.address):
            return "check that the camera (or arv-fake-gv-camera-0.8 -i ADDRESS) runs at that address"
        if self._listed is None:
            aravis = self.aravis
            aravis.update_device_list()  # a GVCP discovery broadcast on every interface
            count = aravis.get_n_devices()
            self._listed = ", ".join(f"{aravis.get_device_address(i)} ({aravis.get_device_id(i)})"
                                     for i in range(count)) or "none"
        return f"cameras found: {self._listed}"


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def gige_source(address: str, config: CameraConfig, options: SourceOptions | None = None,
                should_stop: StopCheck = never_stop) -> CameraSource:
    """The source for ``--gige ADDRESS``; SourceError now if Aravis' bindings are missing."""
    if not address:
        raise SourceError("--gige needs the camera's address (e.g. --gige 192.168.10.20); arv-tool-0.8 lists them")
    connector = AravisConnector(address, config)
    return CameraSource(connector.where, connector, options, should_stop=should_stop)
