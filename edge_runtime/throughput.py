"""Throughput mode: classify an ordered input (a folder, image files, a video file) with several inference
requests at once, and hand the results back in input order.

Latency mode (cameras, streams, watched folders) classifies one frame at a time on one backend with every
thread. Throughput mode runs ``requests`` copies of the model (``Classifier.replica``), each on its own thread
with ``threads // requests`` engine threads, each taking the next chunk of up to ``batch`` consecutive frames
(one backend call for the chunk where the engine takes batches). A reader thread decodes the input ahead into
a bounded queue, so decoding overlaps inference; preprocessing runs on the inference threads. On a 2-core CPU
two single-threaded requests keep both cores busy where one two-threaded request waits on its own threads (see
``default_requests``).

:func:`ordered_parallel` is the engine-agnostic part: it knows nothing of models, only of chunks, workers and
order. The engines, numpy and OpenCV release the GIL in their heavy calls, so plain threads suffice.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from edge_runtime.sources.base import Source
from edge_runtime.sources.live import LiveSource

log = logging.getLogger(__name__)

AUTO, LATENCY, THROUGHPUT = "auto", "latency", "throughput"
MODES = (AUTO, LATENCY, THROUGHPUT)
BATCH = 4  # frames per chunk: one backend call on engines with a dynamic batch (ONNX Runtime, OpenVINO)
MAX_REQUESTS = 8  # default ceiling: each request holds a copy of the model
POLL_S = 0.1  # longest wait for input while earlier results are pending (a slow source still gets its results)

T = TypeVar("T")
W = TypeVar("W")
R = TypeVar("R")


def default_requests(cores: int) -> int:
    """Parallel inference requests for ``cores`` threads: one single-threaded request per thread, at most
    MAX_REQUESTS. Measured on 2 cores (benchmarks.folder_throughput, all 1,800 NEU images, quiet Intel VNNI
    machine): LiteRT int8 two 1-thread requests 138-143 images/s against 123-141 for one 2-thread request in
    batches of 4; against one image at a time, LiteRT 1.31x, OpenVINO 1.40x (1,800 images) and ONNX Runtime
    1.34x (600 images); docs/runtime.md."""
    return max(1, min(int(cores), MAX_REQUESTS))


def choose_mode(mode: str, source: Source) -> str:
    """``latency`` or ``throughput`` for ``source``: ``auto`` takes throughput for sources that are read in order
    as fast as they are classified (``Source.throughput``: folders read once, image files, video files) unless
    ``--max-fps`` paces them like a line, and latency for the others; throughput is refused for live sources
    (they keep only the newest frame)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
    if mode == AUTO:
        paced = getattr(getattr(source, "options", None), "max_fps", None) is not None
        return THROUGHPUT if getattr(source, "throughput", False) and not paced else LATENCY
    if mode == THROUGHPUT and isinstance(source, LiveSource):
        raise ValueError(f"{source.name}: --mode throughput applies to folders, image files and video files; a "
                         "live camera or stream is classified newest frame first (--mode latency)")
    return mode


def threads_per_request(threads: int, requests: int) -> int:
    """Engine threads of each request when ``threads`` are shared by ``requests`` (at least 1)."""
    return max(1, int(threads) // max(1, int(requests)))


class _Reader:
    """Reads an iterator ahead on a thread of its own into a bounded queue; ``take`` hands out chunks."""

    _END = object()

    def __init__(self, items: Iterator[object], depth: int, limit: int | None) -> None:
        self._items = items
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._limit = limit
        self._ending: object | None = None  # the end marker or exception taken out behind a chunk
        self._thread = threading.Thread(target=self._read, name="throughput-reader", daemon=True)
        self._thread.start()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _read(self) -> None:
        try:
            count = 0
            while self._limit is None or count < self._limit:
                item = next(self._items, self._END)
                if item is self._END or not self._put(item):
                    break
                count += 1
            self._put(self._END)
        except BaseException as exc:  # handed to the consumer, raised there in order
            self._put(exc)
        finally:
            close = getattr(self._items, "close", None)
            if close is not None:
                close()

    def take(self, most: int, timeout: float) -> tuple[list, object | None]:
        """Up to ``most`` items already read (waiting at most ``timeout`` s for the first; never for more), and
        what ended the input behind them: None (more to come), the end marker, or the source's exception."""
        if self._ending is not None:
            return [], self._ending
        try:
            first = self._queue.get(timeout=timeout)
        except queue.Empty:
            return [], None
        chunk: list = []
        item = first
        while True:
            if item is self._END or isinstance(item, BaseException):
                self._ending = item
                return chunk, item
            chunk.append(item)
            if len(chunk) >= most:
                return chunk, None
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return chunk, None

    def close(self) -> None:
        """Stop reading and join the thread (the iterator is closed on it)."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=POLL_S)
            except queue.Empty:
                pass
        self._thread.join()


def ordered_parallel(items: Iterator[T], workers: Sequence[W], work: Callable[[list[T], W], list[R]], *,
                     batch: int = BATCH, limit: int | None = None) -> Iterator[R]:
    """``work(chunk, worker)`` over consecutive chunks of up to ``batch`` items, on one thread per worker, the
    results flattened in input order.

    ``items`` is read ahead on a thread (at most ``limit`` of them); a chunk holds what has been read, never
    waiting for more, so a slow source is not held back. At most one chunk per worker, plus one, is in flight.
    An exception of ``items`` is raised here after the results before it; one of ``work`` at its chunk's turn.
    Closing the generator (a stop, an error downstream) stops the reader and waits for the running chunks.
    """
    if not workers:
        raise ValueError("ordered_parallel needs at least one worker")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    idle: queue.SimpleQueue = queue.SimpleQueue()
    for worker in workers:
        idle.put(worker)

    def run(chunk: list[T]) -> list[R]:
        worker = idle.get()  # never waits: at most len(workers) chunks run at once
        try:
            return work(chunk, worker)
        finally:
            idle.put(worker)

    reader = _Reader(items, depth=batch * (len(workers) + 1), limit=limit)
    pool = ThreadPoolExecutor(len(workers), thread_name_prefix="inference")
    pending: deque[Future] = deque()
    try:
        while True:
            chunk, ending = reader.take(batch, POLL_S)
            if chunk:
                pending.append(pool.submit(run, chunk))
            while pending and (ending is not None or pending[0].done() or len(pending) > len(workers)):
                results = pending.popleft().result()
                yield from results
                del results
            if isinstance(ending, BaseException):
                raise ending
            if ending is not None:
                return
    finally:
        for future in pending:
            future.cancel()
        reader.close()
        pool.shutdown(wait=True, cancel_futures=True)
