"""What every source shares: :class:`Frame`, :class:`SourceOptions`, the :class:`Source` base, stop-aware
waiting, pacing, and reading a source spec (camera index, file, folder, URL) into a kind.

* ``every`` keeps one frame in N; ``max_fps`` caps the rate (live sources skip frames at capture time, file
  sources wait). Frames left out by either are counted in ``stats.skipped``, never as dropped.
* ``done`` (path -> (size, mtime_ns)) lists files processed by an earlier run; they are left out and counted
  in ``stats.resumed``.
* Sources stop when ``should_stop()`` returns true; waits are sliced so that it is checked every 0.1 s.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import cv2
import numpy as np

from edge_runtime.errors import SourceError
from edge_runtime.preprocessing import is_image_file

log = logging.getLogger(__name__)

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
CAPTURE_BACKENDS = ("any", "v4l2", "ffmpeg", "gstreamer", "dshow", "msmf", "avfoundation", "aravis")
WAIT_SLICE_S = 0.1  # longest uninterrupted wait: how quickly a stop request is noticed
STALL_WARNING_S = 10.0
JOIN_TIMEOUT_S = 5.0


@dataclass
class Frame:
    """One image from a source.

    ``timestamp`` is the wall-clock capture/read time (``time.time()``); ``captured`` the same moment on
    ``time.monotonic()`` (the reference for latency). For files, ``path`` is absolute and ``file_size`` /
    ``file_mtime_ns`` identify the version read. ``image`` is None exactly when ``error`` says why.
    """

    image: np.ndarray | None
    index: int
    timestamp: float
    source: str
    path: str | None = None
    error: str | None = None
    captured: float = 0.0
    read_ms: float = 0.0
    file_size: int | None = None
    file_mtime_ns: int | None = None


@dataclass
class SourceStats:
    """Counters a source keeps; read them after (or during) iteration."""

    captured: int = 0  # frames/files the source read or listed
    dropped: int = 0  # live frames overwritten before the consumer took them
    skipped: int = 0  # left out on purpose by every / max_fps
    resumed: int = 0  # files already recorded by an earlier run
    read_failures: int = 0
    reconnects: int = 0


@dataclass(frozen=True)
class SourceOptions:
    """How to read a source; every field has a safe default. Invalid values raise ValueError."""

    every: int = 1
    max_fps: float | None = None
    recursive: bool = False
    watch: bool = False
    poll_s: float = 0.5
    settle_s: float = 10.0
    retries: int = 5
    backoff_s: float = 0.5
    backoff_max_s: float = 30.0
    backend: str = "any"
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    timeout_s: float = 10.0  # open/read timeout for network streams
    max_pixels: int | None = 64_000_000  # image files with more pixels (per their header) become error frames
    done: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    exclude: tuple[str, ...] = ()  # folders never listed (our own output folders)

    def __post_init__(self) -> None:
        checks = [
            (self.every >= 1, f"every must be >= 1, got {self.every}"),
            (self.max_fps is None or self.max_fps > 0, f"max_fps must be > 0, got {self.max_fps}"),
            (self.poll_s > 0, f"poll interval must be > 0 s, got {self.poll_s}"),
            (self.settle_s >= 0, f"settle time must be >= 0 s, got {self.settle_s}"),
            (self.retries >= 0, f"retries must be >= 0, got {self.retries}"),
            (0 < self.backoff_s <= self.backoff_max_s, "back-off must satisfy 0 < backoff_s <= backoff_max_s"),
            (self.backend in CAPTURE_BACKENDS, f"capture backend must be one of {list(CAPTURE_BACKENDS)}"),
            (all(v is None or v > 0 for v in (self.width, self.height, self.fps)), "width/height/fps must be > 0"),
            (self.timeout_s > 0, f"timeout must be > 0 s, got {self.timeout_s}"),
            (self.max_pixels is None or self.max_pixels > 0, f"max_pixels must be > 0, got {self.max_pixels}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def backoff_delay(failures: int, options: SourceOptions) -> float:
    """Seconds to wait before reconnect attempt number ``failures`` (1, 2, ...): exponential, capped."""
    return min(options.backoff_max_s, options.backoff_s * 2 ** max(0, failures - 1))


StopCheck = Callable[[], bool]


def never_stop() -> bool:
    """The default ``should_stop``: run until the input ends."""
    return False


class Waiter:
    """Interruptible waiting: sleeps in short slices and returns early when a stop is requested."""

    def __init__(self, should_stop: StopCheck, sleep: Callable[[float], object] | None = None,
                 clock: Callable[[], float] = time.monotonic, event: threading.Event | None = None) -> None:
        self._should_stop = should_stop
        self._sleep = sleep
        self._clock = clock
        self._event = event or threading.Event()

    def stopped(self) -> bool:
        return self._event.is_set() or self._should_stop()

    def wait(self, seconds: float) -> bool:
        """Wait ``seconds``; True if a stop was requested (then it returns early)."""
        if self._sleep is not None:  # injected (tests): one call, no real waiting
            if seconds > 0:
                self._sleep(seconds)
            return self.stopped()
        end = self._clock() + seconds
        while not self.stopped():
            left = end - self._clock()
            if left <= 0:
                return False
            self._event.wait(min(WAIT_SLICE_S, left))
        return True


class Pacer:
    """At most ``max_fps`` items per second for file sources (waits; never skips)."""

    def __init__(self, max_fps: float | None, waiter: Waiter, clock: Callable[[], float]) -> None:
        self._interval = 1.0 / max_fps if max_fps else 0.0
        self._waiter = waiter
        self._clock = clock
        self._next = None

    def ready(self) -> bool:
        """Wait for the next slot; False if a stop was requested meanwhile."""
        if self._interval and self._next is not None:
            delay = self._next - self._clock()
            if delay > 0 and self._waiter.wait(delay):
                return False
        now = self._clock()
        self._next = max(now, self._next or now) + self._interval
        return not self._waiter.stopped()


class Source:
    """Base of every source: context manager, iterable of Frames, ``stats``, ``name``."""

    prefetch = False  # True for ordered sources that the pipeline may read ahead (see pipeline.prefetched)
    # True for finite inputs read in order as fast as they are classified (folders read once, image files,
    # video files): --mode auto classifies them in throughput mode (edge_runtime.throughput)
    throughput = False

    def __init__(self, name: str, options: SourceOptions, should_stop: StopCheck = never_stop,
                 sleep: Callable[[float], object] | None = None, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.name = name
        self.options = options
        self.stats = SourceStats()
        self._clock = clock
        self._wall = wall
        self._closing = threading.Event()
        self._waiter = Waiter(should_stop, sleep, clock, self._closing)

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._closing.set()

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def release_capture(capture) -> None:
    """Release a VideoCapture (or fake), never raising."""
    try:
        capture.release()
    except (cv2.error, OSError, RuntimeError) as exc:
        log.debug("release failed: %s", exc)


# --- source specs ------------------------------------------------------------------------------------------


_URL = re.compile(r"^([a-z][a-z0-9+.-]*)://", re.IGNORECASE)


def is_stream_url(text: str) -> bool:
    match = _URL.match(text)
    return bool(match) and match.group(1).lower() in STREAM_SCHEMES


def redact_url(text: str) -> str:
    """``rtsp://user:secret@host/x`` -> ``rtsp://user:***@host/x`` (for logs and records)."""
    return re.sub(r"^([a-z][a-z0-9+.-]*://[^:/@]*):[^@/]*@", r"\1:***@", text, flags=re.IGNORECASE)


def guess_kind(spec: object) -> str:
    """The kind of source ``spec`` names: "camera", "video" (file, stream URL or device), "folder" or "files".

    Raises SourceError for a path that does not exist, ValueError for something that is no source at all.
    """
    if isinstance(spec, bool):
        raise ValueError(f"not a source: {spec!r}")
    if isinstance(spec, int):
        return "camera"
    if isinstance(spec, (list, tuple)):
        return "files"
    text = str(spec)
    if is_stream_url(text) or text.startswith("/dev/"):
        return "video"
    if os.path.isdir(text):
        return "folder"
    if text.isdigit():
        return "camera"
    if os.path.isfile(text):
        return "files" if is_image_file(text) else "video"
    if glob.has_magic(text):
        return "files"
    raise SourceError(f"'{text}': no such file, folder or camera; check the path")
