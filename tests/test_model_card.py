"""The model card states the recipe the shipped model was trained with, read from the run's config.json."""

from __future__ import annotations

from export.model_card import augmentation_text, weights_text


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


def test_a_refined_mean_of_runs_names_both_steps():
    text = weights_text({"soup_of": ["a", "b"], "soup_settings": [{"consistency": 0.0}, {"consistency": 0.3}],
                         "refine": {"epochs": 12, "learning_rate": 1e-4, "anchor": 10.0}})
    assert text.index("mean of 2 such runs") < text.index("every layer refined")
    assert "12 epochs" in text and "anchored" in text and "weight 10" in text
    assert "refined" not in weights_text({"consistency": 0.3})
