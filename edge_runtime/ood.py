"""Out-of-distribution ("unknown") score: how far an image's embedding lies from every training image.

A closed-set classifier names one of its classes for any input, and on another plant's images it does so
with high confidence (softmax confidence is not a measure of correctness there). The exported models have a
second output, the ``embedding`` (the 512-wide layer before the classifier); this module compares it with
the embeddings of the training images, stored in the model's metadata:

    score = 1 - cosine similarity to the k-th most similar training embedding   (0 = seen before, up to 2)

An image whose score is above ``threshold`` is reported as ``unknown``. The threshold is chosen on
in-distribution images only (the ``quantile`` of their scores, e.g. 0.98 keeps 98 % of them), never on the
out-of-distribution data the score is later tested against.

Models exported since the bank holds camera-changed copies of the training images (train/embeddings.py) also
carry, all optional so that older metadata still loads:

* ``bank_labels``: the class of every bank row. Given the image's predicted class, the neighbours are sought
  among that class's rows only: an image that a camera change pushed to a wrong class lies far from that
  class's training images, so it is answered unknown instead of confidently wrong.
* ``class_offsets``: the per-class rule. Each class has its own threshold, the same quantile of its own
  calibration scores (a class whose images vary more, like pitted_surface, gets a higher one); the score is
  reported relative to it, ``score - class_offsets[predicted class]``, with the offsets measured from the
  all-class threshold, so that one ``threshold`` still decides and the score without classes is the plain one.
* ``feature`` and ``projection``: which graph output the score reads, ``embedding`` (models exported before
  this field: the 512-wide layer) or ``features`` (the backbone's pooled 2,048 values, the default since), and
  the fixed linear map (D_in, D) applied to that output, L2-normalised, before the cosine: the top singular
  directions of the bank's own rows, which keeps the bank and the work per frame small (edge-export: D = 256).
* ``rate_table``: the operating point as data. For in-distribution unknown rates (``rates``) the all-class and
  per-class thresholds on the calibration scores; :meth:`OodSpec.at_rate` moves the threshold to another rate
  on the device, without re-export (``edge-classify --unknown-rate``).

Calibration scores are leave-one-out scores of the training images themselves (:func:`calibration_scores`):
each training image, clean and camera-changed, against the bank without any copy of that same image.
The figures, the options that were compared and the chosen default: docs/unknown.md.
"""

from __future__ import annotations

import base64
import functools
import io
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

OOD_KIND = "knn_cosine"
UNKNOWN_LABEL = "unknown"
EMBEDDING, FEATURES = "embedding", "features"  # the graph outputs a score (or an adapted head) can read


