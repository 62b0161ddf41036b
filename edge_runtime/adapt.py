"""Adapted models: a head fitted on the device to a few labelled images of a new line (``edge-adapt``).

An exported model has, besides its class probabilities, an ``embedding`` output (and, when exported with
it, the backbone's pooled ``features``). Adapting leaves the graph as it is and adds to the metadata
(``extra["adapted"]``, :class:`AdaptedHead`):

* the enrolled images' features (square-rooted, then L2-normalised), their classes and sha256; each image is
  enrolled as captured and mirrored (:data:`MIRRORS`, ``--views``): a surface defect is the same defect seen
  in a mirror, and rows, columns and the rolling direction stay where they were;
* their centre (the mean of the class means; zero with a single class): the head and the unknown distance
  work on features centred on it and L2-normalised again, which spreads a new line's images, all alike in
  the base model's eyes, over the sphere;
* a multinomial logistic regression fitted on them (numpy, a fixed number of full-batch gradient steps, so
  the same images give the same head);
* the enrolled images' own unknown threshold: each labelled image's cosine distance to its nearest *other*
  labelled image (leave-one-out), its ``quantile`` by :func:`edge_runtime.ood.threshold_from`. Never the images
  it is later evaluated on;
* optionally, images of the line nobody labelled (``--unlabelled``): the head fitted on the labelled ones names
  them, those it names with probability >= :data:`UNLABELLED_CONFIDENCE` and inside the unknown threshold are
  enrolled under that name (as captured, marked ``"source": "unlabelled"``) and the head is fitted again, for
  :data:`UNLABELLED_ROUNDS` rounds (self-training). They train the head (and its centre) only: the unknown
  distance, its threshold and the choice of expert stay with the labelled images, so a new kind of defect
  among the unlabelled frames cannot make itself known by being named.

Deciding (:meth:`AdaptedHead.decide`): without ``keep_base`` (``--only-new``) the enrolled head answers, and
an image farther than the threshold from every enrolled image is ``unknown``. With ``keep_base`` two experts
answer, the base model (its class probabilities and unknown score, as exported) and the enrolled head: the one
whose images lie nearer answers, nearness measured in one space for both (the ``embedding`` the base model's
unknown score uses: nearest training image against nearest enrolled image), each with its own unknown rule.
Images the base model was trained for thus keep its answers. Adapted scores are margins, the distance minus
the answering expert's threshold: the threshold is 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from edge_runtime.ood import EMBEDDING, FEATURES, OodSpec, decode_npy, encode_npy, l2_normalize, threshold_from

ADAPTED_KIND = "enrolled_logistic"
ADAPTED_THRESHOLD = 0.0  # adapted unknown scores are margins: distance minus the expert's own threshold
DEFAULT_QUANTILE = 0.99
TEMPERATURE = 10.0  # logits = TEMPERATURE * cosine similarity: unit vectors need a scale to be separable
L2_PENALTY = 1e-3
STEPS = 300
LEARNING_RATE = 0.5
# the views of an enrolled image, in order (``--views N`` takes the first N): axes of an HWC image to flip
MIRRORS: dict[str, tuple[int, ...]] = {"as captured": (), "left-right": (1,), "top-bottom": (0,), "both": (0, 1)}
DEFAULT_VIEWS = len(MIRRORS)
UNLABELLED = "unlabelled"  # the ``source`` of an enrolled row the head named itself
UNLABELLED_CONFIDENCE = 0.8  # head probability an unlabelled image needs to be enrolled under the head's answer
UNLABELLED_ROUNDS = 2  # name the unlabelled images and refit, this many times (docs/adapt.md)


def mirrored_views(pixels: np.ndarray, views: int = DEFAULT_VIEWS) -> list[tuple[str, np.ndarray]]:
    """(view name, pixels) of an HWC image: as captured and its first ``views - 1`` mirror images."""
    if not 1 <= views <= len(MIRRORS):
        raise ValueError(f"views must be 1 to {len(MIRRORS)}, got {views}")
    return [(name, np.flip(pixels, axes) if axes else pixels) for name, axes in list(MIRRORS.items())[:views]]


def transform(features: np.ndarray) -> np.ndarray:
    """Signed square root, then L2 normalisation (post-ReLU features are heavy-tailed; this evens them)."""
    x = np.asarray(features, np.float32)
    x = np.sign(x) * np.sqrt(np.abs(x))
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def centre_of(rows: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The mean of the class means of :func:`transform`-ed ``rows`` (zero with fewer than two classes)."""
    classes = np.unique(labels)
    if len(classes) < 2:
        return np.zeros(rows.shape[1], np.float32)
    return np.mean([rows[labels == c].mean(axis=0) for c in classes], axis=0).astype(np.float32)


