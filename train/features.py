"""On-disk cache of the frozen trunk's outputs, so the frozen backbone runs once per image copy.

Entries are keyed by image content (sha256) and copy number: copy 0 is the clean image, copies 1..K are
seeded random augmentations of it; the unknown score's bank adds one camera copy per kind
(``train.augment.bank_camera_copy``), keyed by the kind's name. The cache folder is named after everything that
changes the values (weights, cut point, preprocessing, augmentation, seed), so runs and cross-validation folds
share it and an interrupted computation resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_runtime.preprocessing import PreprocessConfig, normalize, read_image, resize_pixels, standardize_contrast
from train.augment import AugmentSpec, augment, bank_camera_copy, content_seed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CacheItem:
    path: Path
    sha256: str
    copy: int  # 0 = clean, 1..K = augmented
    camera: str = ""  # a bank camera copy of the clean image (train.augment.BANK_CAMERA_KINDS); copy is then 0

    @property
    def name(self) -> str:
        return f"{self.sha256}_{self.camera or self.copy}"


def augmentation_rng(seed: int, sha256: str, copy: int) -> np.random.Generator:
    return np.random.default_rng([seed, content_seed(sha256), copy])


def training_pixels(item: CacheItem, preprocess: PreprocessConfig, spec: AugmentSpec, seed: int) -> np.ndarray:
    """The uint8 pixels at the model size that training saw for ``item``: copy 0 as captured, copy k > 0 its k-th
    seeded augmentation, a camera item its bank camera copy (contrast-standardised if configured; not yet
    normalised)."""
    image = read_image(item.path)
    if item.camera:
        image = bank_camera_copy(image, item.camera, item.sha256)
    pixels = resize_pixels(image, preprocess)
    if item.copy > 0:
        pixels = augment(pixels, augmentation_rng(seed, item.sha256, item.copy), spec)
    return standardize_contrast(pixels, preprocess)


def bank_items(rows, data_root: Path, copies: int, camera_kinds: tuple[str, ...]) -> list[list[CacheItem]]:
    """The unknown score's bank rows, one block per version of the training images ``rows``: as captured, their
    first ``copies`` augmented training copies, then one camera copy per kind in ``camera_kinds``."""
    blocks = [[CacheItem(Path(data_root) / r.path, r.sha256, copy) for r in rows] for copy in range(copies + 1)]
    return blocks + [[CacheItem(Path(data_root) / r.path, r.sha256, 0, kind) for r in rows] for kind in camera_kinds]


def cache_key(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


class FeatureCache:
    """Trunk outputs (float16) and, for the model's initial body weights, the pooled features (float32)."""

    def __init__(
        self,
        root: Path,
        weights_id: str,
        split_layer: str,
        preprocess: PreprocessConfig,
        augment_spec: AugmentSpec,
        seed: int,
    ) -> None:
        identity = {
            "weights": weights_id,
            "split_layer": split_layer,
            "preprocess": preprocess.to_dict(),
            "augment": augment_spec.identity(),
            "seed": seed,
        }
        self.directory = Path(root) / f"{split_layer}-{cache_key(identity)}"
        (self.directory / "trunk").mkdir(parents=True, exist_ok=True)
        (self.directory / "pooled").mkdir(parents=True, exist_ok=True)
        (self.directory / "identity.json").write_text(json.dumps(identity, indent=2))
        self.identity = identity
        self.preprocess = preprocess
        self.augment_spec = augment_spec
        self.seed = seed

    def _file(self, kind: str, item: CacheItem) -> Path:
        return self.directory / kind / f"{item.name}.npy"

    def model_input(self, item: CacheItem) -> np.ndarray:
        """The (possibly augmented) float32 model input for one cache item."""
        return normalize(training_pixels(item, self.preprocess, self.augment_spec, self.seed), self.preprocess)

    def _fill(self, kind: str, items: list[CacheItem], compute, batch_size: int, progress: bool, desc: str) -> None:
        from tqdm.auto import tqdm

        missing = list({self._file(kind, it): it for it in items if not self._file(kind, it).exists()}.values())
        if not missing:
            return
        log.info("%s: computing %d of %d entries in %s", desc, len(missing), len(items), self.directory)
        with tqdm(total=len(missing), desc=desc, unit="img", disable=not progress) as bar:
            for start in range(0, len(missing), batch_size):
                batch = missing[start : start + batch_size]
                outputs = compute(batch)
                for item, value in zip(batch, outputs):
                    _save_atomic(self._file(kind, item), value)
                bar.update(len(batch))

    def ensure_trunk(self, trunk, items: list[CacheItem], batch_size: int = 16, progress: bool = True) -> None:
        run = traced(trunk)

        def compute(batch: list[CacheItem]) -> np.ndarray:
            x = np.stack([self.model_input(it) for it in batch])
            return np.asarray(run(x)).astype(np.float16)

        self._fill("trunk", items, compute, batch_size, progress, "frozen trunk")

    def ensure_pooled(self, body, items: list[CacheItem], batch_size: int = 32, progress: bool = True) -> None:
        """Pooled features through the body *as initialised* (valid only while the body is frozen: stage 1)."""

        run = traced(body)

        def compute(batch: list[CacheItem]) -> np.ndarray:
            x = self.load("trunk", batch).astype(np.float32)
            return np.asarray(run(x)).astype(np.float32)

        self._fill("pooled", items, compute, batch_size, progress, "frozen body")

    def load(self, kind: str, items: list[CacheItem]) -> np.ndarray:
        return np.stack([np.load(self._file(kind, it)) for it in items])


def traced(model):
    """``model`` in inference mode as one traced TensorFlow graph, ``f(float32 batch) -> output``: about twice
    as fast on a CPU as calling the Keras model eagerly (convolutions fused with their batch norm and
    activation; docs/export.md, "Where the time goes"). Trace once per pass and reuse the function."""
    import tensorflow as tf

    spec = tf.TensorSpec((None, *(int(d) for d in model.input.shape[1:])), tf.float32)
    return tf.function(lambda x: model(x, training=False), input_signature=[spec])


def _save_atomic(path: Path, value: np.ndarray) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        np.save(handle, value)
    os.replace(tmp, path)
