"""The classification loop: source -> Classifier -> sinks, with per-stage timings, limits and a clean stop.

:func:`run_pipeline` pulls frames from a source, classifies each (a frame that fails becomes an error result,
never an exception), hands every result to every sink, and returns a :class:`Summary`. It stops at the end
of the input, after ``max_frames`` results, or as soon as the :class:`StopFlag` is set (SIGINT/SIGTERM via
:func:`stop_on_signals`, ``--duration``, q in the window); a lost stream or an output that cannot be written
ends it with ``Summary.failed``. ``mode`` ``throughput`` classifies an ordered input with several inference
requests at once (:mod:`edge_runtime.throughput`); the results, and so the records, come in input order either
way. Signal handlers only set the flag: outputs are flushed and closed by the caller's ``with`` blocks, never
by ``sys.exit`` inside the loop.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

from edge_runtime.classifier import Classifier, Prediction
from edge_runtime.errors import EdgeRuntimeError, SinkError, SourceError
from edge_runtime.records import ModelInfo, Result, make_record
from edge_runtime.sinks.base import Sink
from edge_runtime.sources.base import Frame, Source
from edge_runtime.throughput import (
    BATCH,
    LATENCY,
    THROUGHPUT,
    choose_mode,
    default_requests,
    ordered_parallel,
    threads_per_request,
)

log = logging.getLogger(__name__)

LATENCY_WINDOW = 100_000  # p50/p99 are over the most recent results (bounded memory on endless runs)
# What classifying one decoded frame can raise for bad input; anything else is a bug and stops the run.
FRAME_ERRORS = (EdgeRuntimeError, ValueError, RuntimeError, MemoryError, cv2.error)


class StopFlag:
    """A stop request, safe to set from a signal handler (plain attribute writes, no locks).

    Also usable as ``should_stop`` callable for sources. ``deadline`` (monotonic seconds) makes it set itself.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.reason: str | None = None
        self.deadline: float | None = None
        self.signals = 0
        self._clock = clock

    def request(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason

    def is_set(self) -> bool:
        if self.reason is None and self.deadline is not None and self._clock() >= self.deadline:
            self.reason = "--duration reached"
        return self.reason is not None

    __call__ = is_set


@contextmanager
def stop_on_signals(stop: StopFlag, signals: Iterable[int] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """While active, SIGINT/SIGTERM set ``stop`` (a second signal raises KeyboardInterrupt: stop right now).

    Handlers can only be installed from the main thread; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: object) -> None:
        stop.signals += 1
        if stop.signals > 1:
            raise KeyboardInterrupt
        stop.request(f"signal {signal.Signals(signum).name}")

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def classify_frame(frame: Frame, classifier: Classifier, min_confidence: float | None = None,
                   clock: Callable[[], float] = time.monotonic) -> Result:
    """Classify one frame; a frame that cannot be classified gives an error Result instead of raising."""
    if frame.image is None:
        error = frame.error or f"{_what(frame)}: no image"
        return Result(frame, None, error, latency_ms=(clock() - frame.captured) * 1000)
    try:
        prediction = classifier.predict(frame.image)
    except FRAME_ERRORS as exc:
        return Result(frame, None, f"cannot classify {_what(frame)}: {exc}",
                      latency_ms=(clock() - frame.captured) * 1000)
    return _classified(frame, prediction, min_confidence, clock)


def classify_frames(frames: list[Frame], classifier: Classifier, min_confidence: float | None = None,
                    clock: Callable[[], float] = time.monotonic) -> list[Result]:
    """The Results of :func:`classify_frame` for each of ``frames``, the readable ones in one backend call (tiled
    classifiers frame by frame). A frame that makes the batch fail is found by classifying them one by one."""
    readable = [frame for frame in frames if frame.image is not None]
    if classifier.tiles is not None or len(readable) < 2:
        return [classify_frame(frame, classifier, min_confidence, clock) for frame in frames]
    try:
        predictions = iter(classifier.predict_batch([frame.image for frame in readable]))
    except FRAME_ERRORS:
        return [classify_frame(frame, classifier, min_confidence, clock) for frame in frames]
    return [classify_frame(frame, classifier, min_confidence, clock) if frame.image is None
            else _classified(frame, next(predictions), min_confidence, clock) for frame in frames]


def _classified(frame: Frame, prediction: Prediction, min_confidence: float | None,
                clock: Callable[[], float]) -> Result:
    uncertain = min_confidence is not None and not prediction.confidence >= min_confidence  # NaN is uncertain
    return Result(frame, prediction, None, uncertain, (clock() - frame.captured) * 1000)


def _what(frame: Frame) -> str:
    return f"'{frame.path}'" if frame.path else f"{frame.source} frame {frame.index}"


@dataclass
class Summary:
    """What a run did; ``fps`` is results per second of wall time, latencies over the last results."""

    frames: int = 0  # results written: classified + errors
    classified: int = 0
    errors: int = 0
    uncertain: int = 0
    unknown: int = 0
    dropped: int = 0
    skipped: int = 0
    resumed: int = 0
    reconnects: int = 0
    elapsed_s: float = 0.0
    fps: float = 0.0
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    read_ms_mean: float | None = None
    preprocess_ms_mean: float | None = None
    inference_ms_mean: float | None = None
    stop_reason: str = "end of input"
    failed: bool = False
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # per line output: {"mqtt": {"published": ..}}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value:.1f} ms"

        return "\n".join([
            f"summary: {self.stop_reason} after {self.elapsed_s:.1f} s" + (" (FAILED)" if self.failed else ""),
            f"  frames {self.frames} (classified {self.classified}, errors {self.errors}, uncertain "
            f"{self.uncertain}, unknown {self.unknown}); dropped {self.dropped}, skipped {self.skipped}, already done {self.resumed}, "
            f"reconnects {self.reconnects}",
            f"  {self.fps:.2f} fps; end-to-end latency p50 {ms(self.latency_p50_ms)}, p99 {ms(self.latency_p99_ms)}",
            f"  mean per frame: read {ms(self.read_ms_mean)}, preprocess {ms(self.preprocess_ms_mean)}, "
            f"inference {ms(self.inference_ms_mean)}",
            *(f"  {name}: " + ", ".join(f"{key} {value}" for key, value in counts.items())
              for name, counts in self.outputs.items()),
        ])


class _Tally:
    """Running counts and timings; bounded memory however long the run."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.started = clock()
        self.summary = Summary()
        self.latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.sums = {"read": 0.0, "preprocess": 0.0, "inference": 0.0}

    def add(self, result: Result) -> None:
        s = self.summary
        s.frames += 1
        self.latencies.append(result.latency_ms)
        self.sums["read"] += result.frame.read_ms
        if result.prediction is None:
            s.errors += 1
            return
        s.classified += 1
        s.uncertain += result.uncertain
        s.unknown += result.prediction.unknown
        self.sums["preprocess"] += result.prediction.preprocess_ms
        self.sums["inference"] += result.prediction.inference_ms

    def finish(self, source: Source, reason: str, failed: bool) -> Summary:
        s = self.summary
        s.elapsed_s = self.clock() - self.started
        s.fps = s.frames / s.elapsed_s if s.elapsed_s > 0 else 0.0
        stats = source.stats
        s.dropped, s.skipped, s.resumed, s.reconnects = stats.dropped, stats.skipped, stats.resumed, stats.reconnects
        if self.latencies:
            p50, p99 = np.percentile(np.fromiter(self.latencies, float), [50, 99])
            s.latency_p50_ms, s.latency_p99_ms = float(p50), float(p99)
        if s.frames:
            s.read_ms_mean = self.sums["read"] / s.frames
        if s.classified:
            s.preprocess_ms_mean = self.sums["preprocess"] / s.classified
            s.inference_ms_mean = self.sums["inference"] / s.classified
        for key in ("latency_p50_ms", "latency_p99_ms", "read_ms_mean", "preprocess_ms_mean", "inference_ms_mean"):
            value = getattr(s, key)
            if value is not None:
                setattr(s, key, round(value, 3) if math.isfinite(value) else None)
        s.elapsed_s, s.fps = round(s.elapsed_s, 3), round(s.fps, 3)
        s.stop_reason, s.failed = reason, failed
        return s


PREFETCH_DEPTH = 2
_DONE = object()


def prefetched(frames: Iterator[Frame], depth: int = PREFETCH_DEPTH) -> Iterator[Frame]:
    """The frames of an ordered source (a video file), read up to ``depth`` ahead on a thread of its own,
    so that reading and decoding the next frame overlap the inference of this one. Nothing is skipped; an
    exception of the source is raised here, in order; closing this generator stops and joins the reader."""
    import queue

    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for frame in frames:
                if not put(frame):
                    break
            put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            put(exc)
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()

    reader = threading.Thread(target=read, name="frame-prefetch", daemon=True)
    reader.start()
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while reader.is_alive():
            try:
                buffer.get(timeout=0.1)
            except queue.Empty:
                pass
        reader.join()


def run_pipeline(
    source: Source,
    classifier: Classifier,
    sinks: Iterable[Sink],
    model: ModelInfo,
    *,
    min_confidence: float | None = None,
    max_frames: int | None = None,
    stop: StopFlag | None = None,
    status_interval_s: float = 60.0,
    clock: Callable[[], float] = time.monotonic,
    mode: str = LATENCY,
    requests: int | None = None,
    batch: int = BATCH,
) -> Summary:
    """Classify every frame of an entered ``source`` into ``sinks`` until the input ends or a stop; see module.

    ``mode``: ``latency`` (one frame at a time on ``classifier``), ``throughput`` (``requests`` replicas of
    ``classifier`` sharing its threads, chunks of up to ``batch`` frames) or ``auto`` (throughput for the
    sources that allow it, see :func:`edge_runtime.throughput.choose_mode`). ``requests`` defaults to
    :func:`edge_runtime.throughput.default_requests` of the classifier's threads.
    """
    stop = stop or StopFlag()
    sinks = list(sinks)
    replicas = None
    if choose_mode(mode, source) == THROUGHPUT:
        replicas = _replicas(classifier, requests, batch)
    elif requests is not None:
        log.warning("%s is classified in latency mode, one frame at a time: requests=%d is not used", source.name,
                    requests)
    tally = _Tally(clock)
    next_status = clock() + status_interval_s
    reason, failed = "end of input", False
    try:
        if replicas is None:
            frames_in = prefetched(iter(source)) if getattr(source, "prefetch", False) else iter(source)
            results_in = _one_at_a_time(frames_in, classifier, min_confidence, clock)
        else:
            results_in = ordered_parallel(iter(source), replicas, lambda chunk, replica: classify_frames(
                chunk, replica, min_confidence, clock), batch=batch, limit=max_frames)
        with closing(results_in) as results:
            for result in results:
                result.record = make_record(result, model)
                for sink in sinks:
                    sink.emit(result)
                tally.add(result)
                if result.error:
                    log.warning("%s", result.error)
                del result  # do not hold a large image while waiting for the next one
                if max_frames is not None and tally.summary.frames >= max_frames:
                    stop.request("--frames reached")
                if stop.is_set():
                    break
                if clock() >= next_status:
                    next_status = clock() + status_interval_s
                    _log_status(tally, source)
    except SourceError as exc:
        reason, failed = f"source failed: {exc}", True
        log.error("%s", exc)
    except SinkError as exc:
        reason, failed = f"output failed: {exc}", True
        log.error("%s", exc)
    if not failed and stop.is_set():
        reason = str(stop.reason)
    return tally.finish(source, reason, failed)


def _one_at_a_time(frames: Iterator[Frame], classifier: Classifier, min_confidence: float | None,
                   clock: Callable[[], float]) -> Iterator[Result]:
    """Latency mode: each frame classified as it comes, on the caller's thread."""
    with closing(frames):
        for frame in frames:
            result = classify_frame(frame, classifier, min_confidence, clock)
            del frame
            yield result
            del result  # do not hold a large image while waiting for the next one


def _replicas(classifier: Classifier, requests: int | None, batch: int) -> list[Classifier]:
    """Throughput mode's classifiers: ``requests`` copies sharing the classifier's threads."""
    total = classifier.backend.threads
    count = default_requests(total) if requests is None else int(requests)
    if count < 1:
        raise ValueError(f"requests must be >= 1, got {requests}")
    threads = threads_per_request(total, count)
    replicas = [classifier.replica(threads, batch) for _ in range(count)]
    log.info("throughput mode: %d inference request(s) of %d thread(s), chunks of up to %d frames",
             count, threads, batch)
    return replicas


def _log_status(tally: _Tally, source: Source) -> None:
    s = tally.summary
    elapsed = tally.clock() - tally.started
    log.info("%d frames (%d errors), %d dropped, %.2f fps over %.0f s", s.frames, s.errors, source.stats.dropped,
             s.frames / elapsed if elapsed > 0 else 0.0, elapsed)
