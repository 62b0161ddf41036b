"""The Keras model's embedding output, the unknown score's bank of training embeddings, and test-time polarity
on the Keras model, the same rules as edge_runtime applies on the device (edge_runtime.ood, .polarity)."""

from __future__ import annotations

import logging
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_runtime.ood import OodSpec, build_calibrated_spec
from edge_runtime.polarity import AS_IS, AUTO, check_mode, choose_inverted, invert_polarity, pick
from edge_runtime.preprocessing import PreprocessConfig, normalize, prepare_pixels, read_image
from train.output_cache import KerasOutputCache
from train.split import rows_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BankCameras:
    """Camera-changed copies of every training image that the unknown score's bank also holds, so that an
    image of a known defect taken by a brighter, darker, softer or noisier camera still has near neighbours.

    Each copy draws, from a generator seeded with ``seed`` and the image's position, one exposure gain
    (log-uniform in ``gain_range``), a Gaussian blur (sigma uniform up to ``blur_sigma_max`` px, in half of the
    copies) and Gaussian sensor noise (sigma uniform up to ``noise_std_max`` gray levels), applied in that order
    to the decoded image before resizing, as a camera would. ``copies=0``: the bank holds the clean images only.
    Only these three kinds of change were used to choose the rule; benchmarks/nuisance.py also measures others.
    """

    copies: int = 2
    gain_range: tuple[float, float] = (0.6, 1.5)
    blur_sigma_max: float = 1.5
    noise_std_max: float = 10.0
    seed: int = 0

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def copy(self, image: np.ndarray, index: int, copy: int) -> np.ndarray:
        """Camera-changed copy number ``copy`` of the ``index``-th training image (uint8, any channels)."""
        rng = np.random.default_rng([self.seed, index, copy])
        gain = float(np.exp(rng.uniform(np.log(self.gain_range[0]), np.log(self.gain_range[1]))))
        sigma = float(rng.uniform(0.0, self.blur_sigma_max)) if rng.random() < 0.5 else 0.0
        noise = float(rng.uniform(0.0, self.noise_std_max))
        values = np.asarray(image).astype(np.float32) * gain
        if sigma > 0:
            values = cv2.GaussianBlur(values, (0, 0), sigma).reshape(values.shape)
        field = rng.normal(0.0, noise, size=values.shape[:2]).astype(np.float32)
        values = values + (field if values.ndim == 2 else field[:, :, None])
        return np.clip(values + 0.5, 0, 255).astype(np.uint8)


def with_embedding(model):
    """The classifier with a second output, ``embedding``: the input of its last layer (for the reference
    model the 512-wide Dense layer, Dropout being the identity at inference), used by the unknown score.

    Output 0 stays the class probabilities; the runtime tells the two apart by width (see edge_runtime.ood).
    """
    import keras

    embedding = model.layers[-1].input
    return keras.Model(model.input, [model.output, embedding], name=f"{model.name}_with_embedding")


_GRAPHS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def graph_outputs(model, input_shape: tuple[int, ...]):
    """``(probabilities, embedding)`` of :func:`with_embedding` as one traced TensorFlow graph, built once per
    model and input size: ``f(float32 batch (N, H, W, 3)) -> (probabilities, embeddings)``.

    Calling the Keras model eagerly runs ResNet-50 op by op; the traced graph lets TensorFlow fuse each
    convolution with its batch norm and activation, about twice as fast on a CPU (docs/export.md, "Where the
    time goes"). The values agree with the eager call to float32 rounding (a few 1e-6)."""
    import tensorflow as tf

    shape = tuple(int(d) for d in input_shape)
    try:
        per_model = _GRAPHS.setdefault(model, {})
    except TypeError:  # a model that cannot be weakly referenced: traced for this call only
        per_model = {}
    if shape not in per_model:
        both = with_embedding(model)
        spec = tf.TensorSpec((None, *shape), tf.float32)
        per_model[shape] = tf.function(lambda x: both(x, training=False), input_signature=[spec])
    return per_model[shape]


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

    both = graph_outputs(model, pixels.shape[1:])
    probabilities, embeddings = [], []
    for start in tqdm(range(0, len(pixels), batch), desc=desc, unit="batch", disable=not progress):
        p, e = both(normalize(pixels[start : start + batch], preprocess))
        probabilities.append(np.asarray(p))
        embeddings.append(np.asarray(e))
    if not probabilities:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
    probabilities, embeddings = np.concatenate(probabilities), np.concatenate(embeddings)
    if key:
        cache.save(key, probabilities, embeddings)
    return probabilities, embeddings


