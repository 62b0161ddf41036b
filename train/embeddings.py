"""The Keras model's embedding output, the unknown score's bank of training embeddings, and test-time polarity
on the Keras model, the same rules as edge_runtime applies on the device (edge_runtime.ood, .polarity)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edge_runtime.ood import OodSpec, build_spec
from edge_runtime.polarity import AS_IS, AUTO, check_mode, choose_inverted, invert_polarity, pick
from edge_runtime.preprocessing import PreprocessConfig, normalize, prepare_pixels, read_image
from train.output_cache import KerasOutputCache
from train.split import rows_of

log = logging.getLogger(__name__)


def with_embedding(model):
    """The classifier with a second output, ``embedding``: the input of its last layer (for the reference
    model the 512-wide Dense layer, Dropout being the identity at inference), used by the unknown score.

    Output 0 stays the class probabilities; the runtime tells the two apart by width (see edge_runtime.ood).
    """
    import keras

    embedding = model.layers[-1].input
    return keras.Model(model.input, [model.output, embedding], name=f"{model.name}_with_embedding")


def keras_outputs(model, pixels: np.ndarray, preprocess: PreprocessConfig, batch: int = 16, progress: bool = True,
                  desc: str = "keras float model", cache: KerasOutputCache | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and embeddings of the Keras model on uint8 pixels (N, H, W, 3) at the model size; read from
    ``cache`` when it holds this model's outputs for exactly these pixels (and stored there otherwise)."""
    from tqdm.auto import tqdm

    key = cache.key(pixels, preprocess) if cache is not None and len(pixels) else None
    stored = cache.load(key) if key else None
    if stored is not None:
        log.info("%s: %d images read from the Keras output cache %s", desc, len(pixels), cache.directory)
        return stored

    both = with_embedding(model)
    probabilities, embeddings = [], []
    for start in tqdm(range(0, len(pixels), batch), desc=desc, unit="batch", disable=not progress):
        p, e = both(normalize(pixels[start : start + batch], preprocess), training=False)
        probabilities.append(np.asarray(p))
        embeddings.append(np.asarray(e))
    if not probabilities:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
    probabilities, embeddings = np.concatenate(probabilities), np.concatenate(embeddings)
    if key:
        cache.save(key, probabilities, embeddings)
    return probabilities, embeddings


def training_ood_spec(model, data_root: Path, rows, preprocess: PreprocessConfig, k: int = 5,
                      quantile: float = 0.95, progress: bool = True, cache: KerasOutputCache | None = None) -> OodSpec:
    """The unknown score: bank = embeddings of every (clean) *train* image of the manifest, threshold from the
    *validation* images only."""
    from tqdm.auto import tqdm

    chosen = rows_of(rows, "train") + rows_of(rows, "val")
    pixels = np.stack([prepare_pixels(read_image(Path(data_root) / r.path), preprocess)
                       for r in tqdm(chosen, desc="training images", unit="img", disable=not progress)])
    _, embeddings = keras_outputs(model, pixels, preprocess, progress=progress, desc="training embeddings",
                                  cache=cache)
    is_val = np.array([r.split == "val" for r in chosen])
    spec = build_spec(embeddings[~is_val], embeddings[is_val], k=k, quantile=quantile)
    log.info("unknown score: %d training embeddings of width %d, k=%d, float threshold %.4f (val quantile %.2f)",
             len(spec.bank), spec.width, spec.k, spec.threshold, spec.quantile)
    return spec


def polarity_outputs(model, pixels: np.ndarray, preprocess: PreprocessConfig, ood: OodSpec, polarity: str = AS_IS,
                     progress: bool = True, cache: KerasOutputCache | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probabilities, unknown scores and the per-image "inverted reading kept" flags of the Keras model, read
    with test-time ``polarity`` ("auto": as captured and inverted, the reading closer to the training images)."""
    probabilities, embeddings = keras_outputs(model, pixels, preprocess, progress=progress, cache=cache)
    scores = ood.score(embeddings)
    inverted = np.zeros(len(pixels), bool)
    if check_mode(polarity) == AUTO:
        inv_probabilities, inv_embeddings = keras_outputs(model, invert_polarity(pixels), preprocess,
                                                          progress=progress, desc="keras float model, inverted",
                                                          cache=cache)
        inv_scores = ood.score(inv_embeddings)
        inverted = choose_inverted(scores, inv_scores)
        probabilities, scores = pick(probabilities, inv_probabilities, inverted), pick(scores, inv_scores, inverted)
        log.info("test-time polarity: the inverted reading was kept for %d of %d images", int(inverted.sum()),
                 len(inverted))
    return probabilities, scores, inverted
