"""Every exception the edge runtime raises on purpose; each message names the file and what to do about it."""

from __future__ import annotations

from pathlib import Path

INSTALL_HINT = 'pip install "steel-edge-inspect[edge]"'


class EdgeRuntimeError(Exception):
    """Base class of every error this package raises on purpose."""


class ImageReadError(EdgeRuntimeError):
    """An image file could not be read or decoded."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read image '{self.path}': {reason}")


class ModelLoadError(EdgeRuntimeError):
    """A model file is missing, of an unsupported kind, or not loadable by its engine."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot load model '{self.path}': {reason}")


class BackendUnavailableError(EdgeRuntimeError):
    """The engine package a model needs is not installed."""

    def __init__(self, engine: str, package: str, extra: str = "edge") -> None:
        self.engine = engine
        self.package = package
        hint = INSTALL_HINT if extra == "edge" else f'pip install "steel-edge-inspect[{extra}]"'
        super().__init__(
            f"the {engine} engine needs the '{package}' package, which is not installed; "
            f"install it with {hint} (or just: pip install {package})"
        )


class MetadataError(EdgeRuntimeError):
    """A model's embedded metadata is missing, invalid, or does not match the model."""

    def __init__(self, source: str | Path, reason: str) -> None:
        self.path = str(source)
        self.reason = reason
        super().__init__(f"model '{self.path}': {reason}")


class ManifestError(EdgeRuntimeError):
    """The shipped-models manifest cannot be read or is invalid."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"shipped-models manifest '{self.path}': {reason}; reinstall the package")


class SourceError(EdgeRuntimeError):
    """A source cannot be opened (missing file or folder, camera that does not open, bad options)."""


class SourceLost(SourceError):
    """A live source stopped delivering frames and did not come back within the reconnect attempts."""


class DeviceLost(RuntimeError):
    """Inside a camera source: the camera stopped answering or cannot be found now. Never reaches the user: the
    live source reopens the camera with back-off, and raises SourceLost when it stays away."""


class SinkError(EdgeRuntimeError):
    """An output cannot be opened or written."""


class AdaptError(EdgeRuntimeError):
    """Enrolment (edge-adapt) cannot go on: no usable images, a base model without the embedding, an output
    that cannot be written."""
