"""The reference augmentation: rotation ±10°, shifts 10 %, horizontal flip; seeded and shape-preserving."""

from __future__ import annotations

import numpy as np

from train.augment import AugmentSpec, augment
from train.features import augmentation_rng


def test_keeps_shape_and_dtype():
    image = np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8)
    out = augment(image, np.random.default_rng(1))
    assert out.shape == image.shape and out.dtype == np.uint8


def test_seeded_copies_are_reproducible_and_differ_between_copies():
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    a = augment(image, augmentation_rng(0, "ab" * 32, 1))
    b = augment(image, augmentation_rng(0, "ab" * 32, 1))
    c = augment(image, augmentation_rng(0, "ab" * 32, 2))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_zero_spec_is_identity():
    image = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    spec = AugmentSpec(rotation_deg=0, shift_fraction=0, horizontal_flip=False)
    assert np.array_equal(augment(image, np.random.default_rng(0), spec), image)


def test_flip_only_mirrors_horizontally():
    image = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)
    spec = AugmentSpec(rotation_deg=0, shift_fraction=0, horizontal_flip=True)
    outs = [augment(image, np.random.default_rng(s), spec) for s in range(20)]
    assert any(np.array_equal(o, image[:, ::-1]) for o in outs)
    assert all(np.array_equal(o, image) or np.array_equal(o, image[:, ::-1]) for o in outs)


def test_shift_moves_content_by_at_most_ten_percent():
    image = np.zeros((100, 100), np.uint8)
    image[45:55, 45:55] = 255
    spec = AugmentSpec(rotation_deg=0, shift_fraction=0.1, horizontal_flip=False)
    for seed in range(20):
        ys, xs = np.nonzero(augment(image, np.random.default_rng(seed), spec) > 127)
        assert abs(ys.mean() - 49.5) <= 10.5 and abs(xs.mean() - 49.5) <= 10.5


def test_polarity_inverts_about_half_the_copies_and_nothing_else():
    image = np.arange(16 * 16, dtype=np.uint8).reshape(16, 16)
    spec = AugmentSpec(rotation_deg=0, shift_fraction=0, horizontal_flip=False, polarity=True)
    outs = [augment(image, np.random.default_rng(s), spec) for s in range(40)]
    inverted = sum(np.array_equal(o, 255 - image) for o in outs)
    assert all(np.array_equal(o, image) or np.array_equal(o, 255 - image) for o in outs)
    assert 10 <= inverted <= 30


def test_polarity_off_leaves_earlier_augmentations_and_cache_keys_unchanged():
    image = np.random.default_rng(0).integers(0, 255, (32, 32), dtype=np.uint8)
    before = augment(image, np.random.default_rng(3), AugmentSpec())
    assert np.array_equal(before, augment(image, np.random.default_rng(3), AugmentSpec(polarity=False)))
    assert "polarity" not in AugmentSpec().identity()
    assert AugmentSpec(polarity=True).identity()["polarity"] is True
