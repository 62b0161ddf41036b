"""Where results go: JSON Lines / CSV records, annotated frames, per-label copies, a preview window.

Record writers are context managers that flush every record (and fsync at most once a second and on close),
so a killed process loses nothing it reported. An existing output file is appended to, never rewritten
(``overwrite=True`` starts afresh); a second process writing the same file is refused (POSIX lock).
:func:`read_done_files` reads such a file back for resuming: a file counts as done when a record names its
path, size and mtime (``file``, ``file_size``, ``file_mtime_ns``), whether it was classified or got an error.

Every sink has ``emit(result)`` and ``close()``; only record writers may raise (:class:`SinkError`: the run
cannot go on without its results). Annotated frames, copies and the window log problems and carry on.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import cv2
import numpy as np

from edge_runtime.errors import SinkError
from edge_runtime.preprocessing import to_bgr8

if TYPE_CHECKING:
    from edge_runtime.pipeline import ModelInfo, Result

try:
    import fcntl
except ImportError:  # not POSIX: no cross-process lock
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

RECORD_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
# CSV columns, in order; JSON Lines records have the same keys (top3 as a list of {label, confidence}).
CSV_FIELDS = [
    "time", "source", "frame", "file", "file_size", "file_mtime_ns", "label", "confidence", "uncertain",
    "unknown", "ood_score", "predicted", "inverted", "top3", "error", "read_ms", "preprocess_ms", "inference_ms", "latency_ms", "engine", "model", "model_sha256",
]
FSYNC_INTERVAL_S = 1.0
UNCERTAIN_DIR = "_uncertain"
ERRORS_DIR = "_errors"


def make_record(result: "Result", model: "ModelInfo") -> dict[str, Any]:
    """The record of one frame or file: the same keys for results and errors (``error`` is None or a message).

    ``uncertain`` is true when the confidence is below --min-confidence (the label is kept); ``unknown`` when
    the image is unlike the training images (label "unknown", ``predicted`` keeps the best class, ``ood_score``
    the score; see edge_runtime.ood); ``inverted`` when test-time polarity kept the inverted reading
    (edge_runtime.polarity); all None for errors.
    """
    frame, prediction = result.frame, result.prediction
    record: dict[str, Any] = {
        "time": datetime.fromtimestamp(frame.timestamp, timezone.utc).isoformat(timespec="milliseconds"),
        "source": frame.source,
        "frame": frame.index,
        "file": frame.path,
        "file_size": frame.file_size,
        "file_mtime_ns": frame.file_mtime_ns,
        "label": None,
        "confidence": None,
        "uncertain": None,
        "unknown": None,
        "ood_score": None,
        "predicted": None,
        "inverted": None,
        "top3": None,
        "error": " ".join(result.error.split()) if result.error else None,  # one line (OpenCV's span several)
        "read_ms": _number(frame.read_ms, 3),
        "preprocess_ms": None,
        "inference_ms": None,
        "latency_ms": _number(result.latency_ms, 3),
        "engine": model.engine,
        "model": model.name,
        "model_sha256": model.sha256,
    }
    if prediction is not None:
        record.update(
            label=prediction.label,
            confidence=_number(prediction.confidence, 6),
            uncertain=bool(result.uncertain),
            unknown=bool(prediction.unknown),
            ood_score=_number(prediction.ood_score, 6),
            predicted=prediction.predicted,
            inverted=bool(prediction.inverted),
            top3=[{"label": label, "confidence": _number(p, 6)} for label, p in prediction.top_k],
            preprocess_ms=_number(prediction.preprocess_ms, 3),
            inference_ms=_number(prediction.inference_ms, 3),
        )
    return record


def _number(value: float | None, digits: int) -> float | None:
    """Rounded, or None for a missing or non-finite value (JSON has no NaN)."""
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


# --- records ---------------------------------------------------------------------------------------------


class RecordWriter:
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

    def __enter__(self) -> "RecordWriter":
        if self.path is None:
            self._handle = sys.stdout
        else:
            self._handle = self._open_file(self.path)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

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

    def emit(self, result: "Result") -> None:
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
    """CSV with the columns of :data:`CSV_FIELDS`; top-3 as ``label:confidence;...``; header once."""

    kind = "csv"

    def _prepare(self, handle: TextIO, path: Path) -> None:
        header = _first_line(path)
        if header is None:
            handle.write(",".join(CSV_FIELDS) + "\n")
        elif header.rstrip("\r\n") != ",".join(CSV_FIELDS):
            raise SinkError(f"'{path}' has other columns than edge-classify writes; use another --output file "
                            "or --overwrite")

    def _format(self, record: dict[str, Any]) -> str:
        row = dict(record)
        row["top3"] = ";".join(f"{t['label']}:{t['confidence']}" for t in record.get("top3") or [])
        for flag in ("uncertain", "unknown"):
            row[flag] = "" if record.get(flag) is None else str(bool(record[flag])).lower()
        buffer = io.StringIO()
        csv.DictWriter(buffer, CSV_FIELDS, extrasaction="ignore", lineterminator="\n").writerow(
            {k: "" if row.get(k) is None else row[k] for k in CSV_FIELDS}
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


# --- reading records back (resume) -----------------------------------------------------------------------


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


# --- images: annotated frames, per-label copies, window ---------------------------------------------------


def annotate(image: np.ndarray, result: "Result") -> np.ndarray:
    """A BGR copy of ``image`` with the label and confidence (or the error) written in the top-left corner."""
    canvas = to_bgr8(image).copy()
    if result.prediction is not None:
        text = f"{result.prediction.label} {result.prediction.confidence:.1%}" + (" ?" if result.uncertain else "")
        colour = (0, 200, 255) if result.uncertain else (0, 220, 0)
    else:
        text, colour = "error", (0, 0, 255)
    scale = max(0.4, canvas.shape[1] / 800)
    thickness = max(1, round(scale * 2))
    (width, height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    cv2.rectangle(canvas, (0, 0), (width + 8, height + baseline + 8), (0, 0, 0), cv2.FILLED)
    cv2.putText(canvas, text, (4, height + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness, cv2.LINE_AA)
    return canvas


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:120] or "frame"


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class _BestEffort:
    """Sinks whose failure must not stop the run: errors are logged (the first few times), then counted."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.failures = 0

    def __enter__(self) -> "_BestEffort":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self.failures:
            log.warning("%s: %d failure(s) in this run", self.what, self.failures)

    def _failed(self, message: str) -> None:
        self.failures += 1
        if self.failures <= 5:
            log.warning("%s: %s", self.what, message)
        if self.failures == 5:
            log.warning("%s: further failures are only counted", self.what)


