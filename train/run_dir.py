"""The run directory: file names, metadata, and loading a trained run back (for evaluation and export)."""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from functools import cached_property
from datetime import datetime, timezone
from pathlib import Path

from edge_runtime.fileio import file_sha256
from edge_runtime.preprocessing import PreprocessConfig
from train.split import MANIFEST_NAME, ManifestRow, read_manifest, verify_files

MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"
CONFIG_FILE = "config.json"
HISTORY_FILE = "history.csv"
METRICS_FILE = "metrics.json"
CHECKPOINT_DIR = "checkpoints"


class RunDirError(FileNotFoundError):
    """A run directory is missing something a step needs."""


def tool_versions() -> dict[str, str]:
    import cv2
    import keras
    import numpy
    import tensorflow

    return {
        "python": platform.python_version(),
        "tensorflow": tensorflow.__version__,
        "keras": keras.__version__,
        "numpy": numpy.__version__,
        "opencv": cv2.__version__,
    }


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class TrainedRun:
    """A finished run: its directory, metadata and (lazily) its Keras model."""

    directory: Path
    metadata: dict

    @classmethod
    def open(cls, directory: str | Path) -> "TrainedRun":
        directory = Path(directory)
        for name in (MODEL_FILE, METADATA_FILE, MANIFEST_NAME):
            if not (directory / name).is_file():
                raise RunDirError(
                    f"'{directory / name}' not found: '{directory}' is not a finished training run "
                    "(train one with 'edge-train --data DIR', or finish it with 'edge-train --resume RUN_DIR')"
                )
        return cls(directory, json.loads((directory / METADATA_FILE).read_text()))

    def config(self, needed_by: str) -> dict:
        """The run's config.json as edge-train wrote it; FileNotFoundError naming ``needed_by`` when it has none."""
        path = self.directory / CONFIG_FILE
        if not path.is_file():
            raise FileNotFoundError(f"'{path}' not found: {needed_by} takes runs made by edge-train")
        return json.loads(path.read_text())

    @property
    def classes(self) -> list[str]:
        return list(self.metadata["classes"])

    @property
    def preprocess(self) -> PreprocessConfig:
        return PreprocessConfig.from_dict(self.metadata["preprocessing"])

    @cached_property
    def model_sha256(self) -> str:
        """sha256 of the Keras model file, read once per run object (the file is about 100 MB)."""
        return file_sha256(self.directory / MODEL_FILE)

    def output_cache(self):
        """The on-disk cache of this run's Keras outputs (train.output_cache), keyed by the model file's hash."""
        from train.output_cache import CACHE_DIR, KerasOutputCache

        return KerasOutputCache(self.directory / CACHE_DIR, self.model_sha256)

    def load_model(self):
        import keras

        return keras.saving.load_model(self.directory / MODEL_FILE, compile=False)

    def manifest(self, data_root: str | Path | None = None, verify: bool = True) -> tuple[Path, list[ManifestRow]]:
        """The split manifest rows and the data root they are relative to; verified against the files."""
        root = Path(data_root or self.metadata["data_root"])
        rows = read_manifest(self.directory / MANIFEST_NAME)
        if verify:
            verify_files(rows, root)
        return root, rows
