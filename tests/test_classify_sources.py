"""edge-classify sources: live capture (reader thread, drops, reconnect/back-off), video files, files, folders, watch.

Nothing here needs a model. Cameras are fakes (scripted reads and opens) or a video written with
cv2.VideoWriter; the back-off sleep and the clocks are injected, so no test really waits for a reconnect.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import synthetic_image
from edge_runtime.errors import SourceError, SourceLost
from edge_runtime.sources import open_source
from edge_runtime.sources.base import SourceOptions, backoff_delay, redact_url
from edge_runtime.sources.files import (
    FilesSource,
    FolderSource,
    FolderWatcher,
    WatchedFolderSource,
    image_dimensions,
    list_images,
    looks_complete,
    read_file_frame,
)
from edge_runtime.sources.live import LiveSource
from edge_runtime.sources.video import VideoFileSource


class Endless:
    """A read script that never runs out of good frames."""

    def __bool__(self) -> bool:
        return True

    def popleft(self) -> bool:
        return True


class FakeCamera:
    """An opener whose captures follow a script: ``reads`` (True = a frame, False = a failed read; when the
    script runs out every read fails) and ``opens`` (False = that open fails; afterwards opens succeed).

    Each successful read advances ``t`` by ``frame_s`` (the fake clock of the capture thread).
    """

    def __init__(self, reads, opens=(), frame_s: float = 1 / 32) -> None:
        self.reads, self.opens = reads if isinstance(reads, Endless) else deque(reads), list(opens)
        self.frame_s = frame_s
        self.t = 0.0
        self.frames = 0
        self.open_calls = self.released = 0

    def __call__(self) -> "FakeCapture":
        self.open_calls += 1
        return FakeCapture(self, self.opens.pop(0) if self.opens else True)

    def clock(self) -> float:
        return self.t


class FakeCapture:
    def __init__(self, camera: FakeCamera, opened: bool) -> None:
        self.camera, self.opened = camera, opened

    def isOpened(self) -> bool:  # noqa: N802
        return self.opened

    def read(self):
        camera = self.camera
        if not camera.reads or not camera.reads.popleft():
            return False, None
        camera.t += camera.frame_s
        camera.frames += 1
        return True, np.full((6, 8, 3), camera.frames % 256, np.uint8)

    def release(self) -> None:
        self.camera.released += 1


def live(camera: FakeCamera, delays: list, **options) -> LiveSource:
    return LiveSource("camera:fake", camera, SourceOptions(**options), sleep=delays.append, clock=camera.clock)


def drain(source: LiveSource) -> tuple[list, Exception | None]:
    frames, error = [], None
    try:
        for frame in source:
            frames.append(frame)
    except SourceLost as exc:
        error = exc
    return frames, error


# --- live sources: reconnect, back-off, drops -------------------------------------------------------------


def test_backoff_doubles_from_the_base_and_is_capped():
    options = SourceOptions(backoff_s=0.5, backoff_max_s=4.0)
    assert [backoff_delay(n, options) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_a_stream_that_fails_reads_reconnects_with_backoff_then_recovers():
    camera = FakeCamera([True, True, False, False, False, True, True])
    delays: list[float] = []
    started = time.monotonic()
    with live(camera, delays, retries=5) as source:
        frames, error = drain(source)
    assert time.monotonic() - started < 5, "the back-off must be injected, not really waited"
    # outage 1: three failed reads, then frames again; outage 2 (script exhausted): gives up after 5 attempts
    assert delays == [0.5, 1.0, 2.0, 0.5, 1.0, 2.0, 4.0, 8.0]
    assert isinstance(error, SourceLost) and "5 reconnect attempts" in str(error)
    assert len(frames) + source.stats.dropped == 4
    assert source.stats.read_failures == 3 + 6 and source.stats.reconnects == 3 + 5
    assert camera.released == camera.open_calls, "every capture opened was released"
    assert [f.index for f in frames] == sorted({f.index for f in frames})


def test_a_camera_that_never_opens_is_a_clear_error_after_bounded_retries():
    camera = FakeCamera([], opens=[False] * 10)
    delays: list[float] = []
    with pytest.raises(SourceError, match=r"camera:fake: could not be opened \(4 attempts\).*index"):
        live(camera, delays, retries=3).__enter__()
    assert delays == [0.5, 1.0, 2.0] and camera.open_calls == 4


def test_a_camera_that_opens_on_a_later_attempt_is_used():
    camera = FakeCamera([True] * 3, opens=[False, False])
    delays: list[float] = []
    with live(camera, delays, retries=2) as source:
        frames, error = drain(source)
    assert delays[:2] == [0.5, 1.0] and len(frames) + source.stats.dropped == 3 and error is not None


def test_the_reader_keeps_only_the_newest_frame_and_counts_the_dropped_ones():
    camera = FakeCamera([True] * 300)
    delays: list[float] = []
    with live(camera, delays, retries=0) as source:
        frames = []
        with pytest.raises(SourceLost):
            for frame in source:
                frames.append(frame)
                time.sleep(0.002)  # a consumer slower than the camera
    indices = [f.index for f in frames]
    assert indices == sorted(set(indices))
    assert len(frames) + source.stats.dropped == 300 and source.stats.skipped == 0
    assert indices[-1] == 299, "the newest frame is always delivered"


@pytest.mark.parametrize("options, kept", [({"every": 3}, 10), ({"max_fps": 8.0}, 8)], ids=["every", "max-fps"])
def test_every_and_max_fps_skip_frames_at_capture_time_not_as_drops(options, kept):
    camera = FakeCamera([True] * 30)  # 1/32 s per frame: 30 frames span ~0.94 s
    delays: list[float] = []
    with live(camera, delays, retries=0, **options) as source:
        frames, _ = drain(source)
    assert len(frames) + source.stats.dropped == kept
    assert source.stats.skipped == 30 - kept


def test_an_unexpected_failure_of_the_capture_thread_is_reported_not_a_silent_end(caplog):
    camera = FakeCamera([True, True])

    class Broken(FakeCapture):
        def read(self):
            if camera.frames == 2:
                raise TypeError("driver bug")
            return super().read()

    source = LiveSource("camera:fake", lambda: Broken(camera, True), SourceOptions(), sleep=[].append)
    with source:
        frames, error = drain(source)
    assert isinstance(error, SourceLost) and "capture thread failed (TypeError: driver bug)" in str(error)
    assert len(frames) + source.stats.dropped == 2 and camera.released == 1


def test_close_joins_the_reader_thread_and_a_stop_request_ends_iteration():
    camera = FakeCamera(Endless())
    stop = threading.Event()
    source = LiveSource("camera:fake", camera, SourceOptions(), should_stop=stop.is_set)
    with source:
        for n, _frame in enumerate(source):
            if n == 5:
                stop.set()
    assert not source._thread.is_alive() and camera.released == 1


def test_a_video_file_stands_in_for_a_camera_on_the_reader_thread(tmp_path):
    video = write_video(tmp_path / "line.avi", 12)
    delays: list[float] = []
    source = LiveSource("camera:video", lambda: cv2.VideoCapture(str(video)), SourceOptions(retries=2),
                        sleep=delays.append)
    frames = []
    with source:
        for frame in source:
            frames.append(frame)
            if len(frames) == 20:  # more than the file holds: the end of file is a failed read -> reopened
                break
    assert len(frames) == 20 and frames[0].image.shape == (48, 64, 3)
    assert delays and delays[0] == 0.5 and source.stats.reconnects >= 1
    assert not source._thread.is_alive()


def test_stream_urls_hide_passwords():
    assert redact_url("rtsp://admin:s3cret@10.0.0.5:554/stream1") == "rtsp://admin:***@10.0.0.5:554/stream1"
    assert redact_url("rtsp://10.0.0.5/stream1") == "rtsp://10.0.0.5/stream1"
    source = open_source("rtsp://admin:s3cret@10.0.0.5/x")
    assert source.name == "stream:rtsp://admin:***@10.0.0.5/x"


# --- video files ------------------------------------------------------------------------------------------


def write_video(path: Path, frames: int, size=(64, 48)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), i * 10, np.uint8))
    writer.release()
    return path


def test_a_video_file_is_read_frame_by_frame_and_every_n_skips(tmp_path):
    video = write_video(tmp_path / "clip.avi", 20)
    with open_source(str(video)) as source:
        assert isinstance(source, VideoFileSource)
        frames = list(source)
    assert [f.index for f in frames] == list(range(20))
    assert abs(int(frames[7].image.mean()) - 70) <= 3
    with open_source(str(video), SourceOptions(every=3), kind="video") as source:
        assert [f.index for f in source] == list(range(0, 20, 3))
    assert source.stats.skipped == 20 - 7


def test_a_missing_or_undecodable_video_is_a_setup_error(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        open_source(str(tmp_path / "missing.avi"), kind="video").__enter__()
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"not a video" * 100)
    with pytest.raises(SourceError, match="cannot open it"):
        open_source(str(junk), kind="video").__enter__()


# --- files and folders ------------------------------------------------------------------------------------


def write_images(folder: Path, names: list[str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, name in enumerate(names):
        cv2.imwrite(str(folder / name), synthetic_image(i % 6, i))
        paths.append(folder / name)
    return paths


def test_a_folder_lists_images_in_order_skipping_hidden_files_and_excluded_folders(tmp_path):
    write_images(tmp_path, ["b.png", "a.jpg", ".hidden.jpg"])
    write_images(tmp_path / "sub", ["c.bmp"])
    write_images(tmp_path / "sorted", ["d.png"])
    (tmp_path / "notes.txt").write_text("x")
    names = lambda paths: [os.path.relpath(p, tmp_path) for p in paths]  # noqa: E731
    assert names(list_images(tmp_path)) == ["a.jpg", "b.png"]
    assert names(list_images(tmp_path, recursive=True, exclude=[tmp_path / "sorted"])) == ["a.jpg", "b.png",
                                                                                            "sub/c.bmp"]


def test_a_file_deleted_while_queued_becomes_an_error_frame(tmp_path):
    paths = write_images(tmp_path, ["1.png", "2.png", "3.png"])
    with FolderSource(tmp_path) as source:
        frames = []
        for frame in source:
            frames.append(frame)
            if len(frames) == 1:
                paths[1].unlink()
    assert [f.error is None for f in frames] == [True, False, True]
    assert "2.png" in frames[1].error and "No such file" in frames[1].error and frames[1].image is None


def test_files_and_globs_are_expanded_deduplicated_and_missing_ones_reported(tmp_path):
    write_images(tmp_path, ["a.png", "b.png", "c.jpg"])
    inputs = [str(tmp_path / "*.png"), str(tmp_path / "a.png"), str(tmp_path / "gone.jpg")]
    with FilesSource(inputs) as source:
        frames = list(source)
    assert [Path(f.path).name for f in frames] == ["a.png", "b.png", "gone.jpg"]
    assert frames[2].error and "gone.jpg" in frames[2].error
    with pytest.raises(SourceError, match="no image files"):
        FilesSource([str(tmp_path / "*.tif")]).__enter__()


def test_files_already_done_are_skipped_only_while_unchanged(tmp_path):
    a, b = write_images(tmp_path, ["a.png", "b.png"])
    info = a.stat()
    done = {str(a): (info.st_size, info.st_mtime_ns), str(b): (1, 1)}
    with FolderSource(tmp_path, SourceOptions(done=done)) as source:
        assert [Path(f.path).name for f in source] == ["b.png"]
    assert source.stats.resumed == 1


def test_a_fifo_is_reported_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    frame = read_file_frame(str(fifo), 0, "files")
    assert frame.image is None and "not a regular file" in frame.error


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".webp", ".tif"])
def test_image_dimensions_are_read_from_the_header(tmp_path, suffix):
    path = tmp_path / f"x{suffix}"
    cv2.imwrite(str(path), np.zeros((37, 53, 3), np.uint8))
    assert image_dimensions(str(path)) == (53, 37)


def test_an_image_with_too_many_pixels_is_refused_before_decoding(tmp_path):
    path = tmp_path / "huge.png"
    cv2.imwrite(str(path), np.zeros((8, 8), np.uint8))
    data = bytearray(path.read_bytes())
    data[16:24] = (30000).to_bytes(4, "big") + (20000).to_bytes(4, "big")  # claims 600 megapixels
    path.write_bytes(bytes(data))
    frame = read_file_frame(str(path), 0, "files", max_pixels=64_000_000)
    assert frame.image is None and "600 megapixels" in frame.error and "huge.png" in frame.error


def test_completeness_needs_the_end_marker(tmp_path):
    jpg, png = tmp_path / "a.jpg", tmp_path / "a.png"
    cv2.imwrite(str(jpg), synthetic_image(0, 0))
    cv2.imwrite(str(png), synthetic_image(0, 0))
    for path in (jpg, png):
        data = path.read_bytes()
        assert looks_complete(str(path), len(data))
        path.write_bytes(data[: len(data) // 2])
        assert not looks_complete(str(path), len(data) // 2)
    empty = tmp_path / "e.jpg"
    empty.write_bytes(b"")
    assert not looks_complete(str(empty), 0)


# --- watching ---------------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_a_watched_file_is_ready_only_once_complete_and_stable(tmp_path):
    clock = Clock()
    watcher = FolderWatcher(str(tmp_path), settle_s=10, clock=clock)
    cv2.imwrite(str(tmp_path / "whole.jpg"), synthetic_image(1, 0))
    data = (tmp_path / "whole.jpg").read_bytes()
    part = tmp_path / "part.jpg"
    part.write_bytes(data[:100])  # the camera is still writing
    assert watcher.poll() == []  # first sight of both
    assert watcher.poll() == [str(tmp_path / "whole.jpg")]  # unchanged and complete
    assert watcher.poll() == []  # part.jpg: stable but no end-of-image marker yet
    with open(part, "ab") as handle:
        handle.write(data[100:])
    assert watcher.poll() == []  # changed since the last poll
    assert watcher.poll() == [str(part)]
    assert watcher.poll() == [] and watcher.poll() == []  # each file exactly once


def test_an_incomplete_looking_file_is_handed_over_after_the_settle_time(tmp_path):
    clock = Clock()
    watcher = FolderWatcher(str(tmp_path), settle_s=10, clock=clock)
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert watcher.poll() == [] and watcher.poll() == []
    clock.t += 10
    assert watcher.poll() == [str(tmp_path / "empty.jpg")]
    assert watcher.poll() == []


def test_a_rewritten_file_is_new_and_deleted_files_are_forgotten(tmp_path):
    clock = Clock()
    (path,) = write_images(tmp_path, ["a.png"])
    watcher = FolderWatcher(str(tmp_path), clock=clock)
    watcher.poll()
    assert watcher.poll() == [str(path)]
    cv2.imwrite(str(path), synthetic_image(3, 3, size=50))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    watcher.poll()
    assert watcher.poll() == [str(path)]
    path.unlink()
    watcher.poll()
    assert watcher.done == {}


def test_a_watch_resumes_from_done_files(tmp_path):
    a, b = write_images(tmp_path, ["a.png", "b.png"])
    info = a.stat()
    watcher = FolderWatcher(str(tmp_path), done={str(a): (info.st_size, info.st_mtime_ns)}, clock=Clock())
    watcher.poll()
    assert watcher.poll() == [str(b)]


def test_a_watched_folder_source_yields_new_files_and_stops_on_request(tmp_path):
    stop = threading.Event()
    options = SourceOptions(watch=True, poll_s=0.02)
    frames = []
    with open_source(str(tmp_path), options, should_stop=stop.is_set) as source:
        assert isinstance(source, WatchedFolderSource)
        write_images(tmp_path, ["1.png"])
        for frame in source:
            frames.append(frame)
            if len(frames) == 1:
                write_images(tmp_path, ["2.png"])
            else:
                stop.set()
    assert [Path(f.path).name for f in frames] == ["1.png", "2.png"]
    assert all(f.error is None for f in frames)


def test_open_source_guesses_the_kind_and_refuses_missing_paths(tmp_path):
    (image,) = write_images(tmp_path, ["a.png"])
    assert isinstance(open_source(str(tmp_path)), FolderSource)
    assert isinstance(open_source(str(image)), FilesSource)
    assert isinstance(open_source(0), LiveSource) and open_source("3").name == "camera:3"
    with pytest.raises(SourceError, match="no such file, folder or camera"):
        open_source(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="every"):
        SourceOptions(every=0)
