"""Which epoch a training stage keeps: the first of best validation accuracy, or with ``--loss-tie-break`` the
one of lowest validation loss among those tied."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from train.callbacks import SELECTION_METRIC, SelectionScore  # noqa: E402


def _kept_epoch(tmp_path: Path, epochs: list[tuple[float, float]], monitor: str = SELECTION_METRIC) -> int:
    """Run the stage's selection and checkpoint callbacks over (val_accuracy, val_loss) per epoch; the weights
    saved last tell which epoch was kept (each epoch's weights hold its own number)."""
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
    best = tmp_path / "best.weights.h5"
    callbacks = keras.callbacks.CallbackList(
        [SelectionScore(), keras.callbacks.ModelCheckpoint(best, monitor=monitor, mode="max", save_best_only=True,
                                                           save_weights_only=True)],
        model=model)
    for epoch, (accuracy, loss) in enumerate(epochs):
        model.layers[0].kernel.assign(np.full((1, 1), epoch, np.float32))
        callbacks.on_epoch_end(epoch, {"val_accuracy": accuracy, "val_loss": loss})
    model.load_weights(best)
    return int(model.layers[0].kernel.numpy()[0, 0])


def test_among_epochs_that_tie_on_accuracy_the_one_with_the_lowest_loss_is_kept(tmp_path):
    epochs = [(0.97, 0.07), (1.0, 0.009), (1.0, 0.003), (1.0, 6e-5), (1.0, 4e-7), (1.0, 2e-6)]
    assert _kept_epoch(tmp_path, epochs) == 4
    assert _kept_epoch(tmp_path, epochs, monitor="val_accuracy") == 1  # the default: the first perfect epoch


def test_a_lower_loss_never_outweighs_a_better_accuracy(tmp_path):
    epochs = [(1 - 1 / 72, 1e-6), (1.0, 2.5), (1 - 2 / 72, 0.0)]  # one validation image more right, at any loss
    assert _kept_epoch(tmp_path, epochs) == 1


def test_the_first_perfect_epoch_is_kept_unless_the_run_asks_for_the_loss_tie_break(tmp_path):
    from dataclasses import asdict

    from train.training_run import TrainOptions

    saved = asdict(TrainOptions(data=str(tmp_path), run_dir=str(tmp_path / "run")))
    assert TrainOptions.from_dict(saved).fit_settings().loss_tie_break is False
    saved.pop("loss_tie_break")  # a run made before the option resumes as it was trained
    assert TrainOptions.from_dict(saved).fit_settings().loss_tie_break is False
    asked = TrainOptions(data=str(tmp_path), run_dir=str(tmp_path / "run"), loss_tie_break=True)
    assert TrainOptions.from_dict(asdict(asked)).fit_settings().loss_tie_break is True
