"""Unknown rate and accuracy under camera changes: does ``unknown`` stay a statement about the *defect*, not
about the camera?

    python -m benchmarks.nuisance                                    # shipped model, held-out NEU, every change
    python -m benchmarks.nuisance --model runs/NAME/export/model_int8.tflite --data ../shared/datasets/neu
    python -m benchmarks.nuisance --unknown-rate 0.02 --json nuisance.json
    python -m benchmarks.nuisance --curve docs/figures/unknown_operating_point.png \
        --xsdd ../shared/datasets/xsdd --gc10 ../shared/datasets/gc10        # + the operating-point figure

Every image of the model's held-out split (validation + test of its split manifest) is classified as captured
and after each camera change below, through ``edge_runtime.Classifier`` as the device runs it (one batch per
change). Per change: share whose best class is right, share answered ``unknown``. The changes are applied to
the decoded image at its own resolution, before the model's resizing, as a camera would produce them.

The table has two groups (``NUISANCES``): ``trained`` lists kinds of change that the default training recipe's
camera augmentation (train/augment.py) or the unknown score's bank (train/embeddings.py) draw at random
strengths, here at fixed strengths; ``held_out`` lists changes of kinds that nothing in the model, its recipe
or its bank was chosen on or drawn from. Figures and commands: docs/unknown.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from train.augment import jpeg_roundtrip
from train.augment import motion_blur as smear

log = logging.getLogger("nuisance")


def _float(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32)


def _uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(values + 0.5, 0, 255).astype(np.uint8)


def _per_pixel(image: np.ndarray, field: np.ndarray) -> np.ndarray:
    """A (H, W) field broadcast over the image's channels."""
    return field if image.ndim == 2 else field[:, :, None]


def exposure(factor: float) -> Callable[[np.ndarray], np.ndarray]:
    """Exposure / gain: every gray level times ``factor`` (1.3 = +30 %), clipped at 255."""
    return lambda image: _uint8(_float(image) * factor)


def gamma(value: float) -> Callable[[np.ndarray], np.ndarray]:
    """A camera response curve: 255 * (x / 255) ** value."""
    table = _uint8(255.0 * (np.arange(256, dtype=np.float32) / 255.0) ** value)
    return lambda image: table[image]


def contrast(factor: float) -> Callable[[np.ndarray], np.ndarray]:
    """Contrast about the image mean (0.6 = 40 % contrast lost, as with glare or a worse lens)."""
    return lambda image: _uint8((_float(image) - image.mean()) * factor + image.mean())


