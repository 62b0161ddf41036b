"""Classify decoded images with an exported model: shared preprocessing -> backend -> top-k."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from edge_runtime.adapt import ADAPTED_THRESHOLD, AdaptedHead
from edge_runtime.backends import Backend, load_backend
from edge_runtime.engine_select import AUTO, load_auto
from edge_runtime.errors import MetadataError
from edge_runtime.metadata import ModelMetadata, metadata_from_labels, read_metadata
from edge_runtime.model_file import verify_graph
from edge_runtime.ood import EMBEDDING, FEATURES, UNKNOWN_LABEL, OodSpec
from edge_runtime.polarity import AS_IS, AUTO as POLARITY_AUTO, check_mode, choose_inverted, invert_polarity, pick
from edge_runtime.preprocessing import normalize, prepare_pixels, read_image
from edge_runtime.shipped import default_model_path, shipped_default, shipped_model_for
from edge_runtime.tiles import TileSpec, combine, split

log = logging.getLogger(__name__)

TOP_K = 3


@dataclass(frozen=True)
class Prediction:
    """One image's result; equality compares the result, not the timings or the probability array.

    ``label`` is ``"unknown"`` when the model's out-of-distribution score is above its threshold (the image
    is unlike anything it was trained on; see edge_runtime.ood); ``predicted`` is always the best class,
    ``confidence`` its probability. ``ood_score`` is None for models exported without the embedding output.
    ``inverted`` is True when, with test-time polarity ``auto``, the inverted reading was kept (tiled: for
    at least one window; see edge_runtime.polarity).
    Timings are per image; in a batch, ``inference_ms`` is the batch's inference time divided by its size.
    """

    label: str
    confidence: float
    index: int
    top_k: list[tuple[str, float]]
    probabilities: np.ndarray = field(repr=False, compare=False)
    preprocess_ms: float = field(default=0.0, compare=False)
    inference_ms: float = field(default=0.0, compare=False)
    ood_score: float | None = field(default=None, compare=False)
    unknown: bool = False
    predicted: str = ""
    inverted: bool = False

    def __post_init__(self) -> None:
        if not self.predicted:
            object.__setattr__(self, "predicted", self.label)


class Classifier:
    """A model plus its metadata. Load with :meth:`Classifier.load`. Not thread-safe (one per thread)."""

    def __init__(self, backend: Backend, metadata: ModelMetadata) -> None:
        _check_matches(backend, metadata)
        self.backend = backend
        self.metadata = metadata
        self.path = backend.path
        self.labels = list(metadata.labels)
        self._config = metadata.preprocess
        self.ood = ood_spec_of(metadata, backend.path)
        self.adapted = adapted_head_of(metadata, backend.path)  # a head fitted by edge-adapt, if any
        self.base_labels = self.adapted.base_labels if self.adapted else self.labels
        self.tiles: TileSpec | None = None  # set to classify every image by windows (predict_tiled)
        self._polarity = AS_IS
        try:
            self.polarity = str(metadata.extra.get("polarity", AS_IS))  # the export's choice, if it made one
        except ValueError as exc:
            raise MetadataError(backend.path, f"invalid 'polarity' metadata ({exc}); re-export the model "
                                "with edge-export") from exc

    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        engine: str | None = None,
        threads: int | None = None,
        labels: list[str] | None = None,
    ) -> "Classifier":
        """Load a .tflite/.onnx model (default: the one shipped in the package) with its embedded metadata.

        ``engine``:

        * ``"auto"`` (edge-classify's default): the fastest on this machine of every installed engine that can
          run ``path`` or, without ``path``, of every shipped artifact that passed its accuracy gates (see
          :mod:`edge_runtime.engine_select`; measured once per machine, then cached). The chosen file may be
          another shipped artifact than ``default.tflite``: ``Classifier.path`` names the one loaded.
        * ``None``: no measuring and no cache file: the suffix's default engine (litert for ``.tflite``,
          onnxruntime for ``.onnx``) on ``path``, or on the shipped default model. Library calls and tests
          stay deterministic; pass ``"auto"`` to have the selection.
        * an engine name (``edge_runtime.backends.ENGINES``): that engine; without ``path`` it runs the shipped
          artifact that passed its gates on it.

        ``labels`` lets a model without (valid) metadata be used; with valid metadata they must agree.
        """
        backend = _load_backend(path, engine, threads)
        metadata = _metadata_for(backend, labels)
        verify_graph(backend.path, metadata)
        classifier = cls(backend, metadata)
        log.info(
            "loaded %s (%s, %s, %d classes, %d threads)",
            backend.path, backend.name, classifier.metadata.format, len(classifier.labels), backend.threads,
        )
        return classifier

    def __repr__(self) -> str:
        return f"Classifier('{self.path}', engine={self.backend.name}, labels={self.labels})"

    def replica(self, threads: int, max_batch: int = 1) -> "Classifier":
        """The same model file, engine and settings (tiles, polarity, unknown threshold) on a backend of its own
        with ``threads`` threads, taking up to ``max_batch`` images per engine call (``Backend.max_batch``): one
        per thread for parallel inference (see edge_runtime.throughput)."""
        backend = load_backend(self.path, self.backend.name, threads)
        backend.max_batch = max(1, int(max_batch))
        twin = type(self)(backend, self.metadata)
        twin.tiles, twin.polarity, twin.ood = self.tiles, self.polarity, self.ood
        return twin

    @property
    def polarity(self) -> str:
        """Test-time polarity (edge_runtime.polarity): ``"as-is"``, or ``"auto"`` (both readings of every
        image, the one closer to the training images kept); needs the unknown score."""
        return self._polarity

    @polarity.setter
    def polarity(self, mode: str) -> None:
        if check_mode(mode) == POLARITY_AUTO and self.ood is None:
            raise MetadataError(self.path, "test-time polarity 'auto' needs a model with the unknown score "
                                "(embedding output and 'ood' metadata): re-export it with edge-export")
        self._polarity = mode

    @property
    def unknown_rate(self) -> float | None:
        """The operating point of the unknown answer: the share of in-distribution images (NEU-like, clean or
        camera-changed) answered ``unknown``, as calibrated at export (None without the unknown score)."""
        return None if self.ood is None else self.ood.rate

    @unknown_rate.setter
    def unknown_rate(self, rate: float) -> None:
        """Move the threshold to another in-distribution unknown rate (e.g. 0.01), from the model's rate table."""
        if self.ood is None:
            raise MetadataError(self.path, "the model has no unknown score (embedding output and 'ood' metadata); "
                                "re-export it with edge-export")
        if self.ood.rate_table is None:
            raise MetadataError(self.path, "the model stores no table of unknown rates, so its threshold cannot be "
                                "moved; re-export it with edge-export (or python -m export.unknown_bank)")
        self.ood = self.ood.at_rate(float(rate))  # ValueError for a rate outside the calibrated range

    @property
    def defect_pixel_threshold(self) -> int:
        """Hot and dead pixel correction before resizing (gray levels beyond every neighbour; 0: off)."""
        return self._config.defect_pixel_threshold

    @defect_pixel_threshold.setter
    def defect_pixel_threshold(self, levels: int) -> None:
        """Another threshold for this camera (0 where the camera corrects its own defective pixels)."""
        self._config = replace(self._config, defect_pixel_threshold=int(levels))  # ValueError outside 0..255

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """Decoded image -> this model's input (uint8 pixels if the graph normalises, else float32)."""
        return self._model_input(prepare_pixels(image, self._config))

    def _model_input(self, pixels: np.ndarray) -> np.ndarray:
        return pixels if self.metadata.preprocessing_in_graph else normalize(pixels, self._config)

    def predict(self, image: np.ndarray) -> Prediction:
        """Classify one decoded image (gray, BGR, BGRA, 16-bit or float, any size); tiled if ``self.tiles``."""
        if self.tiles is not None:
            return self.predict_tiled(image, self.tiles)
        return self.predict_batch([image])[0]

    def predict_tiled(self, image: np.ndarray, spec: TileSpec) -> Prediction:
        """Classify a large frame by its windows (see edge_runtime.tiles): one answer from the known windows."""
        windows = self.predict_batch(split(image, spec.boxes(*image.shape[:2])))
        scores = [w.ood_score for w in windows]
        scored = self.threshold is not None
        combined = combine(np.stack([w.probabilities for w in windows]), spec.method,
                           np.array(scores, np.float32) if scored else None, self.threshold)
        return self._prediction(combined.probabilities, sum(w.preprocess_ms for w in windows),
                                sum(w.inference_ms for w in windows), combined.ood_score,
                                any(w.inverted for w in windows))

    def predict_batch(self, images: list[np.ndarray]) -> list[Prediction]:
        """Classify decoded images in one backend call (with polarity ``auto``: both readings of each)."""
        if len(images) == 0:
            return []
        both = self.polarity == POLARITY_AUTO
        inputs, prep_ms = [], []
        for image in images:
            start = time.perf_counter()
            pixels = prepare_pixels(image, self._config)
            inputs.append(self._model_input(pixels))
            if both:
                inputs.append(self._model_input(invert_polarity(pixels)))
            prep_ms.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        probabilities, scores = self._answers(self.device_outputs(np.stack(inputs)), len(inputs))
        inverted = np.zeros(len(images), bool)
        if both:  # inputs alternate: as captured, inverted
            inverted = choose_inverted(scores[0::2], scores[1::2])
            probabilities = pick(probabilities[0::2], probabilities[1::2], inverted)
            scores = pick(scores[0::2], scores[1::2], inverted)
        infer_ms = (time.perf_counter() - start) * 1000 / len(images)
        return [self._prediction(p, ms, infer_ms, None if self.threshold is None else float(score), bool(inv))
                for p, ms, score, inv in zip(probabilities, prep_ms, scores, inverted)]

    @property
    def threshold(self) -> float | None:
        """The unknown score's threshold (adapted models: 0, their scores being margins); None without one."""
        if self.adapted is not None:
            return ADAPTED_THRESHOLD
        return None if self.ood is None else self.ood.threshold

    def device_outputs(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        """The graph's outputs for a batch of prepared inputs (:meth:`prepare`), by name: ``probabilities`` (the
        graph's own classes), ``embedding`` (models with the unknown score) and ``features`` (the backbone's
        pooled output, in exports that have it). Outputs are told apart by width, not by position: the one the
        unknown score reads (``OodSpec.feature``) by the score's width."""
        outputs = self.backend.run_outputs(inputs)
        named = {"probabilities": _output_of_width(outputs, len(self.base_labels), self.path, "class probabilities")}
        if self.ood is not None:
            others = [o for o in outputs if o.ndim == 2 and o is not named["probabilities"]]
            read = named[self.ood.feature] = _output_of_width(others, self.ood.width, self.path, self.ood.feature)
            rest = [o for o in others if o is not read]
            if rest:
                named[EMBEDDING if self.ood.feature == FEATURES else FEATURES] = max(rest, key=lambda o: o.shape[1])
        return named

    def _answers(self, outputs: dict[str, np.ndarray], count: int) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities (count, labels) and unknown scores (count,) from :meth:`device_outputs`."""
        probabilities = outputs["probabilities"]
        if self.ood is None:
            return probabilities, np.full(count, np.nan, np.float32)
        if self.adapted is not None:
            if self.adapted.feature not in outputs:
                raise MetadataError(self.path, f"the adapted head reads the '{self.adapted.feature}' output, which "
                                    "this model does not have; run edge-adapt again on its base model")
            return self.adapted.decide(probabilities, outputs[self.adapted.feature], outputs[self.ood.feature],
                                       self.ood)
        return probabilities, self.ood.score(outputs[self.ood.feature], probabilities.argmax(axis=1))  # per class

    def predict_file(self, path: str | Path) -> Prediction:
        """Read and classify an image file; an unreadable file raises ImageReadError naming it."""
        return self.predict(read_image(path))

    def _prediction(self, probabilities: np.ndarray, preprocess_ms: float, inference_ms: float,
                    ood_score: float | None = None, inverted: bool = False) -> Prediction:
        order = np.argsort(-probabilities, kind="stable")
        best = int(order[0])
        unknown = ood_score is not None and not ood_score <= self.threshold  # NaN counts as unknown
        return Prediction(
            label=UNKNOWN_LABEL if unknown else self.labels[best],
            predicted=self.labels[best],
            unknown=unknown,
            ood_score=ood_score,
            confidence=float(probabilities[best]),
            index=best,
            top_k=[(self.labels[i], float(probabilities[i])) for i in order[:TOP_K]],
            probabilities=probabilities,
            preprocess_ms=preprocess_ms,
            inference_ms=inference_ms,
            inverted=inverted,
        )


def ood_spec_of(metadata: ModelMetadata, path: str | Path = "model") -> OodSpec | None:
    """The model's unknown-score settings from its metadata (None for models exported without them)."""
    data = metadata.extra.get("ood")
    if data is None:
        return None
    try:
        return OodSpec.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise MetadataError(path, f"invalid 'ood' metadata ({exc}); re-export the model "
                            "with edge-export") from exc


def adapted_head_of(metadata: ModelMetadata, path: str | Path = "model") -> AdaptedHead | None:
    """The head ``edge-adapt`` fitted (None for exported models)."""
    data = metadata.extra.get("adapted")
    if data is None:
        return None
    try:
        head = AdaptedHead.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise MetadataError(path, f"invalid 'adapted' metadata ({exc}); run edge-adapt again") from exc
    if head.labels != list(metadata.labels):
        raise MetadataError(path, f"the adapted head answers {head.labels} but the metadata lists "
                            f"{metadata.labels}; run edge-adapt again")
    return head


def _output_of_width(outputs: list[np.ndarray], width: int, path: Path, what: str,
                     exclude: np.ndarray | None = None) -> np.ndarray:
    """The model output with ``width`` columns (outputs are told apart by width, not by position)."""
    for output in outputs:
        if output is not exclude and output.ndim == 2 and output.shape[1] == width:
            return output
    shapes = [tuple(o.shape) for o in outputs]
    raise MetadataError(path, f"the model has no {what} output of width {width} (outputs {shapes}); "
                        "its metadata does not match it: re-export it with edge-export")


def _load_backend(path: str | Path | None, engine: str | None, threads: int | None) -> Backend:
    """The backend ``Classifier.load`` uses: see its docstring for what ``engine`` means."""
    if engine == AUTO:
        return load_auto(path, threads, default_model_path().parent, default_model_path())
    if path is None:
        path = shipped_default() if engine is None else shipped_model_for(engine)
    return load_backend(path, engine=engine, threads=threads)


def _metadata_for(backend: Backend, labels: list[str] | None) -> ModelMetadata:
    """The embedded metadata; explicit labels stand in when it is missing or invalid."""
    try:
        metadata = read_metadata(backend.path, backend)
    except MetadataError as exc:
        if labels is None:
            raise
        log.warning("%s; using the explicit labels and default preprocessing instead", exc)
        return metadata_from_labels(labels, backend.input_shape, backend.input_dtype.name, source=backend.path)
    if labels is not None and list(labels) != metadata.labels:
        raise MetadataError(
            backend.path,
            f"the labels given {list(labels)} differ from those stored in the model {metadata.labels}; "
            "drop the explicit labels or re-export the model with the right ones",
        )
    return metadata


def _check_matches(backend: Backend, metadata: ModelMetadata) -> None:
    """Refuse metadata whose class count, input size or dtype disagree with the loaded graph."""
    problems = []
    adapted = metadata.extra.get("adapted")
    labels = adapted.get("base_labels", metadata.labels) if isinstance(adapted, dict) else metadata.labels
    if backend.output_width > 0 and backend.output_width != len(labels):
        problems.append(f"{len(labels)} labels but the model has {backend.output_width} outputs")
    if list(backend.input_shape[1:]) != list(metadata.input_shape[1:]):
        problems.append(f"input shape {metadata.input_shape} but the model takes {list(backend.input_shape)}")
    if backend.input_dtype.name != metadata.input_dtype:
        problems.append(f"input dtype {metadata.input_dtype} but the model takes {backend.input_dtype.name}")
    if problems:
        raise MetadataError(
            backend.path,
            f"metadata does not match the model ({'; '.join(problems)}); re-export it with edge-export "
            "or pass the right labels",
        )
