"""The camera changes of benchmarks/nuisance.py: each keeps the image's shape and type, changes it the way its
name says, is reproducible, and the benchmark's rows count right and unknown answers per change."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.nuisance import (
    AS_CAPTURED,
    NUISANCES,
    barrel_distortion,
    bit_depth,
    defective_pixels,
    exposure,
    gaussian_blur,
    glare,
    illumination_ramp,
    lens_dust,
    line_jitter,
    markdown,
    measure,
    operating_points,
    rescale,
    sensor_noise,
    sharpening,
    shot_noise,
)


def textured(channels: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(0)
    image = np.clip(128 + 40 * np.sin(np.arange(64) / 3.0)[None, :] + rng.normal(0, 10, (48, 64)), 0, 255)
    image = image.astype(np.uint8)
    return image if channels is None else np.dstack([image] * channels)


@pytest.mark.parametrize("nuisance", NUISANCES, ids=lambda n: n.name)
@pytest.mark.parametrize("channels", [None, 3])
def test_every_change_keeps_type_and_channels_changes_pixels_and_is_reproducible(nuisance, channels):
    image = textured(channels)
    out = nuisance.apply(image)
    assert out.dtype == np.uint8 and out.ndim == image.ndim and out.shape[2:] == image.shape[2:]
    assert out.shape != image.shape or not np.array_equal(out, image)
    np.testing.assert_array_equal(out, nuisance.apply(image))
    assert nuisance.group in ("trained", "held_out")


def test_changes_do_what_their_names_say():
    image = textured()
    assert exposure(1.3)(image).mean() > image.mean() * 1.2 and exposure(0.7)(image).mean() < image.mean() * 0.75
    sharpness = lambda x: np.abs(np.diff(x.astype(float), axis=1)).mean()  # noqa: E731
    assert sharpness(gaussian_blur(1.0)(image)) < sharpness(image)
    noisy = sensor_noise(8.0)(image).astype(float) - image
    assert 6.0 < noisy.std() < 10.0
    assert rescale(128)(image).shape == (96, 128) and rescale(32, back=True)(image).shape == image.shape


def test_held_out_changes_do_what_their_names_say():
    image = textured()
    ramp = illumination_ramp(0.25)(image).astype(float) / np.maximum(image, 1)
    assert ramp[:, :4].mean() < 0.8 and ramp[:, -4:].mean() > 1.15
    broken = defective_pixels(0.05)(np.full((100, 100), 128, np.uint8))
    assert 0.02 < (broken == 255).mean() < 0.03 and 0.02 < (broken == 0).mean() < 0.03
    sharpness = lambda x: np.abs(np.diff(x.astype(float), axis=1)).mean()  # noqa: E731
    assert sharpness(sharpening(1.0)(image)) > 1.3 * sharpness(image)
    assert len(np.unique(bit_depth(6)(image))) <= 64
    jittered = line_jitter(1)(image)
    assert all(any(np.array_equal(jittered[r, 2:-2], np.roll(image[r], s)[2:-2]) for s in (-1, 0, 1))
               for r in range(image.shape[0]))
    grid = np.zeros((101, 101), np.uint8)
    grid[:, ::10] = 255  # vertical lines: the centre one stays, those near the edges bend inwards
    bent = barrel_distortion(0.15)(grid)
    assert np.array_equal(bent[:, 50], grid[:, 50]) and not np.array_equal(bent[50, :10], grid[50, :10])


def test_dust_darkens_spots_glare_brightens_a_patch_and_shot_noise_grows_with_brightness():
    flat = np.full((120, 160), 128, np.uint8)
    dusty = lens_dust(4)(flat)
    assert dusty.max() == 128 and dusty.min() < 110 and (dusty < 127).mean() < 0.5
    glared = glare(0.4)(flat)
    assert glared[42, 48] > 170 and glared[-1, -1] < 135
    dark, bright = shot_noise(1000.0)(np.full((100, 100), 40, np.uint8)), shot_noise(1000.0)(np.full((100, 100), 200, np.uint8))
    assert 1.5 < dark.std() < bright.std() < 9 and abs(float(bright.mean()) - 200) < 1


def test_both_groups_are_measured():
    groups = {n.group for n in NUISANCES}
    assert groups == {"trained", "held_out"} and len(NUISANCES) == len({n.name for n in NUISANCES})


def test_rows_count_right_and_unknown_answers_through_the_classifier():
    from test_polarity import classifier, gray

    model = classifier()  # bright images: crazing and known; dark ones: inclusion and unknown
    images = [gray(200), gray(210), gray(60)]
    rows = measure(model, images, ["crazing", "crazing", "crazing"], nuisances=(AS_CAPTURED, NUISANCES[1]))
    captured, darker = rows
    assert captured["right"] == pytest.approx(2 / 3) and captured["unknown"] == pytest.approx(1 / 3)
    assert captured["right_and_known"] == pytest.approx(2 / 3) and darker["nuisance"] == "exposure -30 %"
    assert darker["unknown"] >= captured["unknown"]
    assert "| as captured | none | 3 |" in markdown(rows)


def test_operating_points_follow_the_rate_table():
    from edge_runtime.ood import build_calibrated_spec

    rng = np.random.default_rng(3)
    embeddings = np.concatenate([np.eye(1, 8)[0] * 5 + rng.normal(0, 1, (80, 8)),
                                 np.eye(1, 8, 1)[0] * 5 + rng.normal(0, 1, (80, 8))])
    labels = np.repeat([0, 1], 80)
    spec = build_calibrated_spec(embeddings, np.arange(160), labels, 2, k=2, quantile=0.98)
    fresh_labels = np.repeat([0, 1], 400)  # new images from the same two classes, not in the bank
    fresh = np.eye(2, 8)[fresh_labels] * 5 + rng.normal(0, 1, (800, 8))
    probabilities = np.eye(2)[fresh_labels]
    far = -fresh[:20]
    rows = operating_points(spec, {"in": (probabilities, fresh), "new": (probabilities[:20], far)},
                            rates=[0.02, 0.1, 0.2])
    assert [r["rate"] for r in rows] == [0.02, 0.1, 0.2]
    assert rows[0]["in"] < rows[1]["in"] < rows[2]["in"]
    assert [r["in"] for r in rows] == pytest.approx([0.02, 0.1, 0.2], abs=0.06)
    assert all(r["new"] == 1.0 for r in rows)


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_the_benchmark_runs_the_model_on_the_engine_asked_for_and_records_it(tiny_edge_models, tmp_path, engine):
    import json

    import cv2

    from benchmarks.nuisance import main
    from edge_runtime.fileio import file_sha256
    from train.split import ManifestRow, write_manifest

    if engine == "openvino":
        pytest.importorskip("openvino")
    rows = []
    for i, label in enumerate(tiny_edge_models.labels):
        path = tmp_path / f"{label}_{i}.png"
        cv2.imwrite(str(path), textured())
        rows.append(ManifestRow(path.name, label, "val", file_sha256(path)))
    write_manifest(tmp_path / "split_manifest.csv", rows)
    out = tmp_path / "rows.json"
    assert main(["--model", str(tiny_edge_models.onnx), "--engine", engine, "--data", str(tmp_path),
                 "--manifest", str(tmp_path / "split_manifest.csv"), "--splits", "val", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["engine"] == engine
    assert [r["nuisance"] for r in result["rows"]] == [n.name for n in (AS_CAPTURED, *NUISANCES)]
    assert all(r["images"] == len(rows) for r in result["rows"])
