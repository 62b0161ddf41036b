"""Test-time polarity: both readings of an image, the one closer to the training images kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_runtime.backends import Backend
from edge_runtime.classifier import Classifier
from edge_runtime.errors import MetadataError
from edge_runtime.ood import OodSpec, l2_normalize
from edge_runtime.polarity import choose_inverted, invert_polarity, pick
from test_runtime import LABELS, SIZE, tiny_metadata

BRIGHT, DARK = 200, 40


def brightness_embedding(mean_gray: np.ndarray) -> np.ndarray:
    """A 4-wide embedding that says how bright an image is (bright images are the 'training' ones)."""
    bright = 1.0 / (1.0 + np.exp(-(np.asarray(mean_gray, np.float64) - 128.0) / 10.0))
    return np.stack([bright, 1.0 - bright, np.full_like(bright, 0.1), np.full_like(bright, 0.1)], 1).astype(np.float32)


def brightness_probabilities(mean_gray: np.ndarray) -> np.ndarray:
    """Bright -> crazing, dark -> inclusion (like NEU's bright scratches and dark inclusions)."""
    logits = np.stack([(mean_gray - 128.0) / 10.0, (128.0 - mean_gray) / 10.0, np.zeros_like(mean_gray)], 1)
    e = np.exp(logits - logits.max(1, keepdims=True))
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


class BrightnessBackend(Backend):
    """A fake engine taking uint8 pixels; records the size of every batch it is given."""

    name = "fake"

    def __init__(self) -> None:
        super().__init__(Path("fake.tflite"), 1, (-1, SIZE, SIZE, 3), np.uint8, [len(LABELS), 4])
        self.batches: list[int] = []

    def _invoke(self, batch: np.ndarray) -> list[np.ndarray]:
        self.batches.append(len(batch))
        mean_gray = batch.reshape(len(batch), -1).mean(1).astype(np.float64)
        return [brightness_probabilities(mean_gray), brightness_embedding(mean_gray)]


def classifier(polarity: str | None = None, with_ood: bool = True) -> Classifier:
    metadata = tiny_metadata("tflite_int8", dtype="uint8", in_graph=True)
    if with_ood:
        bank = l2_normalize(brightness_embedding(np.array([190.0, 200.0, 210.0, 220.0, 230.0])))
        metadata.extra["ood"] = OodSpec(bank, k=2, threshold=0.05).to_dict()
    if polarity is not None:
        metadata.extra["polarity"] = polarity
    return Classifier(BrightnessBackend(), metadata)


def gray(level: int) -> np.ndarray:
    return np.full((24, 24), level, np.uint8)


def test_auto_keeps_the_inverted_reading_of_an_image_unlike_the_training_images():
    model = classifier()
    model.polarity = "auto"
    dark, bright = model.predict_batch([gray(DARK), gray(BRIGHT)])
    assert dark.inverted and dark.label == "crazing" and not dark.unknown  # read as 255 - 40 = 215
    assert not bright.inverted and bright.label == "crazing"
    as_is = classifier().predict(gray(DARK))
    assert as_is.label == "unknown" and as_is.predicted == "inclusion" and dark.ood_score < as_is.ood_score


def test_auto_runs_both_readings_in_one_batch_and_as_is_runs_one():
    model = classifier()
    model.predict_batch([gray(DARK), gray(BRIGHT), gray(90)])
    assert model.backend.batches == [3]
    model.backend.batches.clear()
    model.polarity = "auto"
    model.predict_batch([gray(DARK), gray(BRIGHT), gray(90)])
    assert model.backend.batches == [6]


def test_polarity_defaults_to_the_models_own_setting():
    assert classifier().polarity == "as-is"
    assert classifier("auto").polarity == "auto"
    assert classifier("auto").predict(gray(DARK)).inverted


def test_auto_needs_a_model_with_the_unknown_score_and_modes_are_checked():
    model = classifier(with_ood=False)
    with pytest.raises(MetadataError, match="unknown score"):
        model.polarity = "auto"
    with pytest.raises(ValueError, match="polarity must be one of"):
        classifier().polarity = "inverted"
    with pytest.raises(MetadataError):
        classifier("auto", with_ood=False)
    with pytest.raises(MetadataError, match="invalid 'polarity' metadata"):
        classifier("upside-down")


def test_choice_prefers_the_captured_reading_on_ties_and_never_picks_a_nan_score():
    as_is = np.array([0.1, 0.2, 0.3, np.nan, 0.4])
    inverted = np.array([0.1, 0.1, 0.4, 0.2, np.nan])
    assert choose_inverted(as_is, inverted).tolist() == [False, True, False, True, False]
    rows = pick(np.zeros((5, 2)), np.ones((5, 2)), choose_inverted(as_is, inverted))
    assert rows[:, 0].tolist() == [0, 1, 0, 1, 0]


def test_inversion_mirrors_uint8_gray_levels_only():
    assert invert_polarity(np.array([0, 40, 255], np.uint8)).tolist() == [255, 215, 0]
    with pytest.raises(TypeError):
        invert_polarity(np.array([0.5], np.float32))


def test_float_reference_of_the_export_checks_chooses_like_the_device(monkeypatch):
    """export.checks.float_outputs applies the same rule to the Keras model's outputs as the runtime does."""
    from edge_runtime.preprocessing import PreprocessConfig
    from export import checks
    from train import embeddings

    def fake_keras(model, pixels, preprocess, batch=16, progress=True, desc="", cache=None, feature="embedding"):
        mean_gray = pixels.reshape(len(pixels), -1).mean(1).astype(np.float64)
        return brightness_probabilities(mean_gray), brightness_embedding(mean_gray)

    monkeypatch.setattr(embeddings, "keras_outputs", fake_keras)
    device = classifier("auto")
    images = [gray(DARK), gray(BRIGHT), gray(120), gray(140)]
    pixels = np.stack([np.repeat(gray(v)[:SIZE, :SIZE, None], 3, 2) for v in (DARK, BRIGHT, 120, 140)])
    data = checks.EvalData([checks.EvalImage(Path(f"{i}.png"), "neu", "crazing") for i in range(4)], pixels)
    probabilities, scores = checks.float_outputs(None, data, PreprocessConfig(input_size=(SIZE, SIZE)), device.ood,
                                                 "auto")
    expected = device.predict_batch(images)
    np.testing.assert_allclose(probabilities, np.stack([p.probabilities for p in expected]), atol=1e-6)
    np.testing.assert_allclose(scores, [p.ood_score for p in expected], atol=1e-6)
    _, as_is_scores = checks.float_outputs(None, data, PreprocessConfig(input_size=(SIZE, SIZE)), device.ood)
    assert scores[0] < as_is_scores[0] and scores[1] == pytest.approx(as_is_scores[1])


def test_tiled_frames_choose_the_reading_per_window():
    """A frame half dark, half bright: the dark window is read inverted, and the frame says so."""
    from edge_runtime.tiles import TileSpec

    model = classifier("auto")
    frame = np.concatenate([gray(DARK), gray(BRIGHT)], axis=1)  # 24 x 48 -> two 24 x 24 windows
    model.tiles = TileSpec.parse("1x2")
    tiled = model.predict(frame)
    assert tiled.inverted and tiled.label == "crazing" and not tiled.unknown
    model.polarity = "as-is"
    assert not model.predict(frame).inverted
