"""The model card that ships beside the default model: data, recipe, figures per format, known limits."""

from __future__ import annotations

from pathlib import Path

from edge_runtime.fileio import file_sha256 as sha256_of
from export.report import called_as_table


def _pct(group: dict | None) -> str:
    if not group or group.get("accuracy") is None:
        return "not measured"
    return f"{100 * group['accuracy']:.1f} % ({group['correct']}/{group['images']})"


def _share(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def _score_reads_text(ood: dict) -> str:
    """Which output the unknown score reads (exports before the choice existed read the embedding)."""
    if ood.get("feature", "embedding") == "features":
        return (f"The unknown score reads the pooled features, projected to {ood.get('bank_width', 256)} values along "
                "the bank's own main directions.")
    return "The unknown score reads the embedding."


def _polarity_text(polarity: str) -> str:
    """The card's paragraph on test-time polarity (edge_runtime.polarity), for the export's setting."""
    rule = ("reads every image as captured and with inverted gray levels and keeps the reading whose embedding "
            "lies closer to the training images (twice the inference time; no labels or threshold involved)")
    if polarity == "auto":
        return (f"**Test-time polarity: auto.** These artifacts are set to it: `edge-classify` {rule}, and every "
                "figure below was measured that way (`--polarity as-is` turns it off).")
    return (f"**Test-time polarity.** Off in these artifacts; `edge-classify --polarity auto` {rule}: for a line "
            "whose lighting makes defects dark where NEU's were bright (records say which reading was kept).")


def _int8_recipe_text(report: dict) -> str:
    text = ""
    if report["calibration"].get("tflite_range_quantile"):
        text += (f"; full-int8 TFLite activation ranges are the {report['calibration']['tflite_range_quantile']:g} "
                 "quantiles of the calibration activations, not their extremes (export/activation_ranges.py)")
    if report["calibration"].get("tflite_bias_correction"):
        text += ("; full-int8 TFLite biases were then corrected for the weights' rounding "
                 "(export/bias_correction.py), as NNCF does for ONNX int8")
    kept = [name for name, key in (("full-int8 TFLite", "tflite_float_first_conv"), ("ONNX int8", "onnx_float_first_conv"))
            if report["calibration"].get(key)]
    if kept:
        text += (f"; {' and '.join(kept)} keep{'s' if len(kept) == 1 else ''} the first convolution and everything "
                 "before it in float (export/convert.py)")
    return text


def _auroc(unknown: dict | None) -> str:
    value = (unknown or {}).get("auroc_all_no_counterpart")
    return "–" if value is None else f"{value:.3f}"


def _artifact_rows(report: dict) -> list[str]:
    rows = []
    for a in report["artifacts"]:
        if "error" in a:
            rows.append(f"| {a['format']} | {a['engine']} | – | – | – | – | – | – | – | FAIL: {a['error']} |")
            continue
        c, g = a["comparison"], a["comparison"]["groups"]
        unknown = c.get("unknown") or {}
        rows.append(
            f"| {a['format']} | {a['engine']} | {a['size_mb']:.1f} MB | {_pct(g.get('neu'))} | {_pct(g.get('xsdd'))} | "
            f"{_share(c.get('answer_agreement'))} | {_share(c['agreement'])} | {_auroc(unknown)} | "
            f"{_share(unknown.get('cross_plant_confident_wrong'))} | {'pass' if a['passed'] else 'FAIL'} |")
    return rows


def augmentation_text(training: dict) -> str:
    """The run's augmentation in words, from its ``config.json`` settings."""
    parts = ["rotation ±10°, shifts 10 %, horizontal flip"]
    if training.get("camera_augment"):
        recipe = training.get("camera_recipe", 1)
        noise = "sensor noise up to 10 gray levels" if recipe >= 3 else "sensor noise"
        motion = "motion blur along the rows or columns" if recipe >= 3 else "motion blur"
        later = f", exposure gain, {motion}, row banding, lost resolution, JPEG re-encoding" if recipe >= 2 else ""
        parts.append(f"camera look (contrast, gamma, blur, {noise}{later}; camera recipe {recipe})")
    if training.get("polarity_augment"):
        parts.append("inverted gray levels in half the augmented copies (`--polarity-augment`)")
    text = ", ".join(parts)
    if training.get("contrast", "none") != "none":
        text += f"; per-image contrast `{training['contrast']}` in training and on the device"
    return text


def weights_text(training: dict) -> str:
    """How the weights were trained beyond the two stages: camera consistency or a mean of runs, then perhaps
    every layer refined."""
    text = ""
    if training.get("soup_of"):
        settings = training.get("soup_settings") or [{} for _ in training["soup_of"]]
        each = " and with ".join(", ".join(f"`{k}` {v}" for k, v in s.items()) or "the same settings"
                                 for s in settings)
        text = (f" The weights are the mean of {len(training['soup_of'])} such runs from the same start, with "
                f"{each} (`edge-train soup`, docs/training.md).")
    elif training.get("consistency"):
        text = f" Camera consistency {training['consistency']} (`--consistency`)."
    refine = training.get("refine")
    if refine:
        text += (f" Then every layer refined (BatchNorm frozen) for {refine['epochs']} epochs, each on new "
                 f"camera-changed copies, Adam {refine['learning_rate']:g} with a cosine decay, the pooled features "
                 f"anchored to the starting model's with weight {refine['anchor']:g} (`edge-train refine`, "
                 "docs/training.md).")
    return text


def write_model_card(path: Path, artifacts: list[Path], report: dict, metadata: dict, metrics: dict,
                     waiver: str | None = None, failures: list[str] | None = None,
                     training: dict | None = None) -> None:
    """MODEL_CARD.md for the shipped ``artifacts`` (the first is the default model) from their export report;
    ``training`` is the run's config.json (its augmentation goes into the recipe)."""
    default = artifacts[0]
    ref = report["float_reference"]
    groups, unknown = ref["groups"], ref.get("unknown") or {}
    val, test = metrics["val"], metrics["test"]
    xsdd = groups.get("xsdd")
    files = "\n".join(f"- `{a.name}`: sha256 `{sha256_of(a)}`, {a.stat().st_size / 1e6:.1f} MB" for a in artifacts)
    neu_flagged = unknown.get("neu_test_flagged")
    text = f"""# Model card — shipped edge models (default `{default.name}`)

**What it is.** A 6-class steel-surface defect classifier for single grayscale camera crops:
{", ".join(metadata["classes"])} (output order), plus an **unknown** answer for images unlike anything it was
trained on. ResNet-50 (ImageNet) fine-tuned on NEU-DET. `{default.name}` is full-int8 TFLite whose input is raw
uint8 BGR pixels at {metadata["input_size"][0]}×{metadata["input_size"][1]} (ResNet-50 "caffe" preprocessing runs
inside the graph); `manifest.json` lists every shipped artifact with its accuracy-gate result per engine, and
`edge-classify --engine auto` (the default) runs the fastest of those that passed on the machine it lands on.
Labels, preprocessing, the unknown score's settings, source-model and split-manifest hashes are inside each
file (`edge_runtime` reads them).

{files}
- source Keras model sha256 `{report["source_model_sha256"]}`
- split manifest sha256 `{report["split_manifest_sha256"]}` (`split_manifest.csv` beside this card: path relative to
  the NEU root, class, split, sha256 — rebuilds the exact validation and test sets)

## Data and split
NEU-DET (K. Song, Y. Yan, Northeastern University; 300 images per class, 200×200, one hot-rolled strip line).
Seeded stratified split 276 train / 12 validation / 12 test per class (seed {metadata["seed"]}); byte-identical files share
a split. Int8 calibration used {report["calibration"]["images"]} training-split images only{_int8_recipe_text(report)}.

## Recipe
GAP → Dense 512 relu → Dropout 0.5 → Dense 6 softmax on ResNet-50 (include_top=False, ImageNet weights),
224×224, augmentation {augmentation_text(training or {})}. Stage 1: backbone frozen, Adam 1e-3.
Stage 2: {metadata["unfreeze"]} unfrozen (BatchNorm frozen), Adam 1e-4. EarlyStopping / ModelCheckpoint /
ReduceLROnPlateau on validation accuracy (trunk outputs cached; see the README).{weights_text(training or {})}

**Unknown answer.** Each artifact also outputs the 512-wide embedding before the classifier and, in exports
that have it, the backbone's pooled 2,048 `features`, which `edge-adapt` uses. {_score_reads_text(report.get("ood", {}))} The runtime
compares it with a bank of {report.get("ood", {}).get("bank", "the training")} rows (cosine distance to the
k-th nearest, k = {report.get("ood", {}).get("k", 5)}; see docs/unknown.md for the bank and the per-class rule) and answers
`unknown` above a threshold chosen on {report.get("ood", {}).get("threshold_from", "the NEU validation split only")}
({100 * (1 - report.get("ood", {}).get("quantile", 0.95)):.1f} % of in-domain images answered `unknown`; NEU test
images flagged by the float model: {_share(neu_flagged)}). Records keep the best class in `predicted` and the score
in `ood_score`.

{_polarity_text(report.get("polarity", "as-is"))}

## Accuracy
Keras float model: NEU validation {100 * val["accuracy"]:.1f} % ({val["correct"]}/{val["total"]}), test
{100 * test["accuracy"]:.1f} % ({test["correct"]}/{test["total"]}).

Every artifact of the same export, measured through `edge_runtime` on every engine that runs it, against the
float model on the same images (NEU = validation + test; X-SDD mapped = slag_inclusion → inclusion and
surface_scratch → scratches, closed-set top-1; answer agreement counts `unknown` as an answer; AUROC = unknown
score, NEU test against every cross-plant image without NEU counterpart; confidently wrong = cross-plant images
given a wrong class and not flagged unknown):

| format | engine | size | NEU val+test | X-SDD mapped | answer agreement | top-1 agreement | unknown AUROC | confidently wrong | gates |
|---|---|---:|---:|---:|---:|---:|---:|---:|---|
| Keras float | TensorFlow | {ref["size_mb"]:.1f} MB | {_pct(groups.get("neu"))} | {_pct(xsdd)} | – | – | {_auroc(unknown)} | {_share(unknown.get("cross_plant_confident_wrong"))} | – |
{chr(10).join(_artifact_rows(report))}

Measured on {report["machine"]} by `edge-export` ({report["created"]}).

What the float model answers per source class, unknown threshold applied:

{chr(10).join(called_as_table(unknown.get("called_as", {})))}

## Known limits — read before a line trusts it
- **One plant.** Trained and tested on NEU only. Perfect NEU figures do not carry over: on X-SDD (another
  hot-rolling plant) the float model calls {_pct(xsdd)} of the mapped images by the right name (closed set),
  and the reference project's model called only 85/216 = 39.4 % of GC10-DET's inclusion images "inclusion".
  Validate on your own line's images (`edge-export check MODEL --data YOUR_LABELLED_FOLDERS`) first.
- **Confidently wrong without the unknown answer.** On another plant's images the softmax confidence of wrong
  answers is high; confidence is not a measure of correctness across plants and `--min-confidence` does not make
  it one. The unknown answer is what catches them: with it, {_share(unknown.get("cross_plant_confident_wrong"))}
  of the cross-plant images here still get a wrong class without a flag. The price: most images of a new plant
  are answered `unknown` until the box learns that line (`edge-adapt`, a few labelled images per class;
  docs/adapt.md).
- **Closed set.** The 6 classes are all defects: there is no "no defect" class, so clean steel gets a defect
  name (or unknown).
- **Input.** Crops of steel surface similar in scale to NEU's 200×200 patches; whole line-scan frames
  (e.g. GC10's 2048×1000) are squashed to 224×224 and lose small defects (see `--tiles` in edge-classify).
"""
    if waiver:
        text += f"""
## Shipped with a waiver
`{default.name}` did **not** pass every default export gate: {"; ".join(failures or [])}.
Reason it ships anyway: {waiver}
"""
    path.write_text(text)