@dataclass(frozen=True)
class OodSpec:
    """Everything needed to score and flag an embedding; stored as ``extra["ood"]`` in model metadata."""

    bank: np.ndarray  # (N, D) L2-normalised training embeddings (float16 in storage)
    k: int = 5
    threshold: float = float("inf")
    quantile: float = 0.95
    feature: str = "embedding"
    kind: str = OOD_KIND
    class_offsets: tuple[float, ...] | None = None  # per-class threshold minus the all-class one (None: one rule)
    rate_table: dict[str, Any] | None = None  # {"rates", "all", "classes"}: calibration thresholds per unknown rate
    bank_info: dict[str, Any] | None = None  # how the bank was built (images, camera copies), for the record
    bank_labels: np.ndarray | None = None  # (N,) class index of every bank row: neighbours of the predicted class
    projection: np.ndarray | None = None  # (D_in, D): the read output, L2-normalised, is mapped by it (None: as is)

    def __post_init__(self) -> None:
        if self.kind != OOD_KIND:
            raise ValueError(f"unknown OOD score kind {self.kind!r}; this runtime knows {OOD_KIND!r}")
        if self.feature not in (EMBEDDING, FEATURES):
            raise ValueError(f"the unknown score reads {self.feature!r}; this runtime knows {EMBEDDING!r} and "
                             f"{FEATURES!r}")
        if self.projection is not None:
            projection = np.asarray(self.projection, np.float32)
            if projection.ndim != 2 or projection.shape[1] != self.bank.shape[1]:
                raise ValueError(f"the projection must be (D_in, {self.bank.shape[1]}) for a bank of width "
                                 f"{self.bank.shape[1]}; got {projection.shape}")
            object.__setattr__(self, "projection", projection)
        if self.bank.ndim != 2 or len(self.bank) < self.k or self.k < 1:
            raise ValueError(f"the OOD bank must be (N >= k, D) with k >= 1; got {self.bank.shape}, k={self.k}")
        if self.class_offsets is not None:
            object.__setattr__(self, "class_offsets", tuple(float(v) for v in self.class_offsets))
        if self.bank_labels is not None:
            labels = np.asarray(self.bank_labels, np.int64).reshape(-1)
            if len(labels) != len(self.bank):
                raise ValueError(f"{len(labels)} bank labels for {len(self.bank)} bank rows")
            object.__setattr__(self, "bank_labels", labels)
        if self.rate_table is not None:
            _check_rate_table(self.rate_table, self.class_offsets)

    @functools.cached_property
    def _float_bank(self) -> np.ndarray:
        return np.ascontiguousarray(self.bank, np.float32)

    @functools.cached_property
    def _projection_rows(self) -> np.ndarray:
        """The projection transposed, (D, D_in) contiguous: einsum's fastest layout for one frame."""
        return np.ascontiguousarray(self.projection.T)

    @functools.cached_property
    def _class_banks(self) -> dict[int, np.ndarray]:
        """Each class's bank rows, gathered once instead of on every frame (0.3 ms of a 6 ms frame)."""
        return class_banks(self._float_bank, self.bank_labels)

    @property
    def rate(self) -> float:
        """The in-distribution unknown rate this threshold was chosen for (1 - quantile)."""
        return round(1.0 - self.quantile, 6)

    @property
    def width(self) -> int:
        """The width of the graph output the score reads (``feature``)."""
        return int(self.bank.shape[1] if self.projection is None else self.projection.shape[0])

    def embed(self, outputs: np.ndarray) -> np.ndarray:
        """The read output (N, width) as the bank holds it: L2-normalised, then projected (and normalised
        again) when the spec has a projection."""
        rows = l2_normalize(np.atleast_2d(outputs))
        # einsum, not @: the multi-threaded BLAS would take the cores from the engine (knn_cosine_score)
        return rows if self.projection is None else l2_normalize(np.einsum("ij,kj->ik", rows, self._projection_rows))

    def score(self, embeddings: np.ndarray, classes: np.ndarray | None = None) -> np.ndarray:
        """OOD scores (N,) of the read output (N, :attr:`width`): 1 - cosine similarity of :meth:`embed`'s rows to
        the k-th nearest bank row;
        with the per-class rule and ``classes`` (each image's predicted class index), relative to that class's
        threshold (minus its offset), so that ``score > threshold`` is the decision either way. With
        ``bank_labels`` and ``classes``, the neighbours are the predicted class's bank rows only."""
        queries = self.embed(embeddings)
        if classes is not None and self.bank_labels is not None:
            scores = _score_within_classes(queries, self._float_bank, self.k, self._class_banks, classes)
        else:
            scores = _kth_score(queries, self._float_bank, self.k)
        if classes is not None and self.class_offsets is not None:
            offsets = np.asarray(self.class_offsets, np.float32)
            index = np.asarray(classes, dtype=np.int64).reshape(-1)
            inside = (index >= 0) & (index < len(offsets))  # a class the rule does not know: the all-class rule
            scores = scores - np.where(inside, offsets[np.clip(index, 0, len(offsets) - 1)], 0.0).astype(np.float32)
        return scores

    def with_threshold(self, validation_scores: np.ndarray, quantile: float | None = None) -> "OodSpec":
        """A copy whose threshold is the ``quantile`` of the given in-distribution (validation) scores (plain
        scores, ``score(embeddings)``); the per-class rule (offsets, class neighbours) and the rate table, which
        belong to the old calibration, are dropped."""
        quantile = self.quantile if quantile is None else quantile
        return OodSpec(self.bank, self.k, threshold_from(validation_scores, quantile), quantile, self.feature, self.kind,
                       bank_info=self.bank_info, projection=self.projection)

    def at_rate(self, rate: float) -> "OodSpec":
        """A copy whose operating point is the in-distribution unknown ``rate`` (e.g. 0.02), read from the rate
        table (linear between its rows): the all-class and per-class thresholds move together, and an
        artifact's own shift from the float model's threshold (edge-export's matched threshold) is kept."""
        if self.rate_table is None:
            raise ValueError("this model stores no rate table (exported before the operating point could be moved); "
                             "re-export it with edge-export, or rewrite its unknown-score metadata")
        rates = np.asarray(self.rate_table["rates"], np.float64)
        if not rates.min() <= rate <= rates.max():
            raise ValueError(f"unknown rate {rate} is outside the model's calibrated range "
                             f"{rates.min():g}..{rates.max():g}")
        table = self.rate_table
        shift = float(self.threshold) - at_rate_value(table, self.rate)
        threshold = at_rate_value(table, rate) + shift
        offsets = None
        if self.class_offsets is not None:
            offsets = tuple(at_rate_value(table, rate, "classes", c) - at_rate_value(table, rate)
                            for c in range(len(self.class_offsets)))
        return replace(self, threshold=threshold, quantile=1.0 - rate, class_offsets=offsets)

    def to_dict(self) -> dict[str, Any]:
        data = {
            "kind": self.kind, "feature": self.feature, "k": self.k, "threshold": float(self.threshold),
            "quantile": self.quantile, "bank_npy_base64": encode_npy(self.bank.astype(np.float16)),
            "bank_shape": list(self.bank.shape),
        }
        if self.class_offsets is not None:
            data["class_offsets"] = [float(v) for v in self.class_offsets]
        if self.rate_table is not None:
            data["rate_table"] = {key: np.asarray(value, np.float64).round(6).tolist()
                                  for key, value in self.rate_table.items()}
        if self.bank_info is not None:
            data["bank_info"] = self.bank_info
        if self.bank_labels is not None:
            data["bank_labels"] = [int(v) for v in self.bank_labels]
        if self.projection is not None:
            data["projection_npy_base64"] = encode_npy(self.projection.astype(np.float16))
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "OodSpec":
        """Parse ``extra["ood"]``; raises ValueError/KeyError when it is malformed. Fields added later
        (``class_offsets``, ``rate_table``, ``bank_info``, ``bank_labels``, ``projection``) are optional."""
        bank = decode_npy(data["bank_npy_base64"]).astype(np.float32)
        offsets = data.get("class_offsets")
        projection = data.get("projection_npy_base64")
        return cls(bank, int(data["k"]), float(data["threshold"]), float(data.get("quantile", 0.95)),
                   str(data.get("feature", "embedding")), str(data.get("kind", OOD_KIND)),
                   None if offsets is None else tuple(float(v) for v in offsets),
                   data.get("rate_table"), data.get("bank_info"),
                   None if data.get("bank_labels") is None else np.asarray(data["bank_labels"], np.int64),
                   None if projection is None else decode_npy(projection).astype(np.float32))