def centred(rows: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """``rows`` moved by ``-centre`` and L2-normalised again."""
    return l2_normalize(np.asarray(rows, np.float32) - centre)


def fit_logistic(x: np.ndarray, y: np.ndarray, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Weights (D, C) and bias (C,) of a softmax regression on unit-length rows ``x`` with labels ``y``.

    Full-batch gradient descent from zero. The weights never leave the span of the rows, so with fewer rows than
    features the same steps run on the rows' Gram matrix (weights = x.T @ coefficients): the same head, several
    times faster."""
    x = np.asarray(x, np.float64)
    targets = np.eye(classes)[y]
    dual = len(x) <= x.shape[1]
    kernel = x @ x.T if dual else x
    coefficients, bias = np.zeros((kernel.shape[1], classes)), np.zeros(classes)
    for _ in range(STEPS):
        probabilities = _softmax(TEMPERATURE * (kernel @ coefficients) + bias)
        gradient = (probabilities - targets) / len(x)
        step = TEMPERATURE * (gradient if dual else x.T @ gradient)
        coefficients -= LEARNING_RATE * (step + L2_PENALTY * coefficients)
        bias -= LEARNING_RATE * gradient.sum(0)
    weights = x.T @ coefficients if dual else coefficients
    return weights.astype(np.float32), bias.astype(np.float32)


def leave_one_out_distances(bank: np.ndarray, sha256: list[str]) -> np.ndarray:
    """Each row's cosine distance to its nearest other row (byte-identical images do not count as others)."""
    similarities = np.einsum("ij,kj->ik", bank, bank)
    same = np.array(sha256)[:, None] == np.array(sha256)[None, :]
    similarities[same] = -np.inf
    return (1.0 - similarities.max(axis=1)).astype(np.float32)


@dataclass(frozen=True)
class AdaptedHead:
    """What ``edge-adapt`` adds to a model; stored as ``extra["adapted"]`` in its metadata."""

    classes: list[str]  # the enrolled classes, in head-output order
    base_labels: list[str]  # the graph's own class-probability output
    keep_base: bool  # the base classes are still answered (not --only-new)
    feature: str  # EMBEDDING or FEATURES
    bank: np.ndarray  # (N, D) transformed features of the enrolled images
    bank_labels: np.ndarray  # (N,) index into classes
    gate: np.ndarray  # (N, E) the enrolled images' L2-normalised embeddings, beside the base model's bank
    enrolled: list[dict[str, str]]  # per bank row: sha256, class, file, folder it came from
    weights: np.ndarray
    bias: np.ndarray
    threshold: float  # cosine distance to the nearest enrolled image beyond which it is not known here
    quantile: float = DEFAULT_QUANTILE
    base_model_sha256: str = ""
    kind: str = ADAPTED_KIND
    history: list[dict[str, Any]] = field(default_factory=list)
    centre: np.ndarray | None = None  # centre_of(bank, bank_labels); None: heads written before it (no centring)

    @property
    def labels(self) -> list[str]:
        """The adapted model's classes: the base ones (when kept), then the enrolled ones that are new."""
        kept = list(self.base_labels) if self.keep_base else []
        return kept + [c for c in self.classes if c not in kept]

    @property
    def width(self) -> int:
        return int(self.bank.shape[1])

    @cached_property
    def labelled(self) -> np.ndarray:
        """Per bank row: labelled by a person (True) or named by the head from unlabelled images (False)."""
        return np.array([is_labelled(e) for e in self.enrolled], bool)

    @cached_property
    def _distance_bank(self) -> np.ndarray:
        """The labelled rows as the unknown distance compares with them (centred when the head is)."""
        bank = self.bank[self.labelled]
        return bank if self.centre is None else centred(bank, self.centre)

    @cached_property
    def _labelled_gate(self) -> np.ndarray:
        return self.gate[self.labelled]

    def decide(self, probabilities: np.ndarray, feature: np.ndarray, base_output: np.ndarray,
               base: OodSpec | None) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities over :attr:`labels`, adapted unknown scores) of a batch.

        ``probabilities``: the graph's base-class output; ``feature``: the output the head reads;
        ``base_output`` and ``base``: the output the base model's unknown score reads (``base.feature``) and
        that score (used with ``keep_base``).
        """
        head, own = self.enrolled_answers(transform(feature))
        labels = self.labels
        enrolled = np.zeros((len(head), len(labels)), np.float32)
        enrolled[:, [labels.index(c) for c in self.classes]] = head
        if not self.keep_base:
            return enrolled, own
        if base is None:
            raise ValueError("an adapted model that keeps its base classes needs the base unknown score")
        padded = np.zeros_like(enrolled)
        padded[:, : len(self.base_labels)] = probabilities
        theirs = base.score(base_output, probabilities.argmax(axis=1)) - float(base.threshold)
        use_enrolled = self.enrolled_is_nearer(base.embed(base_output), base.bank)
        return (np.where(use_enrolled[:, None], enrolled, padded),
                np.where(use_enrolled, own, theirs).astype(np.float32))

    def enrolled_answers(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(head probabilities over :attr:`classes`, unknown margins) of :func:`transform`-ed feature rows."""
        x = rows if self.centre is None else centred(rows, self.centre)
        head = _softmax(TEMPERATURE * (x @ self.weights) + self.bias)
        own = 1.0 - np.einsum("ij,kj->ik", x, self._distance_bank).max(axis=1) - self.threshold
        return head.astype(np.float32), own.astype(np.float32)

    def enrolled_is_nearer(self, embedding: np.ndarray, base_bank: np.ndarray) -> np.ndarray:
        """Per image: is its nearest labelled enrolled image nearer than the base model's nearest training image?
        ``embedding``: rows as the base bank holds them (``OodSpec.embed``)."""
        e = l2_normalize(embedding)
        enrolled = np.einsum("ij,kj->ik", e, self._labelled_gate).max(axis=1)
        return enrolled > np.einsum("ij,kj->ik", e, base_bank).max(axis=1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "classes": self.classes, "base_labels": self.base_labels,
            "keep_base": self.keep_base, "feature": self.feature, "bank": encode_npy(self.bank.astype(np.float16)),
            "bank_labels": self.bank_labels.astype(int).tolist(), "gate": encode_npy(self.gate.astype(np.float16)),
            "enrolled": self.enrolled,
            "weights": encode_npy(self.weights), "bias": self.bias.astype(float).tolist(),
            "threshold": float(self.threshold), "quantile": self.quantile,
            "base_model_sha256": self.base_model_sha256, "history": self.history,
            **({} if self.centre is None else {"centre": encode_npy(self.centre.astype(np.float32))}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AdaptedHead":
        """Parse ``extra["adapted"]``; raises KeyError/TypeError/ValueError when it is malformed."""
        if data.get("kind") != ADAPTED_KIND:
            raise ValueError(f"adapted head kind {data.get('kind')!r}; this runtime knows {ADAPTED_KIND!r}")
        head = cls(
            classes=[str(c) for c in data["classes"]], base_labels=[str(c) for c in data["base_labels"]],
            keep_base=bool(data["keep_base"]), feature=str(data["feature"]),
            bank=decode_npy(data["bank"]).astype(np.float32), bank_labels=np.asarray(data["bank_labels"], int),
            gate=decode_npy(data["gate"]).astype(np.float32),
            enrolled=[dict(e) for e in data["enrolled"]], weights=decode_npy(data["weights"]).astype(np.float32),
            bias=np.asarray(data["bias"], np.float32), threshold=float(data["threshold"]),
            quantile=float(data.get("quantile", DEFAULT_QUANTILE)),
            base_model_sha256=str(data.get("base_model_sha256", "")), history=list(data.get("history", [])),
            centre=decode_npy(data["centre"]).astype(np.float32) if "centre" in data else None,
        )
        head._check()
        return head

    def _check(self) -> None:
        rows, classes = len(self.bank), len(self.classes)
        if self.feature not in (EMBEDDING, FEATURES):
            raise ValueError(f"feature {self.feature!r} is neither {EMBEDDING!r} nor {FEATURES!r}")
        if not (len(self.bank_labels) == len(self.enrolled) == len(self.gate) == rows) or self.weights.shape != (self.width, classes):
            raise ValueError("bank, labels, enrolled images and head weights disagree in size")
        if self.bias.shape != (classes,) or not (self.threshold > 0):
            raise ValueError("bias size or threshold invalid")
        if self.centre is not None and self.centre.shape != (self.width,):
            raise ValueError("centre and bank disagree in width")


def build_head(rows: np.ndarray, gate: np.ndarray, labels: list[str], enrolled: list[dict[str, str]],
               base_labels: list[str], keep_base: bool, feature: str, quantile: float = DEFAULT_QUANTILE,
               base_model_sha256: str = "", history: list[dict[str, Any]] | None = None,
               unlabelled: Unlabelled | None = None, base_bank: np.ndarray | None = None) -> AdaptedHead:
    """Fit the head and its threshold on enrolled images' :func:`transform`-ed features (N, D), their
    L2-normalised embeddings (N, E) and classes (N); then, given ``unlabelled`` images of the line, enrol those
    the head names confidently (self-training, :data:`UNLABELLED_ROUNDS` rounds). With ``keep_base`` an
    unlabelled image is only taken when it lies nearer the enrolled images than the base model's training
    images (``base_bank``), the ones the enrolled head would answer."""
    if len(labels) < 2:
        raise ValueError("at least two enrolled images are needed (the unknown threshold compares each with "
                         "the others)")
    head = _fit(rows, gate, labels, enrolled, base_labels, keep_base, feature, quantile, base_model_sha256, history)
    if unlabelled is None or not len(unlabelled.rows):
        return head
    if keep_base and base_bank is None:
        raise ValueError("unlabelled images for a model that keeps its base classes need the base model's bank")
    for _ in range(UNLABELLED_ROUNDS):
        probabilities, margins = head.enrolled_answers(unlabelled.rows)
        taken = (probabilities.max(axis=1) >= UNLABELLED_CONFIDENCE) & (margins <= 0)
        if keep_base:
            taken &= head.enrolled_is_nearer(unlabelled.gate, base_bank)
        names = [head.classes[i] for i in probabilities.argmax(axis=1)]
        chosen = np.flatnonzero(taken)
        head = _fit(np.concatenate([rows, unlabelled.rows[chosen]]), np.concatenate([gate, unlabelled.gate[chosen]]),
                    [*labels, *(names[i] for i in chosen)],
                    [*enrolled, *({**unlabelled.records[i], "class": names[i], "source": UNLABELLED} for i in chosen)],
                    base_labels, keep_base, feature, quantile, base_model_sha256, history)
    return head


@dataclass(frozen=True)
class Unlabelled:
    """Images of the line nobody labelled, as captured: transformed features (N, D), embeddings (N, E) and
    provenance (sha256, file, folder) per image."""

    rows: np.ndarray
    gate: np.ndarray
    records: list[dict[str, str]]


def is_labelled(record: dict[str, str]) -> bool:
    """An enrolled row a person labelled (not one the head named from ``--unlabelled`` images)."""
    return record.get("source") != UNLABELLED


def _fit(rows: np.ndarray, gate: np.ndarray, labels: list[str], enrolled: list[dict[str, str]],
         base_labels: list[str], keep_base: bool, feature: str, quantile: float, base_model_sha256: str,
         history: list[dict[str, Any]] | None) -> AdaptedHead:
    """The head and its centre on every enrolled row; the threshold from the labelled rows' leave-one-out
    distances among themselves."""
    classes = list(dict.fromkeys(labels))
    bank = np.asarray(rows, np.float32).astype(np.float16).astype(np.float32)  # as stored
    bank_labels = np.array([classes.index(c) for c in labels])
    centre = centre_of(bank, bank_labels)
    weights, bias = fit_logistic(centred(bank, centre), bank_labels, len(classes))
    labelled = [is_labelled(e) for e in enrolled]
    distances = leave_one_out_distances(centred(bank[labelled], centre),
                                        [e["sha256"] for e, keep in zip(enrolled, labelled) if keep])
    finite = distances[np.isfinite(distances)]
    if finite.size == 0:
        raise ValueError("every enrolled image is a copy of the same file; enrol different images")
    threshold = max(threshold_from(finite, quantile), 1e-6)
    gate = l2_normalize(gate).astype(np.float16).astype(np.float32)
    return AdaptedHead(classes, list(base_labels), keep_base, feature, bank, bank_labels, gate, list(enrolled),
                       weights, bias, threshold, quantile=quantile, base_model_sha256=base_model_sha256,
                       history=list(history or []), centre=centre)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
