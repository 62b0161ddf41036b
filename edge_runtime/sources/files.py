"""File sources: image files, folders read once, and watched folders that a line camera drops files into.

Reading never raises for a bad file: :func:`read_file_frame` turns every problem (0 bytes, truncated JPEG,
text named .jpg, unreadable, not a regular file, deleted while queued, more pixels than ``max_pixels``) into a
:class:`Frame` with ``image=None`` and ``error`` naming the file. The pixel limit is checked on the file header
before decoding, so a huge (or maliciously crafted) image cannot exhaust the device's memory.

Watching (:class:`FolderWatcher`): each scan lists the folder; a new or changed file is ready once its size and
mtime were the same on two consecutive scans *and* it looks complete (JPEG end-of-image marker, PNG ``IEND``,
BMP size field, size > 0). A file that still looks incomplete after ``settle_s`` unchanged seconds is handed
over anyway, so that it gets an error record instead of waiting forever. Files are identified by (absolute
path, size, mtime_ns): the same path with new content counts as a new file.
"""

from __future__ import annotations

import glob
import logging
import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import cv2

from edge_runtime.errors import ImageReadError, SourceError
from edge_runtime.preprocessing import IMAGE_SUFFIXES, is_image_file, read_image
from edge_runtime.sources.base import Frame, Pacer, Source, SourceOptions

log = logging.getLogger(__name__)

_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def read_file_frame(path: str, index: int, source: str, clock: Callable[[], float] = time.monotonic,
                    wall: Callable[[], float] = time.time, max_pixels: int | None = None) -> Frame:
    """Read one image file into a Frame; any problem gives a Frame with ``error`` naming the file (never raises)."""
    when, start = wall(), clock()
    size = mtime = None
    image, error = None, None
    try:
        info = os.stat(path)
        size, mtime = info.st_size, info.st_mtime_ns
        if not stat.S_ISREG(info.st_mode):
            raise ImageReadError(path, "not a regular file (a directory, pipe or device); remove it from the input")
        _check_pixels(path, max_pixels)
        image = read_image(path)
    except ImageReadError as exc:
        error = str(exc)
    except OSError as exc:  # deleted while queued, no permission, dangling link
        error = str(ImageReadError(path, f"{exc.strerror or exc}; check that the file exists and is readable"))
        if size is None:
            size, mtime = _link_signature(path)  # a dangling link is reported once, not on every restart
    except (ValueError, cv2.error, MemoryError) as exc:
        error = str(ImageReadError(path, f"decoding failed ({type(exc).__name__}: {exc})"))
    return Frame(image, index, when, source, path=path, error=error, captured=start,
                 read_ms=(clock() - start) * 1000, file_size=size, file_mtime_ns=mtime)


def _link_signature(path: str) -> tuple[int | None, int | None]:
    try:
        info = os.lstat(path)
    except OSError:
        return None, None
    return info.st_size, info.st_mtime_ns


def _check_pixels(path: str, max_pixels: int | None) -> None:
    if not max_pixels:
        return
    dimensions = image_dimensions(path)
    if dimensions is not None and dimensions[0] * dimensions[1] > max_pixels:
        width, height = dimensions
        raise ImageReadError(
            path, f"{width}x{height} is {width * height / 1e6:.0f} megapixels, more than the limit of "
            f"{max_pixels / 1e6:g} (it could exhaust the memory); shrink it or raise --max-megapixels"
        )


def image_dimensions(path: str) -> tuple[int, int] | None:
    """(width, height) from the header of a PNG, JPEG, BMP, WebP or TIFF file; None if not known.

    Raises OSError when the file cannot be read.
    """
    with open(path, "rb") as handle:
        head = handle.read(32)
        try:
            if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
                return _int(head[16:20], "big"), _int(head[20:24], "big")
            if head[:2] == b"BM" and len(head) >= 26:
                return abs(_int(head[18:22], "little", True)), abs(_int(head[22:26], "little", True))
            if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
                return _webp_dimensions(head)
            if head[:2] == b"\xff\xd8":
                return _jpeg_dimensions(handle)
            if head[:4] in (b"II*\x00", b"MM\x00*"):
                order = "little" if head[:2] == b"II" else "big"
                return _tiff_dimensions(handle, order, _int(head[4:8], order))
        except (ValueError, IndexError, OSError):
            return None
    return None


