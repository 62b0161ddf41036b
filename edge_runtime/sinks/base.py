"""What every sink is: a context manager that gets each :class:`~edge_runtime.records.Result` through ``emit``.

Sinks that the run cannot go on without (record writers) raise :class:`~edge_runtime.errors.SinkError`; the
others derive from :class:`BestEffortSink`, log their problems and carry on.
"""

from __future__ import annotations

import logging
from pathlib import Path

from edge_runtime.errors import SinkError
from edge_runtime.records import Result

log = logging.getLogger(__name__)

MAX_LOGGED_FAILURES = 5


class Sink:
    """Base of every sink: ``with sink: sink.emit(result) ...``; ``close()`` flushes and releases (idempotent).

    ``emit`` gets every result of the run, its ``record`` (:func:`edge_runtime.records.make_record`) filled in.
    """

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def emit(self, result: Result) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the sink holds; called once the run ends, also after an error."""


class BestEffortSink(Sink):
    """A sink whose failure must not stop the run: errors are logged (the first few times), then counted."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.failures = 0

    def close(self) -> None:
        if self.failures:
            log.warning("%s: %d failure(s) in this run", self.what, self.failures)

    def _failed(self, message: str) -> None:
        self.failures += 1
        if self.failures <= MAX_LOGGED_FAILURES:
            log.warning("%s: %s", self.what, message)
        if self.failures == MAX_LOGGED_FAILURES:
            log.warning("%s: further failures are only counted", self.what)


def output_folder(directory: str | Path, option: str) -> Path:
    """Create an output folder up front; a failure is a setup error naming the option and the folder."""
    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SinkError(f"cannot create {option} '{directory}': {exc.strerror or exc}") from exc
    return path
