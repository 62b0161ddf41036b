"""Camera consistency in training: two copies of one image, one embedding."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from conftest import TINY_ARGS, write_class_folders
from train.consistency import ConsistencyTrainer
from train.model import HEAD_LAYERS
from train.samplers import PairedCopySampler


def test_every_batch_pairs_two_different_copies_of_the_same_images_and_each_epoch_draws_anew():
    images, copies = 10, 3
    features = np.arange(images * copies, dtype=np.float32).reshape(images, copies, 1)  # value = image*3 + copy
    labels = np.arange(images) % 2
    sampler = PairedCopySampler(features, labels, batch_size=4, seed=0)

    def epoch():
        seen, pairs = [], []
        for index in range(len(sampler)):
            (first, second), y = sampler[index]
            image_a, copy_a = np.divmod(first[:, 0].astype(int), copies)
            image_b, copy_b = np.divmod(second[:, 0].astype(int), copies)
            assert (image_a == image_b).all() and (copy_a != copy_b).all()
            assert (y == labels[image_a]).all()
            seen += image_a.tolist()
            pairs += list(zip(copy_a.tolist(), copy_b.tolist()))
        assert sorted(seen) == list(range(images))
        return pairs

    first_epoch = epoch()
    sampler.on_epoch_end()
    assert epoch() != first_epoch


def test_one_copy_per_image_is_refused():
    with pytest.raises(ValueError, match="at least 2 augmented copies"):
        PairedCopySampler(np.zeros((4, 1, 2), np.float32), np.zeros(4), batch_size=2, seed=0)


def _tiny_head(seed: int):
    """pooled features -> Dense (the embedding) -> Dropout -> softmax, named as the reference head."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,))
    embedding = keras.layers.Dense(8, activation="relu", name=HEAD_LAYERS[0])(inputs)
    hidden = keras.layers.Dropout(0.2, name=HEAD_LAYERS[1], seed=seed)(embedding)
    outputs = keras.layers.Dense(2, activation="softmax", name=HEAD_LAYERS[2])(hidden)
    return keras.Model(inputs, outputs), keras.Model(inputs, [outputs, embedding])


def _copies_with_a_nuisance(images: int = 64, copies: int = 3, seed: int = 0):
    """Two classes told apart by the first two features; the other four are a per-copy 'camera' nuisance."""
    rng = np.random.default_rng(seed)
    labels = np.arange(images) % 2
    signal = np.stack([labels, 1 - labels], axis=1).astype(np.float32) * 2.0
    features = np.empty((images, copies, 6), np.float32)
    features[:, :, :2] = signal[:, None, :] + rng.normal(0, 0.1, (images, copies, 2))
    features[:, :, 2:] = rng.normal(0, 2.0, (images, copies, 4))
    return features, labels


def _mean_copy_distance(paired: keras.Model, features: np.ndarray) -> float:
    _, first = paired(features[:, 0], training=False)
    _, second = paired(features[:, 1], training=False)
    first, second = np.asarray(first), np.asarray(second)
    cosine = (first * second).sum(1) / (np.linalg.norm(first, axis=1) * np.linalg.norm(second, axis=1) + 1e-9)
    return float(np.mean(1 - cosine))


def _train(weight: float, features, labels) -> tuple[keras.Model, keras.Model]:
    stage_model, paired = _tiny_head(seed=1)
    trainer = ConsistencyTrainer(stage_model, paired, weight)
    trainer.compile(optimizer=keras.optimizers.Adam(0.01))
    trainer.fit(PairedCopySampler(features, labels, batch_size=16, seed=0), epochs=30, verbose=0)
    return stage_model, paired


def test_the_consistency_term_brings_two_cameras_views_of_one_image_together_and_keeps_the_classes():
    features, labels = _copies_with_a_nuisance()
    plain_model, plain = _train(0.0, features, labels)
    consistent_model, consistent = _train(5.0, features, labels)

    assert _mean_copy_distance(consistent, features) < 0.5 * _mean_copy_distance(plain, features)
    predicted = np.asarray(consistent_model(features[:, 2], training=False)).argmax(1)
    assert (predicted == labels).mean() >= 0.95


def test_validation_checkpoints_and_weights_are_the_stage_models_own(tmp_path: Path):
    features, labels = _copies_with_a_nuisance(images=16)
    stage_model, paired = _tiny_head(seed=2)
    trainer = ConsistencyTrainer(stage_model, paired, 1.0)
    trainer.compile(optimizer=keras.optimizers.Adam(0.01))
    history = trainer.fit(PairedCopySampler(features, labels, batch_size=8, seed=0),
                          validation_data=(features[:, 0], labels), epochs=1, verbose=0)
    assert {"loss", "consistency", "accuracy", "val_loss", "val_accuracy"} <= set(history.history)

    trainer.save_weights(tmp_path / "best.weights.h5")
    fresh, _ = _tiny_head(seed=3)
    fresh.load_weights(tmp_path / "best.weights.h5")  # a plain model reads what the trainer saved
    np.testing.assert_allclose(np.asarray(fresh(features[:, 0])), np.asarray(stage_model(features[:, 0])), atol=1e-6)


def test_edge_train_with_consistency_trains_both_stages_and_stores_the_weight(tmp_path: Path):
    from train.cli import main

    data = write_class_folders(tmp_path / "data")
    assert main(["--data", str(data), "--runs", str(tmp_path / "runs"), "--name", "consistent", *TINY_ARGS,
                 "--consistency", "0.5"]) == 0
    run = tmp_path / "runs" / "consistent"
    assert json.loads((run / "config.json").read_text())["consistency"] == 0.5
    assert (run / "model.keras").is_file()
    history = (run / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == ["1", "2"]
