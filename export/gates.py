"""The accuracy gates an exported artifact is held to, each against the float model on the same images, and
each gate's margin (how far inside its limit the artifact is)."""

from __future__ import annotations

from dataclasses import dataclass

from export.checks import IN_DOMAIN


@dataclass(frozen=True)
class Gates:
    """Limits an artifact is held to, each against the float model on the same images.

    Agreement is required where answers mean something: on the model's own held-out images (NEU validation and
    test), nearly every answer must be the float model's. On another plant's images most answers are already
    wrong or ``unknown`` for the float model, and an int8 model that swaps one wrong class for another, or a
    wrong class for ``unknown``, changes nothing a line acts on; there the gates measure the harm directly:
    accuracy on mapped classes, images of new classes caught as ``unknown``, images named confidently wrong,
    the unknown score's AUROC; plus a floor on agreement that only a broken conversion falls through. A float
    artifact (fp32, fp16 weights) computes what the float model computes, so it is also held to the size of its
    probability differences, which any systematic conversion error exceeds.
    """

    max_drop_neu_pp: float = 0.5
    max_drop_cross_pp: float = 2.0
    min_agreement_pct: float = 99.0  # answers on the model's own held-out images (all images without them)
    max_drop_auroc: float = 0.02  # unknown score: AUROC (NEU test vs no-counterpart images) below float's
    max_drop_caught_pp: float = 2.0  # images of classes without a counterpart answered unknown, below float's
    max_rise_confident_wrong_pp: float = 2.0  # another plant's images named as a wrong class, above float's
    min_foreign_agreement_pct: float = 95.0  # answers on another plant's images
    max_float_p99_dprob: float = 0.05  # float artifacts: 99th percentile of |Δ probability| from the float model

    def margins(self, comparison: dict, reference_unknown: dict | None = None) -> list[dict]:
        """Every gate that applies: its figure, limit and margin (how far inside the limit; < 0 fails)."""
        rows = []

        def add(gate: str, figure: float, limit: float, margin: float, text: str) -> None:
            rows.append({"gate": gate, "figure": round(figure, 4), "limit": limit, "margin": round(margin, 4),
                         "text": text})

        for group, g in comparison["groups"].items():
            if g["drop_pp"] is None:
                continue
            limit = self.max_drop_neu_pp if group == IN_DOMAIN else self.max_drop_cross_pp
            add(f"{group}_drop_pp", g["drop_pp"], limit, limit - g["drop_pp"],
                f"{group} accuracy {100 * g['accuracy']:.2f} % is {g['drop_pp']:.2f} pp below float "
                f"({100 * g['float_accuracy']:.2f} %; limit {limit} pp)")
        own = comparison["groups"].get(IN_DOMAIN)
        if own is not None and "foreign_agreement" in comparison:
            kind = "answer" if "answer_agreement" in own else "top-1"
            agreement = own["answer_agreement" if kind == "answer" else "agreement"]
            where = " on the model's own held-out images"
        else:  # no held-out images of the model's own (e.g. a check on the user's folders): all images
            kind, agreement = "answer", comparison.get("answer_agreement")
            if agreement is None:
                kind, agreement = "top-1", comparison["agreement"]
            where = ""
        if agreement is not None:
            add("agreement_pct", 100 * agreement, self.min_agreement_pct, 100 * agreement - self.min_agreement_pct,
                f"{kind} agreement with float{where} {100 * agreement:.2f} % < {self.min_agreement_pct} %")
        foreign = comparison.get("foreign_agreement")
        if foreign is not None:
            add("foreign_agreement_pct", 100 * foreign, self.min_foreign_agreement_pct,
                100 * foreign - self.min_foreign_agreement_pct,
                f"agreement with float on another plant's images {100 * foreign:.2f} % < "
                f"{self.min_foreign_agreement_pct} %")
        if comparison.get("float_format") and comparison.get("p99_abs_dprob") is not None:
            p99 = comparison["p99_abs_dprob"]
            add("float_p99_dprob", p99, self.max_float_p99_dprob, self.max_float_p99_dprob - p99,
                f"a float artifact's probabilities differ from the float model's by {p99:.4f} or more on 1 % of "
                f"the images (limit {self.max_float_p99_dprob}): a conversion error, not rounding")
        unknown = comparison.get("unknown")
        if unknown and reference_unknown:
            ours, theirs = unknown["auroc_all_no_counterpart"], reference_unknown["auroc_all_no_counterpart"]
            if ours is not None and theirs is not None:
                add("auroc_drop", theirs - ours, self.max_drop_auroc, self.max_drop_auroc - (theirs - ours),
                    f"unknown-score AUROC {ours:.3f} is {theirs - ours:.3f} below float ({theirs:.3f}; "
                    f"limit {self.max_drop_auroc})")
            ours, theirs = _caught(unknown), _caught(reference_unknown)
            if ours is not None and theirs is not None:
                drop = 100 * (theirs - ours)
                add("caught_drop_pp", drop, self.max_drop_caught_pp, self.max_drop_caught_pp - drop,
                    f"images of new classes answered unknown {100 * ours:.2f} %, {drop:.2f} pp below float "
                    f"({100 * theirs:.2f} %; limit {self.max_drop_caught_pp} pp)")
            key = "cross_plant_confident_wrong"
            ours, theirs = unknown.get(key), reference_unknown.get(key)
            if ours is not None and theirs is not None:
                rise = 100 * (ours - theirs)
                add("confident_wrong_rise_pp", rise, self.max_rise_confident_wrong_pp,
                    self.max_rise_confident_wrong_pp - rise,
                    f"another plant's images named confidently wrong {100 * ours:.2f} %, {rise:.2f} pp above float "
                    f"({100 * theirs:.2f} %; limit {self.max_rise_confident_wrong_pp} pp)")
        return rows

    def failures(self, comparison: dict, reference_unknown: dict | None = None) -> list[str]:
        """Human-readable reasons an artifact fails; empty when it passes."""
        return failing(self.margins(comparison, reference_unknown))


def failing(margins: list[dict]) -> list[str]:
    """The texts of the gates in ``margins`` (:meth:`Gates.margins`) that fail."""
    return [m["text"] for m in margins if m["margin"] < -1e-9]


def _caught(unknown: dict) -> float | None:
    """Share of the images without a counterpart among the model's classes that were answered unknown."""
    groups = [g for g in unknown["groups"].values() if "no_counterpart_unknown" in g]
    total = sum(g["no_counterpart"] for g in groups)
    return sum(g["no_counterpart_unknown"] for g in groups) / total if total else None
