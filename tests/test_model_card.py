"""The model card states the recipe the shipped model was trained with, read from the run's config.json."""

from __future__ import annotations

from export.model_card import augmentation_text


def test_reference_recipe_names_only_the_reference_augmentation():
    text = augmentation_text({"camera_augment": False, "contrast": "none"})
    assert text == "rotation ±10°, shifts 10 %, horizontal flip"


def test_optional_augmentations_and_contrast_are_named():
    text = augmentation_text({"camera_augment": True, "polarity_augment": True, "contrast": "standardize"})
    assert "camera look" in text and "inverted gray levels" in text and "`standardize`" in text


def test_runs_from_before_an_option_existed_read_as_without_it():
    assert "inverted" not in augmentation_text({})


def test_each_camera_recipe_names_what_it_draws():
    first, second, third = (augmentation_text({"camera_augment": True, "camera_recipe": r}) for r in (1, 2, 3))
    assert "motion blur" not in first and "camera recipe 1" in first
    assert "motion blur" in second and "up to 10 gray levels" not in second
    assert "up to 10 gray levels" in third and "along the rows or columns" in third and "camera recipe 3" in third
