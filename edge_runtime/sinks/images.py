"""Image sinks: annotated frames (``--save-dir``), per-label copies of input files (``--sort-into``) and a
preview window (``--show``). All are best effort: a problem is logged and the run carries on.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from edge_runtime.fileio import write_bytes_atomic
from edge_runtime.preprocessing import to_bgr8
from edge_runtime.records import Result
from edge_runtime.sinks.base import BestEffortSink, Sink, output_folder

log = logging.getLogger(__name__)

UNCERTAIN_DIR = "_uncertain"
ERRORS_DIR = "_errors"


def annotate(image: np.ndarray, result: Result) -> np.ndarray:
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


class AnnotatedFrameWriter(BestEffortSink):
    """``--save-dir``: each classified frame as a JPEG with its label drawn on it."""

    def __init__(self, directory: str | Path, quality: int = 90) -> None:
        super().__init__(f"--save-dir {directory}")
        self.directory = output_folder(directory, "--save-dir")
        self.quality = quality
        self.count = 0

    def emit(self, result: Result) -> None:
        frame = result.frame
        if frame.image is None or result.prediction is None:
            return
        stem = Path(frame.path).stem if frame.path else frame.source.split(":", 1)[0]
        name = _safe_name(f"{frame.index:08d}_{stem}_{result.prediction.label}") + ".jpg"
        try:
            ok, encoded = cv2.imencode(".jpg", annotate(frame.image, result), [cv2.IMWRITE_JPEG_QUALITY, self.quality])
            if not ok:
                raise ValueError("JPEG encoding failed")
            write_bytes_atomic(self.directory / name, encoded.tobytes())
            self.count += 1
        except (OSError, ValueError, cv2.error, MemoryError) as exc:
            self._failed(f"cannot save {name}: {exc}")


class SortInto(BestEffortSink):
    """``--sort-into``: copies each input file to DIR/<label>/ (DIR/_uncertain/<label>/, DIR/_errors/).

    Copies are atomic (temporary name, then rename); an existing different file is never overwritten: the
    copy gets a ``_1``, ``_2``... suffix.
    """

    def __init__(self, directory: str | Path) -> None:
        super().__init__(f"--sort-into {directory}")
        self.directory = output_folder(directory, "--sort-into")
        self.count = 0

    def emit(self, result: Result) -> None:
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


class Display(Sink):
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

    def emit(self, result: Result) -> None:
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
