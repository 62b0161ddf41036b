"""systemd's readiness and watchdog protocol (``Type=notify``, ``WatchdogSec=``), without a dependency.

Messages are datagrams to the Unix socket named by ``$NOTIFY_SOCKET`` (``@`` at its start: an abstract
socket). :class:`ServiceNotifier` is a sink: ``READY=1`` once the source is open, ``WATCHDOG=1`` while
results flow (at most every half ``$WATCHDOG_USEC``; a camera that hangs stops the pings, systemd kills the
process and ``Restart=always`` starts it again), a ``STATUS=`` line with the counts, ``STOPPING=1`` at the
end. Without ``$NOTIFY_SOCKET`` (not started by systemd) everything here does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable

from edge_runtime.records import Result
from edge_runtime.sinks.base import Sink

log = logging.getLogger(__name__)

STATUS_INTERVAL_S = 5.0


def watchdog_interval_s(environ: dict[str, str] | None = None) -> float | None:
    """Half of ``$WATCHDOG_USEC`` in seconds when the watchdog is on for this process, else None."""
    environ = os.environ if environ is None else environ
    usec = environ.get("WATCHDOG_USEC")
    pid = environ.get("WATCHDOG_PID")
    if not usec or (pid and pid.isdigit() and int(pid) != os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None


class Notifier:
    """One datagram socket to ``$NOTIFY_SOCKET``; ``send`` returns False (and never raises) when it fails."""

    def __init__(self, address: str | None = None) -> None:
        address = os.environ.get("NOTIFY_SOCKET") if address is None else address
        self.address = address or None
        self._socket: socket.socket | None = None
        if self.address:
            target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
            try:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._socket.connect(target)
            except OSError as exc:
                log.warning("$NOTIFY_SOCKET '%s': %s; systemd will not hear from this process", self.address, exc)
                self.close()

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def send(self, *lines: str) -> bool:
        if self._socket is None:
            return False
        try:
            self._socket.send("\n".join(lines).encode())
            return True
        except OSError as exc:
            log.debug("sd_notify failed: %s", exc)
            return False

    def close(self) -> None:
        sock, self._socket = self._socket, None
        if sock is not None:
            sock.close()


class ServiceNotifier(Sink):
    """The sink side of the protocol; see the module docstring. ``status_line()`` gives the STATUS text."""

    def __init__(self, status_line: Callable[[], str] | None = None, clock: Callable[[], float] = time.monotonic,
                 notifier: Notifier | None = None) -> None:
        self.notifier = notifier or Notifier()
        self.interval = watchdog_interval_s()
        self.status_line = status_line
        self._clock = clock
        self._last_ping = float("-inf")
        self._last_status = float("-inf")
        self.pings = 0

    @property
    def enabled(self) -> bool:
        return self.notifier.enabled

    def ready(self, text: str) -> None:
        if self.notifier.send("READY=1", f"STATUS={text}", f"MAINPID={os.getpid()}"):
            log.info("told systemd: ready (%s)%s", text,
                     "" if self.interval is None else f"; watchdog pings at least every {self.interval:.1f} s")

    def emit(self, result: Result) -> None:
        if not self.notifier.enabled:
            return
        now = self._clock()
        if self.interval is not None and now - self._last_ping >= min(self.interval, 1.0):
            self._last_ping = now
            self.pings += self.notifier.send("WATCHDOG=1")
        if self.status_line is not None and now - self._last_status >= STATUS_INTERVAL_S:
            self._last_status = now
            self.notifier.send(f"STATUS={self.status_line()}")

    def stopping(self, reason: str) -> None:
        self.notifier.send("STOPPING=1", f"STATUS=stopping: {reason}")

    def close(self) -> None:
        self.notifier.close()
