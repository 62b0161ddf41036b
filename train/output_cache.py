"""The Keras float model's outputs kept on disk, so that a re-export or re-evaluation skips the slow part.

Export runs the Keras model over every training image (the unknown score's bank) and every check image (the
float reference): on a 2-core AVX2 CPU that is 3,200 images and 6-12 minutes, repeated identically on every
re-export. The outputs depend only on the model file and the exact input pixels, so both go into the key:

    key = sha256(model file's sha256, preprocessing spec, pixel array shape, dtype and bytes)

Any change to the model, the preprocessing or a single pixel of a single image is a different key (a miss);
nothing is trusted by file name or time stamp. Entries live in ``RUN_DIR/cache/`` (one ``.npz`` each, written
atomically); the oldest beyond ``max_entries`` are deleted. Deleting the folder is always safe.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from edge_runtime.preprocessing import PreprocessConfig
from edge_runtime.ood import EMBEDDING

log = logging.getLogger(__name__)

CACHE_DIR = "cache"


class KerasOutputCache:
    """Probabilities and embeddings of one Keras model file, keyed by the exact input pixels."""

    def __init__(self, directory: str | Path, model_sha256: str, max_entries: int = 16) -> None:
        self.directory = Path(directory)
        self.model_sha256 = model_sha256
        self.max_entries = max_entries

    def key(self, pixels: np.ndarray, preprocess: PreprocessConfig, feature: str = EMBEDDING) -> str:
        """The key of the model's (probabilities, ``feature`` output) for these pixels."""
        digest = hashlib.sha256()
        header = {"model": self.model_sha256, "preprocess": preprocess.to_dict(),
                  "shape": list(pixels.shape), "dtype": str(pixels.dtype),
                  **({} if feature == EMBEDDING else {"feature": feature})}  # keys of embeddings as before
        digest.update(json.dumps(header, sort_keys=True).encode())
        digest.update(np.ascontiguousarray(pixels).data)
        return digest.hexdigest()

    def named_key(self, description: dict) -> str:
        """A key for outputs whose inputs are named rather than given as pixels (``description`` must hold
        everything their values depend on besides the model, e.g. the trunk cache's identity and the row names)."""
        header = {"model": self.model_sha256, **description}
        return hashlib.sha256(json.dumps(header, sort_keys=True).encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.directory / f"keras-outputs-{key[:32]}.npz"

    def load(self, key: str) -> tuple[np.ndarray, np.ndarray] | None:
        """The stored (probabilities, embeddings) for ``key``, or None (missing or unreadable: recomputed)."""
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as stored:
                if str(stored["key"]) != key:
                    return None
                outputs = stored["probabilities"], stored["embeddings"]
        except (OSError, ValueError, KeyError) as exc:
            log.warning("ignoring unreadable cache file %s (%s); recomputing", path, exc)
            return None
        os.utime(path)  # recently used: pruned last
        return outputs

    def save(self, key: str, probabilities: np.ndarray, embeddings: np.ndarray) -> None:
        """Store the outputs; a cache that cannot be written only costs time, so failures are logged."""
        path = self._path(key)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            np.savez(tmp, key=np.array(key), probabilities=probabilities, embeddings=embeddings)
            os.replace(tmp, path)
            self._prune()
        except OSError as exc:
            log.warning("could not write the Keras output cache in %s (%s); continuing without it",
                        self.directory, exc)
        finally:
            with contextlib.suppress(OSError):  # gone after the rename, or its folder never existed
                tmp.unlink(missing_ok=True)

    def _prune(self) -> None:
        entries = sorted(self.directory.glob("keras-outputs-*.npz"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in entries[self.max_entries:]:
            old.unlink(missing_ok=True)
