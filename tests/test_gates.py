"""The export gates: agreement where answers mean something, the harm measured directly elsewhere, and each
gate's distance to its limit in the report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from export.checks import UNKNOWN_ANSWER, EvalImage, answers, compare, unknown_summary
from export.gates import Gates, failing

CLASSES = ["a", "b", "c"]
THRESHOLD = 0.5


def _images() -> list[EvalImage]:
    """100 held-out images of the model's own classes, 100 of another plant's mapped classes, 100 of new ones."""
    own = [EvalImage(Path(f"n{k}.jpg"), "neu", CLASSES[k % 3], split="val" if k % 2 else "test") for k in range(100)]
    mapped = [EvalImage(Path(f"x{k}.jpg"), "xsdd", CLASSES[k % 3]) for k in range(100)]
    new = [EvalImage(Path(f"o{k}.jpg"), "xsdd_other", None) for k in range(100)]
    return own + mapped + new


def _float_model(items: list[EvalImage]) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and unknown scores: own images right and known; mapped images half right, a third of them
    wrong and known; new images 80 % unknown, the rest named as class c."""
    probabilities, scores = np.zeros((len(items), 3), np.float32), np.zeros(len(items), np.float32)
    for k, item in enumerate(items):
        if item.group == "neu":
            probabilities[k, CLASSES.index(item.expected)], scores[k] = 0.9, 0.1
        elif item.group == "xsdd":
            right = k % 2 == 0
            probabilities[k, CLASSES.index(item.expected) if right else (CLASSES.index(item.expected) + 1) % 3] = 0.8
            scores[k] = 0.2 if right or k % 3 else 0.9
        else:
            probabilities[k, 2], scores[k] = 0.7, 0.9 if k % 5 else 0.3
    return probabilities, scores


def _judge(items, reference, candidate, gates: Gates = Gates()):
    (ref_p, ref_s), (cand_p, cand_s) = reference, candidate
    comparison = compare(items, CLASSES, ref_p, cand_p, answers(ref_p, ref_s, THRESHOLD),
                         answers(cand_p, cand_s, THRESHOLD))
    comparison["unknown"] = unknown_summary(items, CLASSES, cand_p, cand_s, THRESHOLD)
    return gates.margins(comparison, unknown_summary(items, CLASSES, ref_p, ref_s, THRESHOLD))


def _foreign_wrong_known(items) -> list[int]:
    return [k for k, i in enumerate(items) if i.group == "xsdd" and k % 2 and k % 3]


def test_an_identical_artifact_passes_every_gate_with_its_full_margin():
    items = _images()
    margins = _judge(items, _float_model(items), _float_model(items))
    assert not failing(margins)
    gates = {m["gate"]: m for m in margins}
    assert {"neu_drop_pp", "xsdd_drop_pp", "agreement_pct", "foreign_agreement_pct", "auroc_drop", "caught_drop_pp",
            "confident_wrong_rise_pp"} <= set(gates)
    assert gates["agreement_pct"]["figure"] == 100 and gates["agreement_pct"]["margin"] == pytest.approx(1.0)
    assert gates["caught_drop_pp"]["margin"] == pytest.approx(Gates().max_drop_caught_pp)


def test_swapping_one_wrong_class_for_another_on_another_plant_is_no_failure():
    items = _images()
    candidate = _float_model(items)
    swapped = _foreign_wrong_known(items)[:4]  # 4 of 300 foreign images: a different wrong class, still known
    for k in swapped:
        candidate[0][k] = np.roll(candidate[0][k], 1)
        assert CLASSES[candidate[0][k].argmax()] != items[k].expected
    margins = _judge(items, _float_model(items), candidate)
    gates = {m["gate"]: m for m in margins}
    assert gates["foreign_agreement_pct"]["figure"] == pytest.approx(100 * (1 - 4 / 200))
    assert not failing(margins)


def test_two_changed_answers_on_the_models_own_images_fail_the_agreement_gate():
    items = _images()
    candidate = _float_model(items)
    candidate[1][[0, 1]] = 0.9  # two own images now answered unknown
    reasons = failing(_judge(items, _float_model(items), candidate))
    assert any("agreement with float on the model's own held-out images 98.00 %" in r for r in reasons)


def test_fewer_new_class_images_caught_fails_even_when_agreement_elsewhere_holds():
    items = _images()
    candidate = _float_model(items)
    new = [k for k, i in enumerate(items) if i.group == "xsdd_other" and candidate[1][k] > THRESHOLD]
    candidate[1][new[:3]] = 0.3  # 3 of 100 new-class images no longer caught: 3 pp
    reasons = failing(_judge(items, _float_model(items), candidate))
    assert len(reasons) == 1 and reasons[0].startswith("images of new classes answered unknown 77.00 %, 3.00 pp below")


