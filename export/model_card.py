"""The model card that ships beside the default model: data, recipe, figures per format, known limits."""

from __future__ import annotations

from pathlib import Path

from train.data import sha256_of


def _pct(group: dict | None) -> str:
    if not group or group.get("accuracy") is None:
        return "not measured"
    return f"{100 * group['accuracy']:.1f} % ({group['correct']}/{group['images']})"


def write_model_card(path: Path, artifact: Path, report: dict, metadata: dict, metrics: dict,
                     waiver: str | None = None, failures: list[str] | None = None) -> None:
    ref = report["float_reference"]["groups"]
    rows = []
    for a in report["artifacts"]:
        if "error" in a:
            continue
        g = a["comparison"]["groups"]
        rows.append(f"| {a['format']} | {a['size_mb']:.1f} MB | {_pct(g.get('neu'))} | {_pct(g.get('gc10_inclusion'))} "
                    f"| {_pct(g.get('xsdd'))} | {100 * a['comparison']['agreement']:.2f} % | "
                    f"{'pass' if a['passed'] else 'FAIL'} |")
    val, test = metrics["val"], metrics["test"]
    xsdd = ref.get("xsdd")
    text = f"""# Model card — default edge model (`{artifact.name}`)

**What it is.** A 6-class steel-surface defect classifier for single grayscale camera crops:
{", ".join(metadata["classes"])} (output order). ResNet-50 (ImageNet) fine-tuned on NEU-DET, exported as
`{artifact.name}` — full-int8 TFLite whose input is raw uint8 BGR pixels at {metadata["input_size"][0]}×{metadata["input_size"][1]}
(ResNet-50 "caffe" preprocessing runs inside the graph). Labels, preprocessing, source-model and split-manifest
hashes are inside the file (`edge_metadata.json` in the appended zip; `edge_runtime` reads them).

- sha256 `{sha256_of(artifact)}`, {artifact.stat().st_size / 1e6:.1f} MB
- source Keras model sha256 `{report["source_model_sha256"]}`
- split manifest sha256 `{report["split_manifest_sha256"]}` (`split_manifest.csv` beside this card: path relative to
  the NEU root, class, split, sha256 — rebuilds the exact validation and test sets)

## Data and split
NEU-DET (K. Song, Y. Yan, Northeastern University; 300 images per class, 200×200, one hot-rolled strip line).
Seeded stratified split 276 train / 12 validation / 12 test per class (seed {metadata["seed"]}); byte-identical files share
a split. Int8 calibration used {report["calibration"]["images"]} training-split images only.

## Recipe
GAP → Dense 512 relu → Dropout 0.5 → Dense 6 softmax on ResNet-50 (include_top=False, ImageNet weights),
224×224, augmentation rotation ±10°, shifts 10 %, horizontal flip. Stage 1: backbone frozen, Adam 1e-3.
Stage 2: {metadata["unfreeze"]} unfrozen (BatchNorm frozen), Adam 1e-4. EarlyStopping / ModelCheckpoint /
ReduceLROnPlateau on validation accuracy (trunk outputs cached; see the README).

## Accuracy
Keras float model: NEU validation {100 * val["accuracy"]:.1f} % ({val["correct"]}/{val["total"]}), test
{100 * test["accuracy"]:.1f} % ({test["correct"]}/{test["total"]}).

Every artifact from the same export, measured through `edge_runtime` against the float model on the same images
(NEU = validation + test; GC10 = share of GC10-DET's inclusion folder called inclusion, the reference protocol;
X-SDD = slag_inclusion → inclusion and surface_scratch → scratches):

| format | size | NEU val+test | GC10 inclusion | X-SDD mapped | agreement with float | gates |
|---|---:|---:|---:|---:|---:|---|
| Keras float | {report["float_reference"]["size_mb"]:.1f} MB | {_pct(ref.get("neu"))} | {_pct(ref.get("gc10_inclusion"))} | {_pct(xsdd)} | – | – |
{chr(10).join(rows)}

Measured on {report["machine"]} by `edge-export` ({report["created"]}).

## Known limits — read before a line trusts it
- **One plant.** Trained and tested on NEU only. Perfect NEU figures do not carry over: on X-SDD (another
  hot-rolling plant) the float model calls {_pct(xsdd)} of the mapped images by the right name, and the reference
  project's model called only 85/216 = 39.4 % of GC10-DET's inclusion images "inclusion". Validate on your own
  line's images (`edge-export check model.tflite --data YOUR_LABELLED_FOLDERS`) before relying on it.
- **Confidently wrong.** On another plant's images the softmax confidence of wrong answers is high (on X-SDD,
  measured for the float model of this card: 224 wrong answers, mean confidence 0.92, 168 of them above 0.9;
  the one GC10 inclusion-folder image here is called scratches with confidence 1.00). Confidence is not a measure
  of correctness across plants; `--min-confidence` does not make it one.
- **Closed set.** Every input is forced into one of 6 classes; defects that NEU does not have (holes, welds,
  oil/water spots, ...) get one of these 6 names.
- **Input.** Crops of steel surface similar in scale to NEU's 200×200 patches; whole line-scan frames
  (e.g. GC10's 2048×1000) are squashed to 224×224 and lose small defects.
"""
    if waiver:
        text += f"""
## Shipped with a waiver
This artifact did **not** pass every default export gate: {"; ".join(failures or [])}.
Reason it ships anyway: {waiver}
"""
    path.write_text(text)
