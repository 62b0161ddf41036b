"""Live sources: cameras and network streams, read by a thread that keeps only the newest frame.

The reader thread owns the ``cv2.VideoCapture``; the consumer takes the newest frame from a one-slot buffer, so
a slow consumer never builds up lag, and every frame overwritten before it was taken is counted in
``stats.dropped``. A failed read releases the capture and reopens it after an exponential back-off (``backoff_s``
doubling up to ``backoff_max_s``, waited on an Event, so never a busy loop); after ``retries`` consecutive
failed attempts without a frame the iteration raises :class:`SourceLost`. A source that cannot be opened in
the first place raises :class:`SourceError` from ``__enter__`` after the same attempts. A capture with
``may_idle`` (a triggered GenICam camera, :mod:`.genicam`) may answer ``(True, None)``: no frame yet but still
there; the reader waits on without counting a failure.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Protocol

import cv2
import numpy as np

from edge_runtime.errors import SourceError, SourceLost
from edge_runtime.sources.base import (
    JOIN_TIMEOUT_S,
    STALL_WARNING_S,
    WAIT_SLICE_S,
    Frame,
    Source,
    SourceOptions,
    backoff_delay,
    is_stream_url,
    release_capture,
)

log = logging.getLogger(__name__)


class Capture(Protocol):
    """The part of ``cv2.VideoCapture`` a live source uses (tests pass fakes)."""

    def isOpened(self) -> bool: ...  # noqa: N802 (OpenCV's name)

    def read(self) -> tuple[bool, np.ndarray | None]: ...

    def release(self) -> None: ...


Opener = Callable[[], "Capture | None"]


class LiveSource(Source):
    """A camera or network stream, read by a thread that keeps only the newest frame (see module docstring)."""

    def __init__(self, name: str, opener: Opener, options: SourceOptions | None = None, **kwargs) -> None:
        super().__init__(name, options or SourceOptions(), **kwargs)
        self._opener = opener
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._finished = False
        self._error: str | None = None
        self._thread: threading.Thread | None = None
        self._capture: Capture | None = None  # owned by the reader thread
        self._next_due: float | None = None
        self._open_error: str | None = None  # why the latest opening failed, if the opener said

    def __enter__(self) -> LiveSource:
        capture = self._open()
        failures = 0
        while capture is None:
            failures += 1
            if failures > self.options.retries:
                if self._open_error:
                    raise SourceError(f"{self.name}: could not be opened ({self.options.retries + 1} attempts): "
                                      f"{self._open_error}")
                raise SourceError(
                    f"{self.name}: could not be opened ({self.options.retries + 1} attempts); check the camera "
                    "index or URL, the cable/network, that no other program holds the device, and --backend"
                )
            if self._wait_before_retry(failures, "opening"):
                self._finish(None)  # stopped while waiting: nothing to read
                return self
            capture = self._open()
        self._thread = threading.Thread(target=self._read_loop, args=(capture,), name=f"capture {self.name}",
                                        daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the reader thread (joined with a timeout; a capture stuck in read() is abandoned)."""
        super().close()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(JOIN_TIMEOUT_S)
            if thread.is_alive():
                log.warning("%s: the capture thread did not stop within %.0f s; abandoning it", self.name,
                            JOIN_TIMEOUT_S)

    def __iter__(self) -> Iterator[Frame]:
        last_frame_at = self._clock()
        stalled = False
        while not self._waiter.stopped():
            with self._cond:
                self._cond.wait_for(lambda: self._latest is not None or self._finished, timeout=WAIT_SLICE_S)
                frame, self._latest = self._latest, None
                finished, error = self._finished, self._error
            if frame is not None:
                if stalled:
                    log.info("%s: frames again", self.name)
                stalled, last_frame_at = False, self._clock()
                yield frame
                continue
            if finished:
                if error is not None:
                    raise SourceLost(error)
                return
            if not stalled and self._clock() - last_frame_at > STALL_WARNING_S:
                stalled = True
                log.warning("%s: no frame for %.0f s", self.name, STALL_WARNING_S)

    # reader thread

    def _read_loop(self, capture: Capture | None) -> None:
        self._capture = capture
        try:
            self._read_until_closed_or_lost()
        except Exception as exc:  # the thread boundary: the consumer must hear of it, never a silent "end"
            log.exception("%s: the capture thread failed", self.name)
            self._finish(f"{self.name}: the capture thread failed ({type(exc).__name__}: {exc})")
        finally:
            if self._capture is not None:
                release_capture(self._capture)
                self._capture = None
            self._finish(None)

    def _read_until_closed_or_lost(self) -> None:
        """Read and publish frames into the slot, reopening ``self._capture`` after failures."""
        failures = 0  # consecutive failed reads/opens since the last good frame
        while not self._closing.is_set():
            if self._capture is None:
                if failures > self.options.retries:
                    self._finish(
                        f"{self.name}: no frames after {self.options.retries} reconnect attempts; giving up "
                        "(check the camera/stream, then restart; --retries allows more attempts)"
                    )
                    return
                if self._wait_before_retry(failures, "reconnecting"):
                    return
                self._capture = self._open()
                if self._capture is None:
                    failures += 1
                    continue
                self.stats.reconnects += 1
            ok, image = self._read(self._capture)
            if ok and image is None:  # a triggered camera that answered but had no frame yet: keep waiting
                failures = 0
                continue
            if not ok:
                failures += 1
                self.stats.read_failures += 1
                log.warning("%s: read failed (%d in a row); reopening", self.name, failures)
                capture, self._capture = self._capture, None
                release_capture(capture)
                continue
            if failures:
                log.info("%s: reconnected after %d failure(s)", self.name, failures)
            failures = 0
            self._publish(image)

    def _wait_before_retry(self, failures: int, what: str) -> bool:
        """Log and wait the back-off delay before attempt ``failures``; True if a stop came meanwhile."""
        delay = backoff_delay(failures, self.options)
        log.warning("%s: %s in %.1f s (attempt %d of %d)", self.name, what, delay, failures, self.options.retries)
        return self._waiter.wait(delay)

    def _open(self) -> Capture | None:
        try:
            capture = self._opener()
        except (cv2.error, OSError, RuntimeError) as exc:
            log.warning("%s: open failed: %s", self.name, exc)
            self._open_error = str(exc)
            return None
        if capture is None:
            return None
        if not capture.isOpened():
            release_capture(capture)
            return None
        return capture

    def _read(self, capture: Capture) -> tuple[bool, np.ndarray | None]:
        try:
            ok, image = capture.read()
        except (cv2.error, OSError, RuntimeError) as exc:
            log.warning("%s: read raised %s", self.name, exc)
            return False, None
        if ok and image is None and getattr(capture, "may_idle", False):
            return True, None  # "no frame yet" from a capture that waits for triggers (see genicam.CameraCapture)
        if not ok or image is None or getattr(image, "size", 0) == 0:
            return False, None
        return True, image

    def _publish(self, image: np.ndarray) -> None:
        index = self.stats.captured
        self.stats.captured += 1
        now = self._clock()
        if index % self.options.every or (self._next_due is not None and now < self._next_due):
            self.stats.skipped += 1
            return
        if self.options.max_fps:  # due times on a fixed grid: the rate averages max_fps, not less
            interval = 1.0 / self.options.max_fps
            due = (now if self._next_due is None else self._next_due) + interval
            self._next_due = due if due > now else now + interval  # after a stall: no burst to catch up
        frame = Frame(image, index, self._wall(), self.name, captured=now)
        with self._cond:
            if self._latest is not None:
                self.stats.dropped += 1
            self._latest = frame
            self._cond.notify_all()

    def _finish(self, error: str | None) -> None:
        with self._cond:
            if not self._finished:
                self._finished, self._error = True, error
            self._cond.notify_all()