def encode_npy(array: np.ndarray) -> str:
    """``array`` as base64 text of its .npy bytes (how metadata stores arrays: the bank, edge-adapt's head)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_npy(text: str) -> np.ndarray:
    """The array of :func:`encode_npy`'s text, in its stored dtype."""
    return np.load(io.BytesIO(base64.b64decode(text, validate=True)), allow_pickle=False)


RATES = tuple(np.round(np.concatenate([np.arange(0.002, 0.02, 0.002), np.arange(0.02, 0.2001, 0.005)]), 4).tolist())
"""The in-distribution unknown rates a rate table holds (0.2 % to 20 %)."""


def _check_rate_table(table: dict[str, Any], offsets: tuple[float, ...] | None) -> None:
    rates = np.asarray(table.get("rates", []), np.float64)
    if rates.ndim != 1 or rates.size < 2 or np.asarray(table.get("all", []), np.float64).shape != rates.shape:
        raise ValueError("the rate table needs 'rates' and 'all' of the same length (>= 2)")
    if offsets is not None:
        classes = np.asarray(table.get("classes", []), np.float64)
        if classes.shape != (len(offsets), rates.size):
            raise ValueError(f"the rate table's 'classes' must be ({len(offsets)}, {rates.size}); got {classes.shape}")


def at_rate_value(table: dict[str, Any], rate: float, column: str = "all", index: int | None = None) -> float:
    """The rate table's threshold at ``rate`` (linear between rows) for ``column`` "all", or "classes"[index]."""
    rates = np.asarray(table["rates"], np.float64)
    values = np.asarray(table[column] if index is None else table[column][index], np.float64)
    order = np.argsort(rates)
    return float(np.interp(rate, rates[order], values[order]))


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def knn_cosine_score(embeddings: np.ndarray, bank: np.ndarray, k: int, bank_labels: np.ndarray | None = None,
                     classes: np.ndarray | None = None) -> np.ndarray:
    """1 - cosine similarity to the k-th most similar row of ``bank`` (rows assumed L2-normalised); with
    ``bank_labels`` and ``classes`` (one per embedding), among the rows of that class only (a class with fewer
    than k rows, or one the bank does not know: among all rows).

    ``einsum`` rather than ``@`` on purpose: ``@`` goes to the multi-threaded BLAS, whose worker threads keep
    spinning after the call and take the cores from the inference engine, doubling its time per frame
    (docs/runtime.md); einsum's own loop is fast enough for banks of a few thousand rows.
    """
    queries, bank = l2_normalize(np.atleast_2d(embeddings)), np.asarray(bank, np.float32)
    if bank_labels is None or classes is None:
        return _kth_score(queries, bank, k)
    return _score_within_classes(queries, bank, k, class_banks(bank, bank_labels), classes)


