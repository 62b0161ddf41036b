"""The Keras output cache: the float model runs once per (model file, exact pixels); anything else is a miss."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.preprocessing import PreprocessConfig
from train import embeddings
from train.output_cache import KerasOutputCache

PREPROCESS = PreprocessConfig(input_size=(8, 8))


@pytest.fixture
def model_calls(monkeypatch) -> list[int]:
    """Stands in for the Keras model: records the batch sizes it was run on."""
    calls: list[int] = []

    def both(x):
        calls.append(len(x))
        flat = np.asarray(x, np.float32).reshape(len(x), -1)
        return np.repeat(flat.mean(1, keepdims=True), 6, 1), flat[:, :4]

    monkeypatch.setattr(embeddings, "graph_outputs", lambda model, shape, feature="embedding": both)
    return calls


def pixels(seed: int = 0, n: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)


def outputs(cache: KerasOutputCache | None, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return embeddings.keras_outputs(None, x, PREPROCESS, batch=2, progress=False, cache=cache)


def test_the_same_pixels_are_read_back_without_running_the_model(tmp_path: Path, model_calls: list[int]):
    cache = KerasOutputCache(tmp_path, "model-sha")
    first = outputs(cache, pixels())
    runs = len(model_calls)
    second = outputs(cache, pixels())
    assert runs == 3 and len(model_calls) == runs  # 5 images in batches of 2, then nothing
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])


def test_one_changed_pixel_another_model_or_other_preprocessing_is_a_miss(tmp_path: Path, model_calls: list[int]):
    cache = KerasOutputCache(tmp_path, "model-sha")
    x = pixels()
    outputs(cache, x)
    changed = x.copy()
    changed[4, 7, 7, 2] ^= 1
    base = cache.key(x, PREPROCESS)
    assert cache.key(changed, PREPROCESS) != base
    assert KerasOutputCache(tmp_path, "other-model").key(x, PREPROCESS) != base
    assert cache.key(x, PreprocessConfig(input_size=(8, 8), contrast="standardize")) != base
    runs = len(model_calls)
    outputs(cache, changed)
    assert len(model_calls) > runs


def test_without_a_cache_the_model_runs_every_time(model_calls: list[int]):
    outputs(None, pixels())
    outputs(None, pixels())
    assert len(model_calls) == 6


def test_an_unreadable_cache_file_is_recomputed_and_rewritten(tmp_path: Path, model_calls: list[int], caplog):
    cache = KerasOutputCache(tmp_path, "model-sha")
    expected = outputs(cache, pixels())
    (entry,) = tmp_path.glob("keras-outputs-*.npz")
    entry.write_bytes(b"not an npz file")
    with caplog.at_level(logging.WARNING):
        again = outputs(cache, pixels())
    assert "unreadable cache file" in caplog.text and str(entry) in caplog.text
    np.testing.assert_array_equal(expected[1], again[1])
    runs = len(model_calls)
    outputs(cache, pixels())
    assert len(model_calls) == runs  # rewritten: read back now


def test_only_the_most_recently_used_entries_are_kept(tmp_path: Path, model_calls: list[int]):
    cache = KerasOutputCache(tmp_path, "model-sha", max_entries=2)
    for seed in range(3):
        outputs(cache, pixels(seed))
    assert len(list(tmp_path.glob("keras-outputs-*.npz"))) == 2
    runs = len(model_calls)
    outputs(cache, pixels(2))
    assert len(model_calls) == runs  # the newest survived
    outputs(cache, pixels(0))
    assert len(model_calls) > runs  # the oldest was pruned


def test_a_cache_that_cannot_be_written_only_costs_time(tmp_path: Path, model_calls: list[int], caplog):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    with caplog.at_level(logging.WARNING):
        probabilities, _ = outputs(KerasOutputCache(blocked / "cache", "model-sha"), pixels())
    assert probabilities.shape == (5, 6)
    assert "could not write the Keras output cache" in caplog.text


def _small_model(seed: int):
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.Dense(5, activation="relu")(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))


def test_the_traced_graph_gives_the_eager_models_outputs_and_belongs_to_its_model():
    from edge_runtime.preprocessing import normalize

    x = normalize(pixels(n=7), PREPROCESS)
    first, second = _small_model(0), _small_model(1)
    for model in (first, second, first):  # the second model gets its own graph, the first keeps its own
        eager = embeddings.with_embedding(model)(x, training=False)
        traced = embeddings.graph_outputs(model, x.shape[1:])
        assert embeddings.graph_outputs(model, x.shape[1:]) is traced  # built once per model
        for ours, theirs in zip(traced(x), eager):
            np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(traced(x[:3])[1]), np.asarray(eager[1])[:3], rtol=1e-5, atol=1e-6)
    p1 = embeddings.keras_outputs(first, pixels(n=7), PREPROCESS, batch=3, progress=False)[0]
    p2 = embeddings.keras_outputs(second, pixels(n=7), PREPROCESS, batch=3, progress=False)[0]
    assert not np.allclose(p1, p2)