def camera_opener(index: int, options: SourceOptions) -> Opener:
    """Open camera ``index`` with the requested backend, size and rate (what the camera grants is logged)."""

    def open_camera() -> cv2.VideoCapture:
        capture = cv2.VideoCapture(index, _backend_id(options.backend))
        if capture.isOpened():
            _request(capture, options)
        return capture

    return open_camera


def stream_opener(url: str, options: SourceOptions) -> Opener:
    """Open a network stream with open/read timeouts (so a dead stream cannot block forever), or a device path."""

    def open_stream() -> cv2.VideoCapture:
        if is_stream_url(url):
            timeout_ms = int(options.timeout_s * 1000)
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
            capture = cv2.VideoCapture(url, _backend_id(options.backend), params)
        else:
            capture = cv2.VideoCapture(url, _backend_id(options.backend))
        if capture.isOpened():
            _request(capture, options)
        return capture

    return open_stream


def _backend_id(name: str) -> int:
    return cv2.CAP_ANY if name == "any" else int(getattr(cv2, f"CAP_{name.upper()}"))


def _request(capture: cv2.VideoCapture, options: SourceOptions) -> None:
    capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # fewer stale frames where the backend supports it
    wanted = {cv2.CAP_PROP_FRAME_WIDTH: options.width, cv2.CAP_PROP_FRAME_HEIGHT: options.height,
              cv2.CAP_PROP_FPS: options.fps}
    for prop, value in wanted.items():
        if value is not None:
            capture.set(prop, float(value))
    got = (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT),
           capture.get(cv2.CAP_PROP_FPS))
    log.info("capture opened: %dx%d at %.1f fps (requested %sx%s at %s fps)", got[0], got[1], got[2],
             options.width or "-", options.height or "-", options.fps or "-")