def test_more_confidently_wrong_answers_on_another_plant_fail():
    items = _images()
    candidate = _float_model(items)
    flagged_wrong = [k for k, i in enumerate(items) if i.group == "xsdd" and k % 2 and not k % 3]
    candidate[1][flagged_wrong[:7]] = 0.2  # 7 wrong mapped images no longer flagged: +3.5 pp of 200
    reasons = failing(_judge(items, _float_model(items), candidate, Gates(max_drop_cross_pp=100)))
    assert any(r.startswith("another plant's images named confidently wrong") and "3.50 pp above float" in r
               for r in reasons)


def test_a_conversion_that_scrambles_another_plants_answers_fails_the_agreement_floor():
    items = _images()
    candidate = _float_model(items)
    foreign = [k for k, i in enumerate(items) if i.group == "xsdd" and candidate[1][k] <= THRESHOLD][:12]
    for k in foreign:
        candidate[0][k] = np.roll(candidate[0][k], 1)
    loose = Gates(max_drop_cross_pp=100, max_rise_confident_wrong_pp=100)
    reasons = failing(_judge(items, _float_model(items), candidate, loose))
    assert reasons == ["agreement with float on another plant's images 94.00 % < 95.0 %"]


def test_without_the_models_own_images_agreement_is_judged_over_all_images():
    items = [i for i in _images() if i.group == "xsdd"]
    reference = _float_model(items)
    candidate = (reference[0].copy(), reference[1].copy())
    candidate[0][[1, 3]] = np.roll(candidate[0][[1, 3]], 1, axis=1)
    comparison = compare(items, CLASSES, reference[0], candidate[0])
    assert "foreign_agreement" not in comparison
    assert failing(Gates(max_drop_cross_pp=100).margins(comparison)) == ["top-1 agreement with float 98.00 % < 99.0 %"]
    assert UNKNOWN_ANSWER not in answers(candidate[0])


def _judge_float_artifact(items, reference, candidate):
    (ref_p, ref_s), (cand_p, cand_s) = reference, candidate
    comparison = compare(items, CLASSES, ref_p, cand_p, answers(ref_p, ref_s, THRESHOLD),
                         answers(cand_p, cand_s, THRESHOLD))
    comparison["unknown"] = unknown_summary(items, CLASSES, cand_p, cand_s, THRESHOLD)
    comparison["float_format"] = True
    return Gates().margins(comparison, unknown_summary(items, CLASSES, ref_p, ref_s, THRESHOLD))


def test_a_float_artifact_within_rounding_of_the_float_model_passes_its_probability_bound():
    items = _images()
    probabilities, scores = _float_model(items)
    rounded = (probabilities + np.random.default_rng(0).normal(0, 1e-3, probabilities.shape)).astype(np.float32)
    margins = {m["gate"]: m for m in _judge_float_artifact(items, (probabilities, scores), (rounded, scores))}
    assert margins["float_p99_dprob"]["margin"] > 0 and not failing(list(margins.values()))


def test_a_float_conversion_that_shifts_every_answers_confidence_fails_even_when_every_answer_agrees():
    """A systematic conversion error (here every probability 0.1 off, the top class unchanged) passes every
    accuracy and agreement gate, but not the float artifact's bound."""
    items = _images()
    probabilities, scores = _float_model(items)
    shifted = probabilities.copy()
    shifted[np.arange(len(items)), probabilities.argmax(1)] -= 0.1
    margins = _judge_float_artifact(items, (probabilities, scores), (shifted, scores))
    assert [m["gate"] for m in margins if m["margin"] < 0] == ["float_p99_dprob"]
    quantised = _judge(items, (probabilities, scores), (shifted, scores))  # not a float artifact: not applied
    assert "float_p99_dprob" not in {m["gate"] for m in quantised} and not failing(quantised)


def test_float_artifacts_are_checked_on_every_held_out_image_and_a_fixed_share_of_each_larger_set():
    from export.checks import conversion_sample

    items = _images() + [EvalImage(Path(f"g{k}.jpg"), "gc10_crops", None) for k in range(10)]
    chosen = conversion_sample(items, share=0.25, minimum=20)
    groups = [items[k].group for k in chosen]
    assert groups.count("neu") == 100 and groups.count("gc10_crops") == 10  # the model's own, and a small set
    assert groups.count("xsdd") == 25 and groups.count("xsdd_other") == 25
    assert chosen == sorted(chosen)
    reordered = items[::-1]  # the same images in another order: the same ones chosen
    assert sorted(reordered[k].name for k in conversion_sample(reordered, 0.25, 20)) == sorted(items[k].name
                                                                                               for k in chosen)
    assert len(conversion_sample(items, share=1.0)) == len(items)
    assert [items[k].group for k in conversion_sample(items, 0.01, minimum=30)].count("xsdd") == 30
