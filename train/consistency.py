"""Camera consistency: two augmented copies of one image should give the same embedding.

The unknown score compares the 512-wide embedding (the head's first dense layer, before dropout) with the
training images' embeddings. The classification loss alone lets a camera change move the embedding as long
as the class stays right. With ``edge-train --consistency W``, every training step sees two different
augmented copies of each image (each drawn with the camera recipe) and adds ``W`` × their mean cosine distance
to the cross-entropy of both, so that the network maps two cameras' views of one defect to the same place.
Measured in docs/unknown.md ("Camera consistency in training"): the classes hold under motion blur, but new
defects move less too and fewer are answered unknown, so it is off by default. The shipped model is the mean
of a run with it and one without (``edge-train soup``, train/soup.py)."""

from __future__ import annotations

import keras
import tensorflow as tf


def cosine_distance(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """1 − cosine similarity of matching rows."""
    a = tf.math.l2_normalize(a, axis=-1)
    b = tf.math.l2_normalize(b, axis=-1)
    return 1.0 - tf.reduce_sum(a * b, axis=-1)


class ConsistencyTrainer(keras.Model):
    """Trains ``stage_model`` on pairs of copies: cross-entropy of both + ``weight`` × embedding distance.

    Validation, weights, saving and loading all go to ``stage_model`` itself, so checkpoints and the
    callbacks of a stage work as without the pairs."""

    def __init__(self, stage_model: keras.Model, paired: keras.Model, weight: float) -> None:
        """``paired``: the same layers as ``stage_model`` with the embedding as a second output."""
        super().__init__(name=f"{stage_model.name}_consistency")
        self.stage_model = stage_model
        self.paired = paired
        self.weight = float(weight)
        self.cross_entropy = keras.losses.SparseCategoricalCrossentropy()
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.consistency_tracker = keras.metrics.Mean(name="consistency")
        self.accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.built = True  # its layers are those of the built stage model

    @property
    def metrics(self):
        return [self.loss_tracker, self.consistency_tracker, self.accuracy]

    def call(self, inputs, training=False):
        return self.stage_model(inputs, training=training)

    def train_step(self, data):
        (first, second), labels = data
        with tf.GradientTape() as tape:
            probs_a, emb_a = self.paired(first, training=True)
            probs_b, emb_b = self.paired(second, training=True)
            consistency = tf.reduce_mean(cosine_distance(emb_a, emb_b))
            loss = 0.5 * (self.cross_entropy(labels, probs_a) + self.cross_entropy(labels, probs_b))
            loss = loss + self.weight * consistency
        variables = self.stage_model.trainable_variables
        self.optimizer.apply(tape.gradient(loss, variables), variables)
        self.loss_tracker.update_state(loss)
        self.consistency_tracker.update_state(consistency)
        self.accuracy.update_state(labels, probs_a)
        self.accuracy.update_state(labels, probs_b)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        inputs, labels = data
        probs = self.stage_model(inputs, training=False)
        self.loss_tracker.update_state(self.cross_entropy(labels, probs))
        self.accuracy.update_state(labels, probs)
        return {"loss": self.loss_tracker.result(), "accuracy": self.accuracy.result()}

    def save_weights(self, filepath, overwrite=True, **kwargs):
        self.stage_model.save_weights(filepath, overwrite=overwrite, **kwargs)

    def load_weights(self, filepath, **kwargs):
        self.stage_model.load_weights(filepath, **kwargs)

    def get_weights(self):
        return self.stage_model.get_weights()

    def set_weights(self, weights):
        self.stage_model.set_weights(weights)