class AnnotatedFrameWriter(_BestEffort):
    """``--save-dir``: each classified frame as a JPEG with its label drawn on it."""

    def __init__(self, directory: str | Path, quality: int = 90) -> None:
        super().__init__(f"--save-dir {directory}")
        self.directory = _output_folder(directory, "--save-dir")
        self.quality = quality
        self.count = 0

    def emit(self, result: "Result") -> None:
        frame = result.frame
        if frame.image is None or result.prediction is None:
            return
        stem = Path(frame.path).stem if frame.path else frame.source.split(":", 1)[0]
        name = _safe_name(f"{frame.index:08d}_{stem}_{result.prediction.label}") + ".jpg"
        try:
            ok, encoded = cv2.imencode(".jpg", annotate(frame.image, result), [cv2.IMWRITE_JPEG_QUALITY, self.quality])
            if not ok:
                raise ValueError("JPEG encoding failed")
            _write_atomically(self.directory / name, encoded.tobytes())
            self.count += 1
        except (OSError, ValueError, cv2.error, MemoryError) as exc:
            self._failed(f"cannot save {name}: {exc}")


class SortInto(_BestEffort):
    """``--sort-into``: copies each input file to DIR/<label>/ (DIR/_uncertain/<label>/, DIR/_errors/).

    Copies are atomic (temporary name, then rename); an existing different file is never overwritten: the
    copy gets a ``_1``, ``_2``... suffix.
    """

    def __init__(self, directory: str | Path) -> None:
        super().__init__(f"--sort-into {directory}")
        self.directory = _output_folder(directory, "--sort-into")
        self.count = 0

    def emit(self, result: "Result") -> None:
        source = result.frame.path
        if source is None:
            return
        if result.prediction is None:
            folder = self.directory / ERRORS_DIR
        elif result.uncertain:
            folder = self.directory / UNCERTAIN_DIR / result.prediction.label
        else:
            folder = self.directory / result.prediction.label
        try:
            folder.mkdir(parents=True, exist_ok=True)
            target = _free_name(folder / os.path.basename(source))
            tmp = target.with_name(f".{target.name}.tmp")
            shutil.copy2(source, tmp)
            os.replace(tmp, target)
            self.count += 1
        except OSError as exc:
            self._failed(f"cannot copy '{source}': {exc.strerror or exc}")


def _free_name(path: Path) -> Path:
    candidate, n = path, 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}_{n}{path.suffix}")
    return candidate


def display_available() -> bool:
    """Whether a window can be shown: on Linux only with DISPLAY or WAYLAND_DISPLAY set."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


class Display:
    """``--show``: a preview window where a display exists (otherwise one warning, then nothing).

    Pressing q or Esc in the window calls ``on_quit``.
    """

    WINDOW = "edge-classify"
    MAX_WIDTH = 1280

    def __init__(self, on_quit: Callable[[], object] | None = None) -> None:
        self.on_quit = on_quit
        self.enabled = display_available()
        if not self.enabled:
            log.warning("--show: no display here (DISPLAY/WAYLAND_DISPLAY unset); continuing without a window")

    def __enter__(self) -> "Display":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def emit(self, result: "Result") -> None:
        if not self.enabled or result.frame.image is None:
            return
        try:
            canvas = annotate(result.frame.image, result)
            if canvas.shape[1] > self.MAX_WIDTH:
                scale = self.MAX_WIDTH / canvas.shape[1]
                canvas = cv2.resize(canvas, (self.MAX_WIDTH, max(1, round(canvas.shape[0] * scale))),
                                    interpolation=cv2.INTER_AREA)
            cv2.imshow(self.WINDOW, canvas)
            key = cv2.waitKey(1) & 0xFF
        except cv2.error as exc:
            self.enabled = False
            log.warning("--show: cannot open a window (%s); continuing without one", str(exc).strip()[:160])
            return
        if key in (ord("q"), 27) and self.on_quit is not None:
            self.on_quit()

    def close(self) -> None:
        if self.enabled:
            try:
                cv2.destroyAllWindows()
            except cv2.error:
                pass


def _output_folder(directory: str | Path, option: str) -> Path:
    """Create an output folder up front; a failure is a setup error naming the option and the folder."""
    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SinkError(f"cannot create {option} '{directory}': {exc.strerror or exc}") from exc
    return path
