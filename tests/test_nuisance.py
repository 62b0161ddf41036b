"""The camera changes of benchmarks/nuisance.py: each keeps the image's shape and type, changes it the way its
name says, is reproducible, and the benchmark's rows count right and unknown answers per change."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.nuisance import (
    AS_CAPTURED,
    NUISANCES,
    exposure,
    gaussian_blur,
    markdown,
    measure,
    operating_points,
    rescale,
    sensor_noise,
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
    assert nuisance.group in ("bank", "held_out")


def test_changes_do_what_their_names_say():
    image = textured()
    assert exposure(1.3)(image).mean() > image.mean() * 1.2 and exposure(0.7)(image).mean() < image.mean() * 0.75
    sharpness = lambda x: np.abs(np.diff(x.astype(float), axis=1)).mean()  # noqa: E731
    assert sharpness(gaussian_blur(1.0)(image)) < sharpness(image)
    noisy = sensor_noise(8.0)(image).astype(float) - image
    assert 6.0 < noisy.std() < 10.0
    assert rescale(128)(image).shape == (96, 128) and rescale(32, back=True)(image).shape == image.shape
    assert {n.name for n in NUISANCES if n.group == "bank"} == {"exposure +30 %", "exposure -30 %",
                                                                 "Gaussian blur sigma 1 px", "sensor noise sigma 8"}


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
