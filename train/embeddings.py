"""The Keras model's embedding output, the unknown score's bank of training embeddings, and test-time polarity
on the Keras model, the same rules as edge_runtime applies on the device (edge_runtime.ood, .polarity)."""

from __future__ import annotations

import logging
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_runtime.ood import EMBEDDING, FEATURES, OodSpec, build_calibrated_spec
from edge_runtime.polarity import AS_IS, AUTO, check_mode, choose_inverted, invert_polarity, pick
from edge_runtime.preprocessing import PreprocessConfig, normalize, prepare_pixels
from train.augment import BANK_CAMERA_KINDS
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


def pooled_output(model):
    """The backbone's pooled output (the recipe's pooling layer), or None when the model has no such layer or its
    width would not tell it apart from the class probabilities and the embedding (the device names outputs by
    width): the exported graph has a ``features`` output exactly when this is not None."""
    from train.model import POOL_LAYER  # imports Keras: not at module level

    try:
        pooled = model.get_layer(POOL_LAYER).output
    except ValueError:
        return None
    return None if pooled.shape[-1] in {model.output.shape[-1], model.layers[-1].input.shape[-1]} else pooled


def resolved_feature(model, feature: str) -> str:
    """``feature``, or the embedding when ``features`` is asked of a model without a pooled output to read."""
    return EMBEDDING if feature == FEATURES and model is not None and pooled_output(model) is None else feature


def score_output(model, feature: str = EMBEDDING):
    """The Keras tensor of the graph output ``feature``: ``embedding``, the input of the last layer (for the
    reference model the 512-wide Dense layer, Dropout being the identity at inference), or ``features``, the
    backbone's pooled output (:func:`pooled_output`; edge_runtime.ood)."""
    if feature == EMBEDDING:
        return model.layers[-1].input
    if feature == FEATURES:
        pooled = pooled_output(model)
        if pooled is None:
            raise ValueError(f"model {model.name} has no pooled features output to read")
        return pooled
    raise ValueError(f"unknown graph output {feature!r}; expected {EMBEDDING!r} or {FEATURES!r}")


def with_embedding(model, feature: str = EMBEDDING):
    """The classifier with a second output, ``feature`` (:func:`score_output`; by default the embedding).

    Output 0 stays the class probabilities; the runtime tells the outputs apart by width (see edge_runtime.ood).
    """
    import keras

    return keras.Model(model.input, [model.output, score_output(model, feature)], name=f"{model.name}_with_{feature}")


_GRAPHS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _top_outputs(model, split_layer: str, feature: str = EMBEDDING):
    """``f(trunk outputs) -> (probabilities, feature rows)``: ``model`` from ``split_layer``'s output on, traced."""
    import keras

    from train.features import traced

    split = model.get_layer(split_layer).output
    return traced(keras.Model(split, [model.output, score_output(model, feature)], name=f"{model.name}_top_{feature}"))


def graph_outputs(model, input_shape: tuple[int, ...], feature: str = EMBEDDING):
    """``(probabilities, feature)`` of :func:`with_embedding` as one traced TensorFlow graph, built once per
    model, input size and output: ``f(float32 batch (N, H, W, 3)) -> (probabilities, feature rows)``.

    Calling the Keras model eagerly runs ResNet-50 op by op; the traced graph lets TensorFlow fuse each
    convolution with its batch norm and activation, about twice as fast on a CPU (docs/export.md, "Where the
    time goes"). The values agree with the eager call to float32 rounding (a few 1e-6)."""
    import tensorflow as tf

    shape = tuple(int(d) for d in input_shape)
    try:
        per_model = _GRAPHS.setdefault(model, {})
    except TypeError:  # a model that cannot be weakly referenced: traced for this call only
        per_model = {}
    if (shape, feature) not in per_model:
        both = with_embedding(model, feature)
        spec = tf.TensorSpec((None, *shape), tf.float32)
        per_model[shape, feature] = tf.function(lambda x: both(x, training=False), input_signature=[spec])
    return per_model[shape, feature]


