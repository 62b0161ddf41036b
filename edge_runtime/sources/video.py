"""Video files, read frame by frame in order, unthreaded (the pipeline may read ahead: ``prefetch``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import cv2

from edge_runtime.errors import SourceError
from edge_runtime.sources.base import Frame, Pacer, Source, SourceOptions, release_capture

log = logging.getLogger(__name__)


class VideoFileSource(Source):
    """A video file, read frame by frame in order; ends at the end of the file.

    ``prefetch``: the pipeline reads ahead on a thread of its own (the order is kept, nothing is skipped).
    """

    prefetch = True
    throughput = True

    def __init__(self, path: str | Path, options: SourceOptions | None = None, **kwargs) -> None:
        self.path = os.path.abspath(path)
        super().__init__(f"video:{self.path}", options or SourceOptions(), **kwargs)
        self._capture: cv2.VideoCapture | None = None

    def __enter__(self) -> VideoFileSource:
        if not os.path.isfile(self.path):
            raise SourceError(f"video '{self.path}': no such file; check the path")
        capture = cv2.VideoCapture(self.path)
        if not capture.isOpened():
            release_capture(capture)
            raise SourceError(f"video '{self.path}': OpenCV cannot open it (not a video, corrupt, or a codec "
                              "this OpenCV build lacks)")
        self._capture = capture
        return self

    def close(self) -> None:
        super().close()
        if self._capture is not None:
            release_capture(self._capture)
            self._capture = None

    def __iter__(self) -> Iterator[Frame]:
        capture = self._capture
        if capture is None:
            raise SourceError(f"{self.name}: use the source in a 'with' block")
        pacer = Pacer(self.options.max_fps, self._waiter, self._clock)
        index = 0
        while not self._waiter.stopped():
            if index % self.options.every:
                if not capture.grab():
                    break
                self.stats.captured += 1
                self.stats.skipped += 1
                index += 1
                continue
            if not pacer.ready():
                return
            wall, start = self._wall(), self._clock()
            ok, image = capture.read()
            if not ok or image is None:
                break
            self.stats.captured += 1
            yield Frame(image, index, wall, self.name, captured=start, read_ms=(self._clock() - start) * 1000)
            index += 1
        expected = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if not self._waiter.stopped() and expected > 0 and index < expected - 1:
            log.warning("%s: ended at frame %d of %d (truncated or corrupt file)", self.name, index, expected)
