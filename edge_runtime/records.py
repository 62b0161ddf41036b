"""The record of one frame or file: the one result format that every sink writes (JSON Lines, CSV, ...).

A leaf module: the pipeline builds :class:`Result` objects and fills in their record with :func:`make_record`;
the sinks consume them; this module imports neither.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_runtime.fileio import file_sha256

if TYPE_CHECKING:
    from edge_runtime.classifier import Classifier, Prediction
    from edge_runtime.sources.base import Frame

# The keys of every record, in order (the CSV columns); JSON Lines records have the same keys, top3 as a list
# of {label, confidence}.
RECORD_FIELDS = [
    "time", "source", "frame", "file", "file_size", "file_mtime_ns", "label", "confidence", "uncertain",
    "unknown", "ood_score", "predicted", "inverted", "top3", "error", "read_ms", "preprocess_ms", "inference_ms",
    "latency_ms", "engine", "model", "model_sha256",
]


@dataclass(frozen=True)
class ModelInfo:
    """What every record says about the model: engine, file name, sha256 of the file (computed once)."""

    engine: str
    name: str
    path: str
    sha256: str

    @classmethod
    def of(cls, classifier: Classifier) -> ModelInfo:
        path = Path(classifier.path)
        return cls(classifier.backend.name, path.name, str(path), file_sha256(path))


@dataclass
class Result:
    """One frame's outcome: a prediction, or an error message naming the file/frame (then prediction is None).

    ``latency_ms``: from the frame's capture (live) or the start of reading the file to the result.
    ``record`` is filled by the pipeline (see :func:`make_record`).
    """

    frame: Frame
    prediction: Prediction | None
    error: str | None = None
    uncertain: bool = False
    latency_ms: float = 0.0
    record: dict[str, Any] | None = None


def make_record(result: Result, model: ModelInfo) -> dict[str, Any]:
    """The record of one frame or file: the keys of :data:`RECORD_FIELDS` for results and errors alike
    (``error`` is None or a message).

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
