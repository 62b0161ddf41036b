"""GenICam cameras (GigE Vision, USB3 Vision, ...) through the camera maker's GenTL producer and ``harvesters``.

    edge-classify --genicam /opt/vendor/lib/producer.cti --device 22012345 --set ExposureTime=800 --trigger hardware

What every camera source shares (reader thread, reconnects, waiting, settings) is in :mod:`.camera`; here is
the harvesters :class:`~edge_runtime.sources.camera.Device`.

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
from collections.abc import Callable

from edge_runtime.errors import DeviceLost, SourceError
from edge_runtime.sources.base import SourceOptions, StopCheck, never_stop
from edge_runtime.sources.camera import CameraCapture, CameraSource, Device, Grab, open_camera
from edge_runtime.sources.features import CameraConfig
from edge_runtime.sources.pixels import pixel_format, to_image

log = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "steel-edge-inspect[genicam]"'
GENTL_PATH_VARIABLE = "GENICAM_GENTL64_PATH" if struct.calcsize("P") == 8 else "GENICAM_GENTL32_PATH"


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