def keras_outputs(model, pixels: np.ndarray, preprocess: PreprocessConfig, batch: int = 16, progress: bool = True,
                  desc: str = "keras float model", cache: KerasOutputCache | None = None,
                  feature: str = EMBEDDING) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and the ``feature`` output (:func:`score_output`) of the Keras model on uint8 pixels
    (N, H, W, 3) at the model size; read from ``cache`` when it holds this model's outputs for exactly these
    pixels (and stored there otherwise)."""
    from tqdm.auto import tqdm

    key = cache.key(pixels, preprocess, feature) if cache is not None and len(pixels) else None
    stored = cache.load(key) if key else None
    if stored is not None:
        log.info("%s: %d images read from the Keras output cache %s", desc, len(pixels), cache.directory)
        return stored

    both = graph_outputs(model, pixels.shape[1:], feature)
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
                     progress: bool = True, feature: str = EMBEDDING, width: int | None = None) -> OodSpec:
    """The unknown score from training images alone: ``embed(pixels (N, H, W, 3) uint8) -> (N, D)`` (the graph
    output ``feature``) is run on every image as captured and on ``cameras.copies`` camera-changed copies of it
    (seeded per image position); bank = all of them (projected to ``width`` when wider), threshold =
    leave-one-out calibration (edge_runtime.ood.build_calibrated_spec). ``embed`` is the Keras float model at
    export, or an exported artifact (export/unknown_bank.py)."""
    from tqdm.auto import tqdm

    _check_labels(labels, classes)
    parts = []
    for copy in range(-1, cameras.copies):  # -1: as captured
        desc = "training images" if copy < 0 else f"camera copy {copy + 1}/{cameras.copies}"
        pixels = np.stack([prepare_pixels(image if copy < 0 else cameras.copy(image, i, copy), preprocess)
                           for i, image in enumerate(tqdm(images, desc=desc, unit="img", disable=not progress))])
        parts.append(np.asarray(embed(pixels), np.float32))
    info = {"images": len(images), "split": "train", "cameras": cameras.to_dict(),
            "calibration": "leave-one-out scores of the bank's rows (every copy of the same image left out)",
            "per_class": per_class}
    return _calibrated(parts, labels, classes, k, quantile, per_class, info, feature, width)


def _check_labels(labels: list[str], classes: list[str]) -> None:
    unknown = sorted(set(labels) - set(classes))
    if unknown:
        raise ValueError(f"training labels {unknown} are not among the model's classes {classes}")


def _calibrated(parts: list[np.ndarray], labels: list[str], classes: list[str], k: int, quantile: float,
                per_class: bool, info: dict, feature: str = EMBEDDING, width: int | None = None) -> OodSpec:
    """The spec of a bank made of ``parts`` (one (N, D) block per copy, the same N training images in each)."""
    index = {name: i for i, name in enumerate(classes)}
    count = len(labels)
    groups = np.tile(np.arange(count), len(parts))
    label_index = np.tile(np.array([index[label] for label in labels]), len(parts))
    return build_calibrated_spec(np.concatenate(parts), groups, label_index, len(classes), k, quantile, per_class, info,
                                 feature=feature, width=width)


BANK_TRAINING_COPIES = 2  # augmented training copies of each training image in the bank (edge-export's default)
BANK_FEATURE = FEATURES  # the graph output the unknown score reads (edge-export's default; docs/unknown.md)
DEFAULT_OOD_QUANTILE = 0.97  # the default operating point: 3 % of the bank's leave-one-out scores above it, the
# round figure inside the largest rate that keeps NEU validation within the unknown budgets (docs/unknown.md)
BANK_WIDTH = 256  # wider outputs are projected to this width (edge_runtime.ood.fit_projection): projecting 2,048
# pooled values and comparing with a class's bank rows then costs a frame no more than the 512-wide embedding did


def bank_embeddings(model, trunk, data_root: Path, rows, preprocess: PreprocessConfig,
                    copies: int = BANK_TRAINING_COPIES, camera_kinds: tuple[str, ...] = BANK_CAMERA_KINDS,
                    progress: bool = True, cache: KerasOutputCache | None = None, feature: str = BANK_FEATURE):
    """The Keras model's ``feature`` output (:func:`score_output`) for the bank rows of training images ``rows``,
    one (N, D) block per version (:func:`train.features.bank_items`); returns ``(blocks, augment spec, seed)`` of
    the copies.

    ``trunk``: the run's trunk cache and its model cut there (train.training_run.run_feature_cache), or None.
    The layers below the run's cut (frozen in training) are not run again: their outputs are read from the
    run's trunk cache (train/features.py) and only the trained top runs, about a fifth of ResNet-50's work. Each
    block's embeddings are kept in ``cache`` (the run's Keras output cache) under the model, the trunk cache's
    identity and the rows' names: edge-train computes the default bank once, after its last epoch, so that an
    export only reads it. Rows missing from the trunk cache (another machine, a cleared cache, other kinds) are
    computed and stored there first. Without a trunk cache (a model folder without edge-train's config.json) the
    current recipe's copies go through the whole model."""
    from train.augment import AugmentSpec
    from train.features import bank_items, training_pixels

    feature = resolved_feature(model, feature)
    item_blocks = bank_items(rows, Path(data_root), copies, tuple(camera_kinds))
    blocks = []
    if trunk is None:  # not an edge-train run: the current recipe's copies, through the whole model
        spec, seed = AugmentSpec(camera=True), 0
        log.info("no training settings (config.json): bank copies drawn with the default recipe")
        for items in item_blocks:
            pixels = np.stack([training_pixels(item, preprocess, spec, seed) for item in items])
            name = items[0].camera or f"copy {items[0].copy}" if items else ""
            blocks.append(keras_outputs(model, pixels, preprocess, progress=progress, desc=f"bank {name}",
                                        cache=cache, feature=feature)[1])
        return blocks, spec, seed
    trunk_cache, parts = trunk
    top = None
    for items in item_blocks:
        key = cache.named_key({"bank_rows": [i.name for i in items], "trunk": trunk_cache.identity,
                               **({} if feature == EMBEDDING else {"feature": feature})}) \
            if cache is not None and items else None
        stored = cache.load(key) if key else None
        if stored is not None:
            blocks.append(np.asarray(stored[1], np.float32))
            continue
        if top is None:
            top = _top_outputs(model, parts.split_layer, feature)
            trunk_cache.ensure_trunk(parts.trunk, [item for block in item_blocks for item in block],
                                     progress=progress)
        outputs = [top(trunk_cache.load("trunk", items[i : i + 64]).astype(np.float32))
                   for i in range(0, len(items), 64)]
        if not outputs:
            blocks.append(np.zeros((0, 0), np.float32))
            continue
        probabilities = np.concatenate([np.asarray(p, np.float32) for p, _ in outputs])
        embeddings = np.concatenate([np.asarray(e, np.float32) for _, e in outputs])
        if key:
            cache.save(key, probabilities, embeddings)
        blocks.append(embeddings)
    if cache is not None and top is None:
        log.info("unknown score: bank embeddings of %d rows read from %s", sum(map(len, blocks)), cache.directory)
    return blocks, trunk_cache.augment_spec, trunk_cache.seed


def training_copies_ood_spec(model, trunk, data_root: Path, rows, preprocess: PreprocessConfig,
                             copies: int = BANK_TRAINING_COPIES, k: int = 2, quantile: float = 0.98,
                             classes: list[str] | None = None, per_class: bool = True, progress: bool = True,
                             cache: KerasOutputCache | None = None,
                             camera_kinds: tuple[str, ...] = BANK_CAMERA_KINDS, feature: str = BANK_FEATURE,
                             width: int | None = BANK_WIDTH) -> OodSpec:
    """The unknown score of a trained run's Keras model, from training images only: bank = every *train* image
    of the manifest as captured, its first ``copies`` augmented training copies (the very inputs the model was
    trained on: its camera recipe's exposure, focus, motion, noise, banding, resolution and JPEG changes, and
    the geometric ones) and one camera copy per kind in ``camera_kinds`` (train.augment.bank_camera_copy: the
    strong changes the training copies show rarely); thresholds = leave-one-out calibration over those rows, per
    class. The rows are the graph output ``feature``, projected to ``width`` when wider (edge_runtime.ood), from
    :func:`bank_embeddings` (``trunk``: the run's trunk cache, or None; edge-train leaves the default bank's rows
    in ``cache``)."""
    chosen = rows_of(rows, "train")
    labels = [r.label for r in chosen]
    classes = classes or sorted(set(labels))
    _check_labels(labels, classes)
    feature = resolved_feature(model, feature)
    blocks, spec, seed = bank_embeddings(model, trunk, data_root, chosen, preprocess, copies, camera_kinds,
                                         progress, cache, feature)
    info = {"images": len(chosen), "split": "train",
            "copies": {"count": copies, "source": "the training's augmented copies (train/augment.py)",
                       "augment": spec.identity(), "seed": seed},
            **({"camera_copies": list(camera_kinds)} if camera_kinds else {}),
            "calibration": "leave-one-out scores of the bank's rows (every copy of the same image left out)",
            "per_class": per_class}
    ood = _calibrated(blocks, labels, classes, k, quantile, per_class, info, feature, width)
    log.info("unknown score: bank of %d rows (%d training images, %d augmented training copies and %d camera "
             "copies each) of the %s output, width %d%s, k=%d, threshold %.4f at in-distribution unknown rate "
             "%.3f%s", len(ood.bank), len(chosen), copies, len(camera_kinds), feature, ood.width,
             "" if ood.projection is None else f" projected to {ood.bank.shape[1]}", ood.k, ood.threshold, ood.rate,
             ", per class" if ood.class_offsets else "")
    return ood


def polarity_outputs(model, pixels: np.ndarray, preprocess: PreprocessConfig, ood: OodSpec, polarity: str = AS_IS,
                     progress: bool = True, cache: KerasOutputCache | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probabilities, unknown scores and the per-image "inverted reading kept" flags of the Keras model, read
    with test-time ``polarity`` ("auto": as captured and inverted, the reading closer to the training images)."""
    probabilities, embeddings = keras_outputs(model, pixels, preprocess, progress=progress, cache=cache,
                                              feature=ood.feature)
    scores = ood.score(embeddings, probabilities.argmax(axis=1))
    inverted = np.zeros(len(pixels), bool)
    if check_mode(polarity) == AUTO:
        inv_probabilities, inv_embeddings = keras_outputs(model, invert_polarity(pixels), preprocess,
                                                          progress=progress, desc="keras float model, inverted",
                                                          cache=cache, feature=ood.feature)
        inv_scores = ood.score(inv_embeddings, inv_probabilities.argmax(axis=1))
        inverted = choose_inverted(scores, inv_scores)
        probabilities, scores = pick(probabilities, inv_probabilities, inverted), pick(scores, inv_scores, inverted)
        log.info("test-time polarity: the inverted reading was kept for %d of %d images", int(inverted.sum()),
                 len(inverted))
    return probabilities, scores, inverted
