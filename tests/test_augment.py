"""The reference augmentation: rotation ±10°, shifts 10 %, horizontal flip; seeded and shape-preserving."""

from __future__ import annotations

import numpy as np
import pytest

from train.augment import LATER_CAMERA_KINDS, AugmentSpec, augment, jpeg_roundtrip, lose_resolution, motion_blur
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


def test_camera_recipe_draws_each_later_kind_in_some_copies_only():
    image = np.random.default_rng(0).integers(60, 200, (64, 64), dtype=np.uint8)
    still = dict(rotation_deg=0, shift_fraction=0, horizontal_flip=False, camera=True, contrast_range=(1.0, 1.0),
                 gamma_range=(1.0, 1.0), blur_sigma_max=0.0, noise_std_max=0.0)
    for kind in LATER_CAMERA_KINDS:
        only = AugmentSpec.first_camera_recipe(**still, **{kind: getattr(AugmentSpec(), kind)})
        outs = [augment(image, np.random.default_rng(s), only) for s in range(60)]
        changed = sum(not np.array_equal(o, image) for o in outs)
        assert 8 <= changed <= 35, kind  # about a third of the copies
        assert all(o.shape == image.shape and o.dtype == np.uint8 for o in outs)


def test_first_camera_recipe_keeps_its_cache_key_and_the_current_one_records_the_later_kinds():
    first = AugmentSpec.first_camera_recipe(camera=True).identity()
    assert not set(LATER_CAMERA_KINDS) & set(first)
    assert set(LATER_CAMERA_KINDS) <= set(AugmentSpec(camera=True).identity())


def test_motion_blur_smears_along_its_angle_only():
    image = np.zeros((41, 41), np.float32)
    image[20, 20] = 255.0
    horizontal = motion_blur(image, 9, 0.0)
    assert np.count_nonzero(horizontal[20]) >= 7 and np.count_nonzero(horizontal[:, 20]) == 1
    assert horizontal.sum() == pytest.approx(255.0, rel=1e-4)


def test_lost_resolution_and_jpeg_keep_shape_and_lose_detail():
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    detail = lambda x: np.abs(np.diff(x.astype(float), axis=1)).mean()  # noqa: E731
    for out in (lose_resolution(image, 0.5), jpeg_roundtrip(image, 20)):
        assert out.shape == image.shape and out.dtype == np.uint8 and detail(out) < 0.8 * detail(image)


def test_runs_record_their_camera_recipe_and_older_runs_keep_the_first():
    from train.training_run import TrainOptions

    assert TrainOptions(data="d", run_dir="r").augment_spec == AugmentSpec(camera=True)
    older = TrainOptions.from_dict({"data": "d", "run_dir": "r", "camera_augment": True})
    assert older.camera_recipe == 1 and older.augment_spec == AugmentSpec.first_camera_recipe(camera=True)


def test_third_camera_recipe_adds_strong_sensor_noise_and_keeps_the_second_recipes_cache_key():
    noisy = AugmentSpec.third_camera_recipe(camera=True)
    assert noisy.noise_std_max == 10.0 and noisy.motion_along_axes
    assert noisy.identity() != AugmentSpec(camera=True).identity()
    assert "motion_along_axes" not in AugmentSpec(camera=True).identity()
    flat = np.full((64, 64), 128, np.uint8)
    still = dict(contrast_range=(1.0, 1.0), gamma_range=(1.0, 1.0), blur_sigma_max=0.0, motion_blur_max=None,
                 gain_range=None, banding_std_max=None, resolution_range=None, jpeg_quality_range=None)
    spreads = [augment(flat, np.random.default_rng(i), AugmentSpec.third_camera_recipe(camera=True, **still)).std()
               for i in range(30)]
    assert max(spreads) > 7 and min(spreads) < 3  # noise sigma drawn from 0 to 10 gray levels


def test_third_camera_recipe_smears_along_rows_or_columns_only():
    spec = AugmentSpec.third_camera_recipe(
        camera=True, contrast_range=(1.0, 1.0), gamma_range=(1.0, 1.0), blur_sigma_max=0.0, noise_std_max=0.0,
        gain_range=None, banding_std_max=None, resolution_range=None, jpeg_quality_range=None,
        rotation_deg=0.0, shift_fraction=0.0, motion_blur_max=9)
    dot = np.zeros((41, 41), np.uint8)
    dot[20, 20] = 255
    extents = [sorted(np.ptp(np.nonzero(out > 8), axis=1)) for out in (augment(dot, np.random.default_rng(i), spec)
                                                                       for i in range(120))]
    streaks = [(across, along) for across, along in extents if along >= 5]
    assert len(streaks) > 10 and all(across <= 2 for across, _ in streaks)  # horizontal or vertical only
