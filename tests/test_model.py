"""The reference head, the trainable flags of each stage, and the cut into cached/trained parts."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from conftest import WEIGHTS
from train.model import (build_model, build_training_state, first_unfrozen_layer, resolve_weights, set_trainable,
                         submodels)


@pytest.fixture(scope="module")
def model():
    return build_model(6, (32, 32), weights=None, seed=0)


def test_head_is_gap_dense512_dropout_dense6(model):
    tail = model.layers[-4:]
    assert [type(layer).__name__ for layer in tail] == [
        "GlobalAveragePooling2D", "Dense", "Dropout", "Dense",
    ]
    assert tail[1].units == 512 and tail[1].activation.__name__ == "relu"
    assert tail[2].rate == 0.5
    assert tail[3].units == 6 and tail[3].activation.__name__ == "softmax"
    assert model.input_shape == (None, 32, 32, 3)
    assert any(layer.name == "conv5_block3_out" for layer in model.layers)  # a real ResNet-50


def test_stage1_trains_only_the_head(model):
    set_trainable(model, 1, "conv5")
    trainable = {layer.name for layer in model.layers if layer.trainable and layer.weights}
    assert trainable == {"head_dense", "head_output"}


def test_stage2_unfreezes_conv5_but_keeps_batchnorm_frozen(model):
    set_trainable(model, 2, "conv5")
    for layer in model.layers:
        if not layer.weights:
            continue
        in_conv5 = layer.name.startswith("conv5_")
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        expected = (in_conv5 and not is_bn) or layer.name.startswith("head_")
        assert layer.trainable == expected, layer.name


def test_unfreeze_conv4_reaches_further_down(model):
    set_trainable(model, 2, "conv4")
    assert model.get_layer("conv4_block1_1_conv").trainable
    assert not model.get_layer("conv3_block4_2_conv").trainable
    with pytest.raises(ValueError, match="--unfreeze"):
        first_unfrozen_layer(model, "conv9")


@pytest.mark.parametrize("unfreeze, split", [("conv5", "conv4_block6_out"), ("conv4", "conv3_block4_out")])
def test_cached_trunk_plus_trained_top_equals_the_full_model(model, unfreeze, split):
    parts = submodels(model, unfreeze)
    assert parts.split_layer == split
    x = np.random.default_rng(0).normal(0, 50, (2, 32, 32, 3)).astype(np.float32)
    full = np.asarray(model(x, training=False))
    cut = np.asarray(parts.top(parts.trunk(x, training=False), training=False))
    pooled = np.asarray(parts.head(parts.body(parts.trunk(x, training=False), training=False), training=False))
    np.testing.assert_allclose(cut, full, atol=1e-5)
    np.testing.assert_allclose(pooled, full, atol=1e-5)


def test_parts_share_weights_with_the_full_model(model):
    parts = submodels(model, "conv5")
    kernel = model.get_layer("head_output").kernel
    assert any(w is kernel for w in parts.head.weights)


def test_weights_argument():
    assert resolve_weights("imagenet") == "imagenet"
    assert resolve_weights("none") is None
    with pytest.raises(FileNotFoundError, match="--weights"):
        resolve_weights("/nowhere/weights.h5")


@pytest.mark.skipif(not WEIGHTS.is_file(), reason="ImageNet weights not in ../shared")
def test_local_imagenet_weights_load():
    m = build_model(6, (32, 32), resolve_weights(str(WEIGHTS)))
    assert float(np.abs(m.get_layer("conv1_conv").kernel).sum()) > 0


def test_training_state_is_built_before_fit_so_that_fit_creates_no_variable():
    """Variables created inside fit's first traced step make TensorFlow trace that step twice."""
    inputs = keras.Input((8,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(keras.layers.Dense(4)(inputs)))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    x, y = np.random.default_rng(0).random((6, 8), np.float32), np.array([0, 1, 2, 0, 1, 2])
    build_training_state(model, x[:1], y[:1])
    assert model.optimizer.built
    before = {id(v) for v in model.variables + model.optimizer.variables + model.metrics_variables}
    model.fit(x, y, batch_size=3, epochs=1, verbose=0)
    after = {id(v) for v in model.variables + model.optimizer.variables + model.metrics_variables}
    assert after == before
