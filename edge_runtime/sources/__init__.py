"""Where frames come from: cameras, video files and streams, folders (optionally watched), lists of files.

Every source is a context manager and an iterable of :class:`~edge_runtime.sources.base.Frame`::

    with open_source(0, SourceOptions(max_fps=5)) as source:   # or "line3.mp4", "rtsp://...", "DIR", [files]
        for frame in source:
            ...

* :mod:`~edge_runtime.sources.base`: what all sources share (Frame, options, the Source base, stop-aware
  waiting, pacing, reading a source spec);
* :mod:`~edge_runtime.sources.files`: image files, folders and watched folders (bad files become error frames);
* :mod:`~edge_runtime.sources.video`: video files;
* :mod:`~edge_runtime.sources.live`: cameras and streams (a reader thread keeps only the newest frame,
  reconnects with back-off).

A new kind of source (e.g. a GenICam camera) is a module here with a :class:`~edge_runtime.sources.base.Source`
subclass, plus its line in :func:`open_source`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from edge_runtime.sources.base import (
    Frame,
    Source,
    SourceOptions,
    StopCheck,
    guess_kind,
    is_stream_url,
    never_stop,
    redact_url,
)
from edge_runtime.sources.files import FilesSource, FolderSource, WatchedFolderSource
from edge_runtime.sources.camera import CAMERA_KINDS, CameraSource
from edge_runtime.sources.features import CameraConfig
from edge_runtime.sources.live import LiveSource, camera_opener, stream_opener
from edge_runtime.sources.video import VideoFileSource

__all__ = ["Frame", "Source", "SourceOptions", "open_source"]


def open_source(
    spec: int | str | Path | Sequence[str | Path],
    options: SourceOptions | None = None,
    kind: str | None = None,
    should_stop: StopCheck = never_stop,
    camera: CameraConfig | None = None,
) -> Source:
    """The source for ``spec``: a camera index, a video file, a stream URL, a folder, or a list of image files.

    ``kind`` ("camera", "video", "folder", "files") forces the interpretation; otherwise it is guessed.
    ``kind`` "genicam" / "gige" opens an industrial camera set up by ``camera`` (see :mod:`.genicam`).
    Nothing is opened until the source is entered (``with``). Raises SourceError for a path that does not exist.
    """
    options = options or SourceOptions()
    common = {"should_stop": should_stop}
    if kind in CAMERA_KINDS:  # GenICam: spec is the GenTL producer (genicam) or the address (gige); see camera.py
        return open_camera_source(kind, spec, options, camera, should_stop)
    kind = kind or guess_kind(spec)
    if kind == "camera":
        index = int(spec)  # type: ignore[arg-type]
        return LiveSource(f"camera:{index}", camera_opener(index, options), options, **common)
    if kind == "files":
        items = [spec] if isinstance(spec, (str, Path)) else list(spec)  # type: ignore[arg-type]
        return FilesSource(items, options, **common)
    text = str(spec)
    if kind == "folder":
        cls = WatchedFolderSource if options.watch else FolderSource
        return cls(text, options, **common)
    if kind == "video":
        if is_stream_url(text) or text.startswith("/dev/"):
            return LiveSource(f"stream:{redact_url(text)}", stream_opener(text, options), options, **common)
        return VideoFileSource(text, options, **common)
    raise ValueError(f"unknown source kind {kind!r}; use camera, video, folder or files")


def open_camera_source(kind: str, spec: object, options: SourceOptions | None = None,
                       config: CameraConfig | None = None, should_stop: StopCheck = never_stop) -> CameraSource:
    """``kind`` "genicam" (``spec``: producer .cti, folder, or None for $GENICAM_GENTL64_PATH) or "gige"
    (``spec``: the camera's address), set up by ``config``."""
    config = config or CameraConfig()
    if kind == "genicam":
        from edge_runtime.sources.genicam import genicam_source

        return genicam_source(None if spec in (None, "") else str(spec), config, options, should_stop)
    if kind == "gige":
        from edge_runtime.sources.gige import gige_source

        return gige_source(str(spec or ""), config, options, should_stop)
    raise ValueError(f"unknown camera kind {kind!r}; use {' or '.join(CAMERA_KINDS)}")