def class_banks(bank: np.ndarray, bank_labels: np.ndarray) -> dict[int, np.ndarray]:
    """The rows of ``bank`` of each class in ``bank_labels``, contiguous."""
    labels = np.asarray(bank_labels).reshape(-1)
    return {int(cls): np.ascontiguousarray(bank[labels == cls]) for cls in np.unique(labels)}


def _score_within_classes(queries: np.ndarray, bank: np.ndarray, k: int, banks: dict[int, np.ndarray],
                          classes: np.ndarray) -> np.ndarray:
    wanted = np.asarray(classes).reshape(-1)
    scores = np.empty(len(queries), np.float32)
    for cls in np.unique(wanted):  # only the class's own rows are compared: a sixth of the work for NEU
        at = wanted == cls
        rows = banks.get(int(cls))
        scores[at] = _kth_score(queries[at], rows if rows is not None and len(rows) >= k else bank, k)
    return scores


def _kth_score(queries: np.ndarray, bank: np.ndarray, k: int) -> np.ndarray:
    similarities = np.einsum("ij,kj->ik", queries, bank)
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
    """Bank from the training embeddings; threshold from the validation embeddings only (the rule before the
    camera-changed bank; kept for callers that have a validation split and no per-class labels)."""
    bank = l2_normalize(train_embeddings).astype(np.float16).astype(np.float32)
    spec = OodSpec(bank, k=k, quantile=quantile)
    return spec.with_threshold(spec.score(validation_embeddings))


def calibration_scores(bank: np.ndarray, groups: np.ndarray, k: int, labels: np.ndarray | None = None,
                       chunk: int = 1024) -> np.ndarray:
    """Leave-one-out scores of the bank's own rows: each row against the bank without the rows of its
    ``group`` (the same training image: itself and its camera-changed copies), among the rows of its own class
    when ``labels`` are given (as the device scores with ``bank_labels``). These are scores of images the bank
    has not seen, clean and camera-changed, from the training split alone."""
    bank = np.asarray(bank, np.float32)
    groups = np.asarray(groups)
    if len(bank) != len(groups):
        raise ValueError(f"{len(bank)} bank rows but {len(groups)} groups")
    out = np.empty(len(bank), np.float32)
    for start in range(0, len(bank), chunk):
        similarities = np.einsum("ij,kj->ik", l2_normalize(bank[start : start + chunk]), bank)
        similarities[groups[start : start + chunk, None] == groups[None, :]] = -np.inf
        if labels is not None:
            labels = np.asarray(labels)
            similarities[labels[start : start + chunk, None] != labels[None, :]] = -np.inf
        if not np.isfinite(similarities).sum(axis=1).min() >= k:
            raise ValueError(f"fewer than k={k} bank rows outside some image's own group (and class)")
        kth = np.partition(similarities, similarities.shape[1] - k, axis=1)[:, similarities.shape[1] - k]
        out[start : start + chunk] = 1.0 - kth
    return out


