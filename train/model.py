"""The reference model: ImageNet ResNet-50 (no top) → GAP → Dense 512 relu → Dropout 0.5 → Dense softmax.

Training never runs the frozen part of the backbone twice: the model is cut at the input of the first
unfrozen stage (``split`` below) into a *trunk* whose outputs are cached, a *body* (the stage(s) to fine-tune,
up to global pooling) and the *head*. The three share their layers with the full model that is saved.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import keras

log = logging.getLogger(__name__)

HEAD_LAYERS = ("head_dense", "head_dropout", "head_output")
POOL_LAYER = "avg_pool"
UNFREEZE_CHOICES = ("conv5", "conv4", "conv3", "conv2", "all")


def resolve_weights(weights: str) -> str | None:
    """'imagenet' (Keras download), 'none' (random init) or a local .h5 file path."""
    if weights == "imagenet":
        return "imagenet"
    if weights.lower() == "none":
        return None
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file '{path}' not found; pass --weights imagenet (download), none, or a local .h5 file "
            "such as ../shared/weights/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
        )
    return str(path.resolve())


def build_model(num_classes: int, input_size: tuple[int, int], weights: str | None, seed: int = 0) -> keras.Model:
    """Full classifier, one flat functional graph taking caffe-normalised BGR input."""
    keras.utils.set_random_seed(seed)
    backbone = keras.applications.ResNet50(
        include_top=False, weights=weights, input_shape=(*input_size, 3)
    )
    x = keras.layers.GlobalAveragePooling2D(name=POOL_LAYER)(backbone.output)
    x = keras.layers.Dense(512, activation="relu", name=HEAD_LAYERS[0])(x)
    x = keras.layers.Dropout(0.5, name=HEAD_LAYERS[1], seed=seed)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name=HEAD_LAYERS[2])(x)
    return keras.Model(backbone.input, outputs, name="resnet50_steel")


def build_training_state(model: keras.Model, x, y, variables: list | None = None) -> None:
    """Create the loss, metric and optimizer variables of the compiled ``model`` from one sample ``x, y``.

    Left to ``fit``, they are created inside its first traced training step, and TensorFlow then traces that
    step a second time: for ResNet-50 some 15 s more per ``fit`` on a 2-core CPU. ``variables``: those the
    optimizer updates, when not ``model.trainable_variables``.
    """
    predicted = model(x, training=False)
    model.compute_loss(x, y, predicted)
    model.compute_metrics(x, y, predicted, None)
    model.reset_metrics()
    model.optimizer.build(model.trainable_variables if variables is None else variables)


def first_unfrozen_layer(model: keras.Model, unfreeze: str) -> int:
    """Index in ``model.layers`` of the first layer that stage 2 trains."""
    if unfreeze not in UNFREEZE_CHOICES:
        raise ValueError(f"--unfreeze must be one of {UNFREEZE_CHOICES}, got {unfreeze!r}")
    if unfreeze == "all":
        return 1
    for index, layer in enumerate(model.layers):
        if layer.name.startswith(f"{unfreeze}_"):
            return index
    raise ValueError(f"model has no layer named {unfreeze}_*")


def set_trainable(model: keras.Model, stage: int, unfreeze: str) -> None:
    """Stage 1: only the head trains. Stage 2: the chosen stages and the head; BatchNorm always frozen.

    A frozen BatchNormalization layer runs in inference mode in Keras 3, so its statistics stay as learned
    on ImageNet, as in the reference recipe.
    """
    start = first_unfrozen_layer(model, unfreeze)
    pool_index = [layer.name for layer in model.layers].index(POOL_LAYER)
    for index, layer in enumerate(model.layers):
        if layer.name in HEAD_LAYERS:
            layer.trainable = True
        elif stage == 2 and start <= index < pool_index:
            layer.trainable = not isinstance(layer, keras.layers.BatchNormalization)
        else:
            layer.trainable = False


@dataclass
class Submodels:
    """Views of the full model that share its layers (and so its weights)."""

    trunk: keras.Model  # input -> split (never trained; cached)
    body: keras.Model  # split -> pooled features
    head: keras.Model  # pooled features -> probabilities
    top: keras.Model  # split -> probabilities (trained in stage 2)
    split_layer: str
    head_embedding: keras.Model | None = None  # pooled features -> (probabilities, embedding)
    top_embedding: keras.Model | None = None  # split -> (probabilities, embedding)


def submodels(model: keras.Model, unfreeze: str) -> Submodels:
    start = first_unfrozen_layer(model, unfreeze)
    split_layer = model.layers[start - 1] if unfreeze != "all" else model.layers[0]
    split = split_layer.output
    pooled = model.get_layer(POOL_LAYER).output
    embedding = model.get_layer(HEAD_LAYERS[0]).output
    return Submodels(
        trunk=keras.Model(model.input, split, name="trunk"),
        body=keras.Model(split, pooled, name="body"),
        head=keras.Model(pooled, model.output, name="head"),
        top=keras.Model(split, model.output, name="top"),
        split_layer=split_layer.name,
        head_embedding=keras.Model(pooled, [model.output, embedding], name="head_embedding"),
        top_embedding=keras.Model(split, [model.output, embedding], name="top_embedding"),
    )