def camera_bank_spec(embed, images: list[np.ndarray], labels: list[str], classes: list[str], preprocess: PreprocessConfig,
                     cameras: BankCameras = BankCameras(), k: int = 2, quantile: float = 0.98, per_class: bool = True,
                     progress: bool = True) -> OodSpec:
    """The unknown score from training images alone: ``embed(pixels (N, H, W, 3) uint8) -> (N, D)`` is run on
    every image as captured and on ``cameras.copies`` camera-changed copies of it (seeded per image position);
    bank = all of them, threshold = leave-one-out calibration (edge_runtime.ood.build_calibrated_spec).
    ``embed`` is the Keras float model at export, or an exported artifact (export/unknown_bank.py)."""
    from tqdm.auto import tqdm

    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise ValueError(f"training labels {unknown} are not among the model's classes {classes}")
    parts = []
    for copy in range(-1, cameras.copies):  # -1: as captured
        desc = "training images" if copy < 0 else f"camera copy {copy + 1}/{cameras.copies}"
        pixels = np.stack([prepare_pixels(image if copy < 0 else cameras.copy(image, i, copy), preprocess)
                           for i, image in enumerate(tqdm(images, desc=desc, unit="img", disable=not progress))])
        parts.append(np.asarray(embed(pixels), np.float32))
    count = len(images)
    groups = np.tile(np.arange(count), cameras.copies + 1)
    label_index = np.tile(np.array([index[label] for label in labels]), cameras.copies + 1)
    info = {"images": count, "split": "train", "cameras": cameras.to_dict(),
            "calibration": "leave-one-out scores of the bank's rows (every copy of the same image left out)",
            "per_class": per_class}
    return build_calibrated_spec(np.concatenate(parts), groups, label_index, len(classes), k, quantile, per_class, info)


def training_ood_spec(model, data_root: Path, rows, preprocess: PreprocessConfig, k: int = 2,
                      quantile: float = 0.98, progress: bool = True, cache: KerasOutputCache | None = None,
                      cameras: BankCameras = BankCameras(), classes: list[str] | None = None,
                      per_class: bool = True) -> OodSpec:
    """The unknown score of the Keras model: bank = embeddings of every *train* image of the manifest and of
    its camera-changed copies (:class:`BankCameras`), thresholds from the leave-one-out scores of those same
    training images (per class, at the in-distribution unknown rate ``1 - quantile``). No validation or test
    image is read. ``classes``: the model's class order (default: the sorted training labels)."""
    from tqdm.auto import tqdm

    chosen = rows_of(rows, "train")
    images = [read_image(Path(data_root) / r.path) for r in tqdm(chosen, desc="reading training images", unit="img",
                                                                 disable=not progress)]
    labels = [r.label for r in chosen]

    def embed(pixels: np.ndarray) -> np.ndarray:
        return keras_outputs(model, pixels, preprocess, progress=progress, desc="training embeddings", cache=cache)[1]

    spec = camera_bank_spec(embed, images, labels, classes or sorted(set(labels)), preprocess, cameras, k, quantile,
                            per_class, progress)
    log.info("unknown score: bank of %d embeddings (%d training images, %d camera copies each) of width %d, k=%d, "
             "threshold %.4f at in-distribution unknown rate %.3f%s", len(spec.bank), len(chosen), cameras.copies,
             spec.width, spec.k, spec.threshold, spec.rate, ", per class" if spec.class_offsets else "")
    return spec


def polarity_outputs(model, pixels: np.ndarray, preprocess: PreprocessConfig, ood: OodSpec, polarity: str = AS_IS,
                     progress: bool = True, cache: KerasOutputCache | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probabilities, unknown scores and the per-image "inverted reading kept" flags of the Keras model, read
    with test-time ``polarity`` ("auto": as captured and inverted, the reading closer to the training images)."""
    probabilities, embeddings = keras_outputs(model, pixels, preprocess, progress=progress, cache=cache)
    scores = ood.score(embeddings, probabilities.argmax(axis=1))
    inverted = np.zeros(len(pixels), bool)
    if check_mode(polarity) == AUTO:
        inv_probabilities, inv_embeddings = keras_outputs(model, invert_polarity(pixels), preprocess,
                                                          progress=progress, desc="keras float model, inverted",
                                                          cache=cache)
        inv_scores = ood.score(inv_embeddings, inv_probabilities.argmax(axis=1))
        inverted = choose_inverted(scores, inv_scores)
        probabilities, scores = pick(probabilities, inv_probabilities, inverted), pick(scores, inv_scores, inverted)
        log.info("test-time polarity: the inverted reading was kept for %d of %d images", int(inverted.sum()),
                 len(inverted))
    return probabilities, scores, inverted