def build_calibrated_spec(embeddings: np.ndarray, groups: np.ndarray, labels: np.ndarray, n_classes: int,
                          k: int = 2, quantile: float = 0.98, per_class: bool = True,
                          bank_info: dict[str, Any] | None = None, class_neighbours: bool = True,
                          feature: str = EMBEDDING, width: int | None = None) -> OodSpec:
    """The unknown score from the training split alone: bank = ``embeddings`` (every training image and its
    camera-changed copies, read from the graph output ``feature``; ``groups`` names the source image of each row,
    ``labels`` its class index), threshold = the ``quantile`` of the leave-one-out :func:`calibration_scores`
    (halfway rule of :func:`threshold_from`), per class when ``per_class``; neighbours among the predicted class's
    rows when ``class_neighbours`` (see the module docstring). ``width``: rows wider than this are projected to it
    (:func:`fit_projection`; to the number of rows when there are fewer: their span keeps every cosine). No
    validation or test image is read."""
    labels = np.asarray(labels)
    rows = l2_normalize(embeddings)
    projection = None
    if width is not None and rows.shape[1] > width:
        projection = fit_projection(rows, min(width, len(rows))).astype(np.float16).astype(np.float32)  # as stored
        rows = rows @ projection
    bank = l2_normalize(rows).astype(np.float16).astype(np.float32)
    scores = calibration_scores(bank, groups, k, labels if class_neighbours else None)
    rates = list(RATES)
    table: dict[str, Any] = {"rates": rates, "all": [threshold_from(scores, 1.0 - r) for r in rates]}
    offsets = None
    if per_class:
        missing = [c for c in range(n_classes) if not np.any(labels == c)]
        if missing:
            raise ValueError(f"classes {missing} have no training image in the bank; the per-class rule needs each")
        table["classes"] = [[threshold_from(scores[labels == c], 1.0 - r) for r in rates] for c in range(n_classes)]
        overall = threshold_from(scores, quantile)
        offsets = tuple(threshold_from(scores[labels == c], quantile) - overall for c in range(n_classes))
    return OodSpec(bank, k=k, threshold=threshold_from(scores, quantile), quantile=quantile, feature=feature,
                   class_offsets=offsets, rate_table=table, bank_info=bank_info,
                   bank_labels=labels.astype(np.int64) if class_neighbours else None, projection=projection)


def fit_projection(rows: np.ndarray, width: int) -> np.ndarray:
    """(D_in, ``width``): the top right singular vectors of ``rows`` (L2-normalised bank rows, not centred: the
    cosine between rows depends on their common direction too, and centring them lost new-class detection,
    docs/unknown.md). Cosines after the map approximate those before it by the share of the rows' energy kept."""
    rows = np.asarray(rows, np.float64)
    if not 0 < width <= min(rows.shape):
        raise ValueError(f"cannot project {rows.shape[0]} rows of width {rows.shape[1]} to width {width}")
    values, vectors = np.linalg.eigh(rows.T @ rows)  # the right singular vectors, by singular value ascending
    return np.ascontiguousarray(vectors[:, np.argsort(values)[::-1][:width]], np.float32)


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """Area under the ROC curve for telling ``out`` (positive, higher score) from ``in``; ties count half."""
    a, b = np.asarray(in_scores, np.float64), np.asarray(out_scores, np.float64)
    if a.size == 0 or b.size == 0:
        return float("nan")
    values, inverse, counts = np.unique(np.concatenate([a, b]), return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based rank, averaged over ties
    out_ranks = average_rank[inverse[len(a):]]
    return float((out_ranks.sum() - len(b) * (len(b) + 1) / 2) / (len(a) * len(b)))
