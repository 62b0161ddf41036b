"""Record writers: one record per frame or file as JSON Lines or CSV, and reading such a file back to resume.

Writers flush every record (and fsync at most once a second and on close), so a killed process loses nothing
it reported. An existing output file is appended to, never rewritten (``overwrite=True`` starts afresh); a
second process writing the same file is refused (POSIX lock). Failures raise :class:`SinkError`: the run
cannot go on without its results. :func:`read_done_files` reads such a file back for resuming: a file counts
as done when a record names its path, size and mtime (``file``, ``file_size``, ``file_mtime_ns``), whether it
was classified or got an error.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from edge_runtime.errors import SinkError
from edge_runtime.records import RECORD_FIELDS, Result
from edge_runtime.sinks.base import Sink

try:
    import fcntl
except ImportError:  # not POSIX: no cross-process lock
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

RECORD_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
FSYNC_INTERVAL_S = 1.0


class RecordWriter(Sink):
    """Base of the JSONL/CSV writers: append-only text output, flushed per record, lock held while open."""

    kind = "records"

    def __init__(self, path: str | Path | None, overwrite: bool = False) -> None:
        self.path = None if path in (None, "-") else Path(path)  # None: stdout
        self.overwrite = overwrite
        self.count = 0
        self._handle: TextIO | None = None
        self._last_sync = 0.0

    @property
    def where(self) -> str:
        return "stdout" if self.path is None else str(self.path)

    def __enter__(self) -> RecordWriter:
        if self.path is None:
            self._handle = sys.stdout
        else:
            self._handle = self._open_file(self.path)
        return self

    def _open_file(self, path: Path) -> TextIO:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(path, "a", encoding="utf-8", newline="")
        except OSError as exc:
            raise SinkError(f"cannot open output '{path}': {exc.strerror or exc}; choose a writable path") from exc
        try:
            _lock(handle, path)
            if self.overwrite:
                handle.truncate(0)
            elif _ends_without_newline(path):
                handle.write("\n")  # a record cut off by a crash stays on its own (ignored) line
            self._prepare(handle, path)
            handle.flush()
        except BaseException:
            handle.close()
            raise
        return handle

    def _prepare(self, handle: TextIO, path: Path) -> None:
        """Called once on an opened file (e.g. to write or check a header)."""

    def emit(self, result: Result) -> None:
        self.write(result.record)

    def write(self, record: dict[str, Any]) -> None:
        if self._handle is None:
            raise SinkError(f"output '{self.where}' is not open")
        try:
            self._handle.write(self._format(record))
            self._handle.flush()
            self.count += 1
            now = time.monotonic()
            if self.path is not None and now - self._last_sync >= FSYNC_INTERVAL_S:
                os.fsync(self._handle.fileno())
                self._last_sync = now
        except BrokenPipeError as exc:
            _silence_stdout()
            raise SinkError("stdout was closed by the reader; stopping") from exc
        except OSError as exc:
            raise SinkError(f"cannot write to output '{self.where}': {exc.strerror or exc}") from exc

    def _format(self, record: dict[str, Any]) -> str:
        raise NotImplementedError

    def close(self) -> None:
        handle, self._handle = self._handle, None
        if handle is None or self.path is None:
            return
        try:
            handle.flush()
            os.fsync(handle.fileno())
        except OSError as exc:
            log.error("could not flush output '%s': %s", self.path, exc.strerror or exc)
        finally:
            handle.close()


class JsonlWriter(RecordWriter):
    """One JSON object per line (stdout when ``path`` is None or "-")."""

    kind = "jsonl"

    def _format(self, record: dict[str, Any]) -> str:
        return json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n"


class CsvWriter(RecordWriter):
    """CSV with the columns of :data:`~edge_runtime.records.RECORD_FIELDS` (header once); top-3 as
    ``label:confidence;...``."""

    kind = "csv"

    def _prepare(self, handle: TextIO, path: Path) -> None:
        header = _first_line(path)
        if header is None:
            handle.write(",".join(RECORD_FIELDS) + "\n")
        elif header.rstrip("\r\n") != ",".join(RECORD_FIELDS):
            raise SinkError(f"'{path}' has other columns than edge-classify writes; use another --output file "
                            "or --overwrite")

    def _format(self, record: dict[str, Any]) -> str:
        row = dict(record)
        row["top3"] = ";".join(f"{t['label']}:{t['confidence']}" for t in record.get("top3") or [])
        for flag in ("uncertain", "unknown"):
            row[flag] = "" if record.get(flag) is None else str(bool(record[flag])).lower()
        buffer = io.StringIO()
        csv.DictWriter(buffer, RECORD_FIELDS, extrasaction="ignore", lineterminator="\n").writerow(
            {k: "" if row.get(k) is None else row[k] for k in RECORD_FIELDS}
        )
        return buffer.getvalue()


def open_record_writer(path: str | Path | None, overwrite: bool = False) -> RecordWriter:
    """JSONL or CSV writer by suffix (.jsonl/.ndjson/.csv); None or "-" is JSON Lines on stdout."""
    if path in (None, "-"):
        return JsonlWriter(None)
    kind = RECORD_SUFFIXES.get(Path(path).suffix.lower())
    if kind is None:
        raise ValueError(f"--output '{path}': use a .jsonl or .csv file name")
    return (CsvWriter if kind == "csv" else JsonlWriter)(path, overwrite)


def _lock(handle: TextIO, path: Path) -> None:
    if fcntl is None:
        return
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        raise SinkError(f"output '{path}' is in use by another process (another edge-classify?); stop it or "
                        "choose another --output") from exc


def _ends_without_newline(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() == 0:
                return False
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) != b"\n"
    except OSError:
        return False


def _first_line(path: Path) -> str | None:
    """The first line of a non-empty file, None for an empty one."""
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        line = handle.readline()
    return line or None


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so that the interpreter's final flush stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


# --- reading records back (resume) ---------------------------------------------------------------------------


def read_done_files(path: str | Path) -> dict[str, tuple[int, int]]:
    """``{file: (file_size, file_mtime_ns)}`` of every file recorded in a JSONL or CSV output (latest wins).

    Lines that do not parse (e.g. a record cut off by a power loss) are ignored, so those files run again.
    A missing file gives an empty dict.
    """
    path = Path(path)
    if not path.is_file():
        return {}
    records = _csv_records(path) if RECORD_SUFFIXES.get(path.suffix.lower()) == "csv" else _jsonl_records(path)
    done: dict[str, tuple[int, int]] = {}
    for record in records:
        key = _file_key(record)  # None for frames of a stream, and for files that could not even be stat'ed
        if key is not None:
            done[key[0]] = key[1]
    return done


def _jsonl_records(path: Path) -> Iterator[dict[str, Any] | None]:
    bad, first_bad = 0, 0
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                bad, first_bad = bad + 1, first_bad or number
                continue
            yield record if isinstance(record, dict) else None
    if bad:
        log.warning("%s: %d line(s) are not complete records (first: line %d); ignored, their files run again",
                    path, bad, first_bad)


def _csv_records(path: Path) -> Iterator[dict[str, Any] | None]:
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        for row in csv.DictReader(handle):
            sha = row.get("model_sha256") or ""
            complete = None not in row and len(sha) == 64  # the last column: a cut-off row fails this
            yield row if complete else None


def _file_key(record: dict[str, Any] | None) -> tuple[str, tuple[int, int]] | None:
    if not record or not record.get("file"):
        return None
    try:
        return str(record["file"]), (int(record["file_size"]), int(record["file_mtime_ns"]))
    except (KeyError, TypeError, ValueError):
        return None