def _int(data: bytes, order: str, signed: bool = False) -> int:
    if not data:
        raise ValueError("short header")
    return int.from_bytes(data, order, signed=signed)  # type: ignore[arg-type]


def _webp_dimensions(head: bytes) -> tuple[int, int] | None:
    chunk = head[12:16]
    if chunk == b"VP8X":
        return 1 + _int(head[24:27], "little"), 1 + _int(head[27:30], "little")
    if chunk == b"VP8L":
        bits = _int(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":
        return _int(head[26:28], "little") & 0x3FFF, _int(head[28:30], "little") & 0x3FFF
    return None


def _jpeg_dimensions(handle: BinaryIO) -> tuple[int, int] | None:
    """Walk the JPEG segments to the first start-of-frame marker."""
    handle.seek(2)
    for _ in range(4096):
        prefix = handle.read(1)
        if prefix != b"\xff":
            return None
        marker = handle.read(1)
        while marker == b"\xff":  # fill bytes
            marker = handle.read(1)
        if not marker or marker[0] in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            return None
        if marker[0] == 0x01 or 0xD0 <= marker[0] <= 0xD7:  # markers without a length
            continue
        length = _int(handle.read(2), "big")
        if marker[0] in _JPEG_SOF:
            data = handle.read(5)
            return _int(data[3:5], "big"), _int(data[1:3], "big")
        handle.seek(length - 2, os.SEEK_CUR)
    return None


def _tiff_dimensions(handle: BinaryIO, order: str, offset: int) -> tuple[int, int] | None:
    handle.seek(offset)
    count = _int(handle.read(2), order)
    if count > 4096:
        return None
    entries = handle.read(12 * count)
    found: dict[int, int] = {}
    for i in range(count):
        entry = entries[12 * i: 12 * i + 12]
        if len(entry) < 12:
            break
        tag, kind = _int(entry[0:2], order), _int(entry[2:4], order)
        if tag in (256, 257) and kind in (3, 4):  # ImageWidth / ImageLength, SHORT or LONG
            found[tag] = _int(entry[8:10] if kind == 3 else entry[8:12], order)
    return (found[256], found[257]) if 256 in found and 257 in found else None


def list_images(folder: str | Path, recursive: bool = False, exclude: Iterable[str] = ()) -> list[str]:
    """Absolute paths of the image files in ``folder`` (sorted; hidden names and ``exclude`` folders left out).

    Non-directory entries with an image suffix are listed even when they cannot be read, so that they get an
    error record instead of vanishing silently.
    """
    root = os.path.abspath(folder)
    excluded = {os.path.abspath(p) for p in exclude}
    found: list[str] = []
    pending = [root]
    while pending:
        current = pending.pop()
        try:
            with os.scandir(current) as entries:
                for entry in entries:
                    if entry.name.startswith("."):
                        continue
                    path = os.path.join(current, entry.name)
                    if _is_dir(entry):
                        if recursive and not entry.is_symlink() and path not in excluded:
                            pending.append(path)
                    elif is_image_file(entry.name):
                        found.append(path)
        except OSError as exc:
            log.warning("cannot list '%s': %s", current, exc.strerror or exc)
    return sorted(found)


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def looks_complete(path: str, size: int) -> bool:
    """Heuristic for watched folders: is this file completely written? (JPEG/PNG/BMP end markers; size > 0)."""
    if size <= 0:
        return False
    suffix = os.path.splitext(path)[1].lower()
    try:
        with open(path, "rb") as handle:
            if suffix == ".bmp":
                header = handle.read(6)
                return len(header) == 6 and header[:2] == b"BM" and int.from_bytes(header[2:6], "little") <= size
            if suffix in (".jpg", ".jpeg", ".png"):
                handle.seek(max(0, size - 4096))
                tail = handle.read()
                return (b"\xff\xd9" in tail) if suffix != ".png" else (b"IEND" in tail[-64:])
    except OSError:
        return False
    return True


class FilesSource(Source):
    """An explicit list of image files (globs expanded, folders listed), read in order; resumable via ``done``."""

    throughput = True

    def __init__(self, inputs: Sequence[str | Path], options: SourceOptions | None = None,
                 name: str = "files", **kwargs) -> None:
        super().__init__(name, options or SourceOptions(), **kwargs)
        self._inputs = list(inputs)
        self.paths: list[str] = []

    def __enter__(self) -> FilesSource:
        self.paths = self._expand()
        if not self.paths:
            raise SourceError(f"{self.name}: no image files found in {[str(i) for i in self._inputs]}; "
                              f"image files end in {', '.join(IMAGE_SUFFIXES)}")
        return self

    def _expand(self) -> list[str]:
        paths: list[str] = []
        for item in self._inputs:
            text = str(item)
            if os.path.isdir(text):
                paths += list_images(text, self.options.recursive, self.options.exclude)
            elif not os.path.lexists(text) and glob.has_magic(text):
                matches = sorted(p for p in glob.glob(text, recursive=True) if is_image_file(p))
                if not matches:
                    log.warning("'%s' matches no image file", text)
                paths += [os.path.abspath(p) for p in matches if not os.path.isdir(p)]
            else:
                paths.append(os.path.abspath(text))  # missing/unreadable ones get an error record
        return list(dict.fromkeys(paths))  # unique, in order

    def __iter__(self) -> Iterator[Frame]:
        yield from self._read_paths(self.paths)

    def _read_paths(self, paths: Iterable[str]) -> Iterator[Frame]:
        pacer = Pacer(self.options.max_fps, self._waiter, self._clock)
        for index, path in _admitted(self._not_done(paths), self.stats, self.options, pacer, self._waiter):
            yield read_file_frame(path, index, self.name, self._clock, self._wall, self.options.max_pixels)

    def _not_done(self, paths: Iterable[str]) -> Iterator[str]:
        for path in paths:
            if _already_done(path, self.options.done):
                self.stats.resumed += 1
            else:
                yield path


def _admitted(paths: Iterable[str], stats, options, pacer: Pacer, waiter) -> Iterator[tuple[int, str]]:
    """(frame index, path) of each file to read now: counts it, honours ``--every`` and ``--max-fps``."""
    for path in paths:
        if waiter.stopped():
            return
        index = stats.captured
        stats.captured += 1
        if index % options.every:
            stats.skipped += 1
            continue
        if not pacer.ready():
            return
        yield index, path


def _already_done(path: str, done: Mapping[str, tuple[int, int]]) -> bool:
    if path not in done:
        return False
    try:
        info = os.stat(path)
    except OSError:
        return False
    return done[path] == (info.st_size, info.st_mtime_ns)


class FolderSource(FilesSource):
    """The image files of a folder, read once in name order (``recursive`` for sub-folders)."""

    def __init__(self, folder: str | Path, options: SourceOptions | None = None, **kwargs) -> None:
        self.folder = os.path.abspath(folder)
        super().__init__([self.folder], options, name=f"folder:{self.folder}", **kwargs)

    def __enter__(self) -> FolderSource:
        if not os.path.isdir(self.folder):
            raise SourceError(f"folder '{self.folder}': no such folder; check the path")
        self.paths = list_images(self.folder, self.options.recursive, self.options.exclude)
        if not self.paths:
            log.warning("%s: no image files", self.name)
        return self


@dataclass
class _Seen:
    signature: tuple[int, int]  # (size, mtime_ns)
    since: float  # monotonic time the signature was first seen


class FolderWatcher:
    """Decides which files of a watched folder are ready: new, unchanged across two polls, complete-looking.

    ``poll()`` returns the ready paths (oldest first) and remembers them as done; memory is bounded by the
    folder's contents (entries of files that disappeared are forgotten).
    """

    def __init__(self, folder: str, recursive: bool = False, settle_s: float = 10.0,
                 done: Mapping[str, tuple[int, int]] | None = None, exclude: Iterable[str] = (),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.folder = folder
        self.recursive = recursive
        self.settle_s = settle_s
        self.exclude = tuple(exclude)
        self.done: dict[str, tuple[int, int]] = dict(done or {})
        self._pending: dict[str, _Seen] = {}
        self._clock = clock
        self._folder_missing = False

    def poll(self) -> list[str]:
        now = self._clock()
        present: dict[str, tuple[int, int]] = {}
        if not os.path.isdir(self.folder):
            if not self._folder_missing:
                log.warning("watched folder '%s' is missing; waiting for it to come back", self.folder)
            self._folder_missing = True
            return []
        if self._folder_missing:
            log.info("watched folder '%s' is back", self.folder)
            self._folder_missing = False
        ready: list[tuple[int, str]] = []
        for path in list_images(self.folder, self.recursive, self.exclude):
            try:
                info = os.stat(path)
                signature = (info.st_size, info.st_mtime_ns)
            except OSError:  # a dangling link gets an error record once it is stable; a vanished file is gone
                info = None
                size, mtime = _link_signature(path)
                if size is None or mtime is None:
                    continue
                signature = (size, mtime)
            present[path] = signature
            if self.done.get(path) == signature:
                continue
            seen = self._pending.get(path)
            if seen is None or seen.signature != signature:
                self._pending[path] = _Seen(signature, now)  # new or still changing
                continue
            complete = info is not None and looks_complete(path, info.st_size)
            if complete or now - seen.since >= self.settle_s:
                ready.append((signature[1], path))
        self._pending = {p: s for p, s in self._pending.items() if p in present}
        self.done = {p: s for p, s in self.done.items() if p in present}
        ready.sort()
        for _, path in ready:
            self.done[path] = present[path]
            del self._pending[path]
        return [path for _, path in ready]

    def mark_done(self, path: str, signature: tuple[int, int]) -> None:
        """Record the version actually read (it may differ from the polled one)."""
        self.done[path] = signature


class WatchedFolderSource(FilesSource):
    """Yields each new file of a folder once it is completely written; runs until stopped."""

    throughput = False  # files arrive one by one and each answer is wanted as soon as the file is written

    def __init__(self, folder: str | Path, options: SourceOptions | None = None, **kwargs) -> None:
        self.folder = os.path.abspath(folder)
        super().__init__([self.folder], options, name=f"folder:{self.folder}", **kwargs)
        self.watcher = FolderWatcher(self.folder, self.options.recursive, self.options.settle_s,
                                     self.options.done, self.options.exclude, self._clock)

    def __enter__(self) -> WatchedFolderSource:
        if not os.path.isdir(self.folder):
            raise SourceError(f"folder '{self.folder}': no such folder; check the path")
        self.stats.resumed = sum(1 for p in list_images(self.folder, self.options.recursive, self.options.exclude)
                                 if _already_done(p, self.options.done))
        log.info("watching %s (poll every %.2f s)", self.folder, self.options.poll_s)
        return self

    def __iter__(self) -> Iterator[Frame]:
        pacer = Pacer(self.options.max_fps, self._waiter, self._clock)
        while not self._waiter.stopped():
            for index, path in _admitted(self.watcher.poll(), self.stats, self.options, pacer, self._waiter):
                frame = read_file_frame(path, index, self.name, self._clock, self._wall,
                                        self.options.max_pixels)
                if frame.file_size is not None and frame.file_mtime_ns is not None:
                    self.watcher.mark_done(path, (frame.file_size, frame.file_mtime_ns))
                yield frame
            if self._waiter.wait(self.options.poll_s):
                return


