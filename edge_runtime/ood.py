"""Out-of-distribution ("unknown") score: how far an image's embedding lies from every training image.

A closed-set classifier names one of its classes for any input, and on another plant's images it does so
with high confidence (softmax confidence is not a measure of correctness there). The exported models have a
second output, the ``embedding`` (the 512-wide layer before the classifier); this module compares it with
the embeddings of the training images, stored in the model's metadata:

    score = 1 - cosine similarity to the k-th most similar training embedding   (0 = seen before, up to 2)

An image whose score is above ``threshold`` is reported as ``unknown``. The threshold is chosen on the
validation split only (the ``quantile`` of its scores, e.g. 0.95 keeps 95 % of validation images), never on
the out-of-distribution data the score is later tested against.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any

import numpy as np

OOD_KIND = "knn_cosine"
UNKNOWN_LABEL = "unknown"


@dataclass(frozen=True)
class OodSpec:
    """Everything needed to score and flag an embedding; stored as ``extra["ood"]`` in model metadata."""

    bank: np.ndarray  # (N, D) L2-normalised training embeddings (float16 in storage)
    k: int = 5
    threshold: float = float("inf")
    quantile: float = 0.95
    feature: str = "embedding"
    kind: str = OOD_KIND

    def __post_init__(self) -> None:
        if self.kind != OOD_KIND:
            raise ValueError(f"unknown OOD score kind {self.kind!r}; this runtime knows {OOD_KIND!r}")
        if self.bank.ndim != 2 or len(self.bank) < self.k or self.k < 1:
            raise ValueError(f"the OOD bank must be (N >= k, D) with k >= 1; got {self.bank.shape}, k={self.k}")

    @property
    def width(self) -> int:
        return int(self.bank.shape[1])

    def score(self, embeddings: np.ndarray) -> np.ndarray:
        """OOD scores (N,) of embeddings (N, D): 1 - cosine similarity to the k-th nearest training embedding."""
        return knn_cosine_score(embeddings, self.bank, self.k)

    def with_threshold(self, validation_scores: np.ndarray, quantile: float | None = None) -> "OodSpec":
        """A copy whose threshold is the ``quantile`` of the given in-distribution (validation) scores."""
        quantile = self.quantile if quantile is None else quantile
        return OodSpec(self.bank, self.k, threshold_from(validation_scores, quantile), quantile, self.feature, self.kind)

    def to_dict(self) -> dict[str, Any]:
        buffer = io.BytesIO()
        np.save(buffer, self.bank.astype(np.float16), allow_pickle=False)
        return {
            "kind": self.kind, "feature": self.feature, "k": self.k, "threshold": float(self.threshold),
            "quantile": self.quantile, "bank_npy_base64": base64.b64encode(buffer.getvalue()).decode("ascii"),
            "bank_shape": list(self.bank.shape),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "OodSpec":
        """Parse ``extra["ood"]``; raises ValueError/KeyError when it is malformed."""
        raw = base64.b64decode(data["bank_npy_base64"], validate=True)
        bank = np.load(io.BytesIO(raw), allow_pickle=False).astype(np.float32)
        return cls(bank, int(data["k"]), float(data["threshold"]), float(data.get("quantile", 0.95)),
                   str(data.get("feature", "embedding")), str(data.get("kind", OOD_KIND)))


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def knn_cosine_score(embeddings: np.ndarray, bank: np.ndarray, k: int) -> np.ndarray:
    """1 - cosine similarity to the k-th most similar row of ``bank`` (rows assumed L2-normalised).

    ``einsum`` rather than ``@`` on purpose: ``@`` goes to the multi-threaded BLAS, whose worker threads keep
    spinning after the call and took the cores from the inference engine (measured: full-int8 TFLite on 2
    threads 11.2 ms per frame instead of 5.3 ms); einsum's own loop needs 0.07 ms for 1,656 x 512.
    """
    similarities = np.einsum("ij,kj->ik", l2_normalize(np.atleast_2d(embeddings)), np.asarray(bank, np.float32))
    kth = np.partition(similarities, similarities.shape[1] - k, axis=1)[:, similarities.shape[1] - k]
    return (1.0 - kth).astype(np.float32)


def threshold_from(validation_scores: np.ndarray, quantile: float) -> float:
    """The ``quantile`` of in-distribution scores: that share of validation images stays below it.

    The cut lies halfway between the validation score at the quantile and the next higher one, so that no
    validation image sits on the threshold: otherwise a converted model whose scores differ from float's by
    rounding alone (1e-6) flips that image between known and unknown (seen with fp32 TFLite).
    """
    scores = np.asarray(validation_scores, dtype=np.float64)
    if scores.size == 0:
        raise ValueError("no validation scores to choose the OOD threshold from")
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    at = float(np.quantile(scores, quantile, method="higher"))
    above = scores[scores > at]
    return (at + float(above.min())) / 2.0 if above.size else at


def build_spec(train_embeddings: np.ndarray, validation_embeddings: np.ndarray, k: int = 5,
               quantile: float = 0.95) -> OodSpec:
    """Bank from the training embeddings; threshold from the validation embeddings only."""
    bank = l2_normalize(train_embeddings).astype(np.float16).astype(np.float32)
    spec = OodSpec(bank, k=k, quantile=quantile)
    return spec.with_threshold(spec.score(validation_embeddings))


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """Area under the ROC curve for telling ``out`` (positive, higher score) from ``in``; ties count half."""
    a, b = np.asarray(in_scores, np.float64), np.asarray(out_scores, np.float64)
    if a.size == 0 or b.size == 0:
        return float("nan")
    values, inverse, counts = np.unique(np.concatenate([a, b]), return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based rank, averaged over ties
    out_ranks = average_rank[inverse[len(a):]]
    return float((out_ranks.sum() - len(b) * (len(b) + 1) / 2) / (len(a) * len(b)))