def gaussian_blur(sigma: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda image: cv2.GaussianBlur(image, (0, 0), sigma)


def defocus(radius: int) -> Callable[[np.ndarray], np.ndarray]:
    """Out of focus: a uniform disc of ``radius`` pixels (a lens' blur, unlike the Gaussian)."""
    size = 2 * radius + 1
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    kernel = ((xx**2 + yy**2) <= radius**2 + 0.5).astype(np.float32)
    kernel /= kernel.sum()
    return lambda image: _uint8(cv2.filter2D(_float(image), -1, kernel.reshape(size, size), borderType=cv2.BORDER_REFLECT))


def motion_blur(length: int, angle_deg: float = 0.0) -> Callable[[np.ndarray], np.ndarray]:
    """The strip moving during the exposure: a line of ``length`` pixels at ``angle_deg``."""
    return lambda image: _uint8(smear(_float(image), length, angle_deg))


def sensor_noise(sigma: float, seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """Independent Gaussian noise per pixel, ``sigma`` gray levels (the same on every channel: gray images)."""
    def apply(image: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return _uint8(_float(image) + _per_pixel(image, rng.normal(0, sigma, image.shape[:2]).astype(np.float32)))
    return apply


def row_noise(sigma: float, seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """Line-scan / rolling-readout banding: one random offset per row, ``sigma`` gray levels, plus a fixed
    column pattern of half that size."""
    def apply(image: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(seed)
        height, width = image.shape[:2]
        field = rng.normal(0, sigma, (height, 1)) + rng.normal(0, sigma / 2, (1, width))
        return _uint8(_float(image) + _per_pixel(image, field.astype(np.float32)))
    return apply


def jpeg(quality: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda image: jpeg_roundtrip(image, quality)


def rescale(size: int, back: bool = False) -> Callable[[np.ndarray], np.ndarray]:
    """A camera of another resolution: resized to ``size`` pixels wide (``back``: and to the original size
    again, i.e. detail lost but the frame size kept)."""
    def apply(image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        shape = (size, max(1, round(height * size / width)))
        out = cv2.resize(image, shape, interpolation=cv2.INTER_AREA if size < width else cv2.INTER_CUBIC)
        if back:
            out = cv2.resize(out, (width, height), interpolation=cv2.INTER_LINEAR)
        return out.reshape(out.shape[:2] + image.shape[2:])
    return apply


def vignetting(strength: float) -> Callable[[np.ndarray], np.ndarray]:
    """Uneven lighting: brightness falls to (1 - strength) in the corners, quadratically with radius."""
    def apply(image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        r2 = ((xx - (width - 1) / 2) / (width / 2)) ** 2 + ((yy - (height - 1) / 2) / (height / 2)) ** 2
        return _uint8(_float(image) * _per_pixel(image, 1.0 - strength * r2 / 2.0))
    return apply


def rotation(angle_deg: float) -> Callable[[np.ndarray], np.ndarray]:
    """The camera mounted slightly askew (edges replicated)."""
    def apply(image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        matrix = cv2.getRotationMatrix2D(((width - 1) / 2.0, (height - 1) / 2.0), angle_deg, 1.0)
        out = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return out.reshape(image.shape)
    return apply


def illumination_ramp(amplitude: float) -> Callable[[np.ndarray], np.ndarray]:
    """Light falling off across the strip: gain from 1 - amplitude at the left edge to 1 + amplitude at the
    right."""
    def apply(image: np.ndarray) -> np.ndarray:
        ramp = np.linspace(1.0 - amplitude, 1.0 + amplitude, image.shape[1], dtype=np.float32)[None, :]
        return _uint8(_float(image) * _per_pixel(image, np.broadcast_to(ramp, image.shape[:2])))
    return apply


def defective_pixels(share: float, seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """Hot (255) and dead (0) pixels, ``share`` of all pixels, half of each."""
    def apply(image: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(seed)
        draw = rng.random(image.shape[:2])
        out = image.copy()
        out[draw < share / 2] = 255
        out[(draw >= share / 2) & (draw < share)] = 0
        return out
    return apply


def sharpening(amount: float) -> Callable[[np.ndarray], np.ndarray]:
    """A camera's built-in sharpening: unsharp mask, radius 1 px, ``amount`` times the detail added."""
    def apply(image: np.ndarray) -> np.ndarray:
        values = _float(image)
        return _uint8(values + amount * (values - cv2.GaussianBlur(values, (0, 0), 1.0)))
    return apply


def bit_depth(bits: int) -> Callable[[np.ndarray], np.ndarray]:
    """Fewer gray levels: ``bits`` significant bits per pixel."""
    step = 2 ** (8 - bits)
    return lambda image: ((image // step) * step + step // 2).astype(np.uint8)


def barrel_distortion(k: float) -> Callable[[np.ndarray], np.ndarray]:
    """A wide-angle lens: radius r (1 at the corners) sampled from r * (1 + k r^2), edges replicated."""
    def apply(image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        cx, cy, norm = (width - 1) / 2, (height - 1) / 2, np.hypot(width / 2, height / 2)
        r2 = ((xx - cx) ** 2 + (yy - cy) ** 2) / norm**2
        factor = (1 + k * r2) / (1 + k)
        map_x, map_y = (cx + (xx - cx) * factor).astype(np.float32), (cy + (yy - cy) * factor).astype(np.float32)
        out = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REPLICATE)
        return out.reshape(image.shape)
    return apply


def line_jitter(pixels: int, seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """A line-scan camera's timing jitter: every row shifted sideways by up to ``pixels`` (edges replicated)."""
    def apply(image: np.ndarray) -> np.ndarray:
        shifts = np.random.default_rng(seed).integers(-pixels, pixels + 1, image.shape[0])
        columns = np.clip(np.arange(image.shape[1])[None, :] - shifts[:, None], 0, image.shape[1] - 1)
        return np.take_along_axis(image, columns.reshape(columns.shape + (1,) * (image.ndim - 2)), axis=1) \
            if image.ndim == 3 else np.take_along_axis(image, columns, axis=1)
    return apply


def lens_dust(spots: int, seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """Dust on the lens or the cover glass: ``spots`` soft dark blobs (radius 4-10 % of the width, 15-35 %
    darker at their centre), out of focus as dust on the optics is."""
    def apply(image: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(seed)
        height, width = image.shape[:2]
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        gain = np.ones((height, width), np.float32)
        for _ in range(spots):
            cx, cy = rng.uniform(0, width), rng.uniform(0, height)
            radius, depth = rng.uniform(0.04, 0.10) * width, rng.uniform(0.15, 0.35)
            gain *= 1.0 - depth * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * radius**2))
        return _uint8(_float(image) * _per_pixel(image, gain))
    return apply


def glare(strength: float) -> Callable[[np.ndarray], np.ndarray]:
    """A reflection of the lighting on the strip: a soft bright patch (1 + ``strength`` at its centre, spread a
    quarter of the width) off the image centre, clipped at 255."""
    def apply(image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        r2 = (xx - 0.3 * width) ** 2 + (yy - 0.35 * height) ** 2
        return _uint8(_float(image) * _per_pixel(image, 1.0 + strength * np.exp(-r2 / (2 * (0.25 * width) ** 2))))
    return apply


def shot_noise(full_well: float, seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """Photon (shot) noise: each pixel's gray level read as a Poisson count of ``full_well`` electrons at 255,
    so bright pixels are noisier than dark ones (1,000 electrons: about 5.7 gray levels at mid-gray)."""
    def apply(image: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(seed)
        gray = image[..., 0] if image.ndim == 3 else image
        noisy = _uint8(rng.poisson(gray * (full_well / 255.0)).astype(np.float32) * (255.0 / full_well))
        return np.repeat(noisy[..., None], image.shape[2], axis=2) if image.ndim == 3 else noisy
    return apply


@dataclass(frozen=True)
class Nuisance:
    name: str
    group: str  # "trained": a kind the training augmentation or the bank draws; "held_out": a kind nothing drew
    apply: Callable[[np.ndarray], np.ndarray]


NUISANCES: tuple[Nuisance, ...] = (
    Nuisance("exposure +30 %", "trained", exposure(1.3)),
    Nuisance("exposure -30 %", "trained", exposure(0.7)),
    Nuisance("Gaussian blur sigma 1 px", "trained", gaussian_blur(1.0)),
    Nuisance("sensor noise sigma 8", "trained", sensor_noise(8.0)),
    Nuisance("JPEG quality 60", "trained", jpeg(60)),
    Nuisance("JPEG quality 30", "trained", jpeg(30)),
    Nuisance("downscaled to 128 px", "trained", rescale(128)),
    Nuisance("half resolution, same size", "trained", rescale(100, back=True)),
    Nuisance("gamma 0.7", "trained", gamma(0.7)),
    Nuisance("gamma 1.5", "trained", gamma(1.5)),
    Nuisance("contrast -40 %", "trained", contrast(0.6)),
    Nuisance("motion blur 7 px", "trained", motion_blur(7)),
    Nuisance("row + column noise sigma 6", "trained", row_noise(6.0)),
    Nuisance("rotated 5 deg", "trained", rotation(5.0)),
    Nuisance("upscaled to 640 px", "held_out", rescale(640)),
    Nuisance("vignetting 40 %", "held_out", vignetting(0.4)),
    Nuisance("defocus disc r=2 px", "held_out", defocus(2)),
    Nuisance("illumination ramp +-25 %", "held_out", illumination_ramp(0.25)),
    Nuisance("hot and dead pixels 0.5 %", "held_out", defective_pixels(0.005)),
    Nuisance("camera sharpening", "held_out", sharpening(1.0)),
    Nuisance("6-bit gray levels", "held_out", bit_depth(6)),
    Nuisance("barrel distortion", "held_out", barrel_distortion(0.15)),
    Nuisance("line jitter 1 px", "held_out", line_jitter(1)),
    Nuisance("dust on the lens, 4 spots", "held_out", lens_dust(4)),
    Nuisance("glare +40 %", "held_out", glare(0.4)),
    Nuisance("shot noise, 1,000 e- full well", "held_out", shot_noise(1000.0)),
)
AS_CAPTURED = Nuisance("as captured", "none", lambda image: image)


def nuisance_names() -> list[str]:
    return [n.name for n in NUISANCES]


def predict_all(classifier, images: list[np.ndarray], batch: int = 32) -> list:
    """The classifier's answers (``Prediction``) to decoded images, ``batch`` at a time."""
    return [p for start in range(0, len(images), batch) for p in classifier.predict_batch(images[start:start + batch])]


def measure(classifier, images: list[np.ndarray], labels: list[str], nuisances=(AS_CAPTURED, *NUISANCES),
            batch: int = 32) -> list[dict]:
    """Per change: images, share right (best class), share unknown, share right and known."""
    rows = []
    expected = np.array(labels)
    for nuisance in nuisances:
        predictions = predict_all(classifier, [nuisance.apply(image) for image in images], batch)
        predicted = np.array([p.predicted for p in predictions])
        unknown = np.array([p.unknown for p in predictions])
        right = predicted == expected
        rows.append({"nuisance": nuisance.name, "group": nuisance.group, "images": len(images),
                     "right": float(right.mean()), "unknown": float(unknown.mean()),
                     "right_and_known": float((right & ~unknown).mean()),
                     "median_score": float(np.median([p.ood_score for p in predictions]))
                     if predictions and predictions[0].ood_score is not None else None})
        log.info("%-28s right %5.1f %%  unknown %5.1f %%", nuisance.name, 100 * rows[-1]["right"],
                 100 * rows[-1]["unknown"])
    return rows


def raw_outputs(classifier, images: list[np.ndarray], batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and embeddings of decoded images (as captured), so that every operating point can be
    scored without running the model again."""
    probabilities, embeddings = [], []
    for start in range(0, len(images), batch):
        outputs = classifier.device_outputs(np.stack([classifier.prepare(i) for i in images[start : start + batch]]))
        probabilities.append(outputs["probabilities"])
        embeddings.append(outputs[classifier.ood.feature])  # the output the unknown score reads
    return np.concatenate(probabilities), np.concatenate(embeddings)


def operating_points(spec, sets: dict[str, tuple[np.ndarray, np.ndarray]], rates=None) -> list[dict]:
    """For every rate of ``spec``'s rate table: the share of each set's images answered unknown at that operating
    point (``sets``: name -> (probabilities, embeddings) from :func:`raw_outputs`)."""
    rates = list(spec.rate_table["rates"]) if rates is None else list(rates)
    rows = []
    for rate in rates:
        moved = spec.at_rate(rate)
        row = {"rate": float(rate), "threshold": float(moved.threshold)}
        for name, (probabilities, embeddings) in sets.items():
            row[name] = float(np.mean(moved.score(embeddings, probabilities.argmax(axis=1)) > moved.threshold))
        rows.append(row)
    return rows


def new_class_images(xsdd: Path | None, gc10: Path | None, preprocess) -> list[np.ndarray]:
    """Images of defects without a NEU counterpart: X-SDD's five other classes, GC10's crops and frames of
    classes without counterpart (export/checks.py's protocols), at the model's input size."""
    from export.checks import gc10_eval_images, load_eval_data, xsdd_eval_images

    items = (xsdd_eval_images(xsdd) if xsdd else []) + (gc10_eval_images(gc10) if gc10 else [])
    items = [i for i in items if i.expected is None]
    return list(load_eval_data(items, preprocess, progress=False).pixels)


def curve_figure(rows: list[dict], default_rate: float, path: Path) -> Path:
    """In-distribution unknown rate (held-out NEU, as captured and under the camera changes) against the share
    of new-class images answered unknown; the default operating point marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    new = [100 * r["new classes"] for r in rows]
    ax.plot([100 * r["held-out NEU"] for r in rows], new, "o-", ms=3, label="held-out NEU, as captured")
    ax.plot([100 * r["held-out NEU, camera changes"] for r in rows], new, "s-", ms=3,
            label="held-out NEU, mean over the camera changes")
    ax.plot([100 * r["rate"] for r in rows], new, ":", color="gray", label="target rate (training split, leave-one-out)")
    at = min(rows, key=lambda r: abs(r["rate"] - default_rate))
    for key, marker in (("held-out NEU", "o"), ("held-out NEU, camera changes", "s")):
        ax.plot(100 * at[key], 100 * at["new classes"], marker, ms=10, mfc="none", mec="red")
    ax.annotate(f"default: target {100 * default_rate:g} %", (100 * at["held-out NEU, camera changes"],
                100 * at["new classes"]), textcoords="offset points", xytext=(12, -14), color="red")
    ax.set_xlabel("NEU images answered unknown, %")
    ax.set_ylabel("new-class images answered unknown, %")
    ax.set_xlim(0, max(20.0, 100 * max(r["held-out NEU, camera changes"] for r in rows[: len(rows) // 2 + 1])))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def held_out_images(data_root: Path, manifest: Path, splits=("val", "test")) -> tuple[list[np.ndarray], list[str]]:
    """The decoded images of ``splits`` of a split manifest, and their classes."""
    from edge_runtime.preprocessing import read_image
    from train.split import read_manifest, rows_of

    rows = [r for split in splits for r in rows_of(read_manifest(manifest), split)]
    return [read_image(Path(data_root) / r.path) for r in rows], [r.label for r in rows]


def markdown(rows: list[dict]) -> str:
    lines = ["| camera change | group | images | best class right | unknown |", "|---|---|---:|---:|---:|"]
    lines += [f"| {r['nuisance']} | {r['group']} | {r['images']} | {100 * r['right']:.1f} % | "
              f"{100 * r['unknown']:.1f} % |" for r in rows]
    return "\n".join(lines)


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    """The model, held-out images and new-class images options shared by the camera-change benchmarks."""
    p.add_argument("--model", default=None, help="a .tflite/.onnx from edge-export (default: the shipped model)")
    p.add_argument("--data", default="../shared/datasets/neu", help="NEU folder the manifest's paths are relative to")
    p.add_argument("--manifest", default=None,
                   help="split manifest (default: the shipped one, edge_runtime/models/split_manifest.csv)")
    p.add_argument("--engine", default=None,
                   help="litert, onnxruntime, openvino or auto (default: the model file's default engine)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None, help="also write the rows as JSON to this file")
    p.add_argument("--xsdd", default=None, help="X-SDD root: its five classes without NEU counterpart are new classes")
    p.add_argument("--gc10", default=None, help="GC10-DET root: its crops and frames without NEU counterpart")


def manifest_of(args: argparse.Namespace) -> Path:
    from edge_runtime.shipped import default_model_path

    return Path(args.manifest) if args.manifest else default_model_path().parent / "split_manifest.csv"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.nuisance", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_data_arguments(p)
    p.add_argument("--splits", nargs="+", default=["val", "test"], help="which splits of the manifest to use")
    p.add_argument("--unknown-rate", type=float, default=None,
                   help="operating point: target in-domain unknown rate (default: the model's own threshold)")
    p.add_argument("--curve", default=None, metavar="PNG",
                   help="also sweep the model's rate table and draw in-domain unknown rate against new-class "
                   "detection (needs --xsdd and/or --gc10 for the new-class images)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from edge_runtime.classifier import Classifier

    classifier = Classifier.load(args.model, engine=args.engine, threads=args.threads)
    if args.unknown_rate is not None:
        classifier.unknown_rate = args.unknown_rate
    images, labels = held_out_images(Path(args.data), manifest_of(args), args.splits)
    rows = measure(classifier, images, labels)
    print(markdown(rows))
    result = {"model": str(classifier.path), "engine": classifier.backend.name,
              "unknown_rate": classifier.unknown_rate, "rows": rows}
    if args.curve:
        if not (args.xsdd or args.gc10):
            print("--curve needs --xsdd and/or --gc10 (the new-class images)", file=sys.stderr)
            return 2
        sets = {"held-out NEU": raw_outputs(classifier, images),
                "held-out NEU, camera changes": tuple(np.concatenate(parts) for parts in zip(
                    *(raw_outputs(classifier, [n.apply(i) for i in images]) for n in NUISANCES))),
                "new classes": raw_outputs(classifier, new_class_images(
                    args.xsdd and Path(args.xsdd), args.gc10 and Path(args.gc10), classifier.metadata.preprocess))}
        result["operating_points"] = operating_points(classifier.ood, sets)
        print(f"figure: {curve_figure(result['operating_points'], classifier.ood.rate, Path(args.curve))}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
