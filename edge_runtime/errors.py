"""Exceptions raised by the edge runtime; each message names the file and what to do about it."""

from __future__ import annotations

from pathlib import Path


class EdgeRuntimeError(Exception):
    """Base class of every error this package raises on purpose."""


class ImageReadError(EdgeRuntimeError):
    """An image file could not be read or decoded."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read image '{self.path}': {reason}")
